"""Pick the store backend by URL; backends are imported only when their scheme is asked for.

    sqlite:///relative/path.db   sqlite:////absolute/path.db   sqlite:// (in memory)
    cassandra://host1,host2/keyspace

Nothing registers at import time, so `cadenza dev` never imports the Cassandra driver.
"""

from __future__ import annotations

import importlib
from typing import cast

from engine.persistence.protocols import Store


def sqlite_path(url: str) -> str:
    """The file path of a `sqlite://` URL, SQLAlchemy style (three slashes, then the path)."""
    if url in ("sqlite://", "sqlite:///:memory:"):
        return ":memory:"
    if not url.startswith("sqlite:///") or url == "sqlite:///":
        raise ValueError(f"invalid sqlite url {url!r}: expected sqlite:///path/to/file.db")
    return url[len("sqlite:///") :]


def open_store(url: str) -> Store:
    """A store for `url`, not yet started: call `await store.start()` before use.

    Raises:
        ValueError: the URL names no known backend, or its backend is not installed.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        from engine.persistence.sqlite.store import SqliteStore

        return SqliteStore(sqlite_path(url))
    if scheme == "cassandra":
        # By name, so neither mypy nor the import system needs the distributed extra here.
        try:
            module = importlib.import_module("engine.persistence.cassandra.store")
        except ImportError as exc:
            raise ValueError(
                f"persistence url {url!r}: the cassandra backend is not available ({exc})"
            ) from exc
        return cast(Store, module.CassandraStore(url))
    raise ValueError(
        f"unsupported persistence url {url!r}: expected sqlite:///path or cassandra://hosts/keyspace"
    )
