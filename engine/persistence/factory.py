"""Pick the store backend by URL; backends are imported only when their scheme is asked for
(the shape all three backend factories share: `engine.backends`).

    sqlite:///relative/path.db   sqlite:////absolute/path.db   sqlite:// (in memory)
    cassandra://host1,host2/keyspace   (the distributed extra)
"""

from __future__ import annotations

from typing import cast

from engine.backends import BackendUrlError, import_backend, unsupported, url_scheme
from engine.persistence.protocols import Store

ROLE = "persistence"


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite://` URL, SQLAlchemy style (three slashes, then the path)."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise BackendUrlError(f"invalid sqlite url {url!r}: expected sqlite:///path/to/file.db")
    return url[len("sqlite:///") :]


def open_store(url: str) -> Store:
    """A store for `url`, not yet started: call `await store.start()` before use.

    Raises:
        BackendUrlError: the URL names no known backend, or its backend is not installed.
    """
    scheme = url_scheme(url)
    if scheme == "sqlite":
        from engine.persistence.sqlite.store import SqliteStore

        return SqliteStore(sqlite_path(url))
    if scheme == "cassandra":
        module = import_backend(ROLE, url, "engine.persistence.cassandra.store")
        return cast(Store, module.CassandraStore(url))
    raise unsupported(ROLE, url, "sqlite:///path or cassandra://hosts/keyspace")
