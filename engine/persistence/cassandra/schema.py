"""Create and version the Cassandra schema: `apply_schema(url)` backs `cadenza schema apply`.

Applying is idempotent: the keyspace is created if missing (SimpleStrategy, replication factor
1 unless the URL says `?replication_factor=N`; use NetworkTopologyStrategy by creating the
keyspace yourself), then every statement of `schema.cql` runs (each is IF NOT EXISTS), then
`schema_version` records `SCHEMA_VERSION`. `CassandraStore.start()` never changes the schema
(concurrent DDL from several servers can disagree); it checks the recorded version instead.

`truncate_keyspace` and `drop_keyspace` exist for tests and throwaway dev keyspaces.
"""

from __future__ import annotations

import re
from importlib import resources

from engine.errors import PersistenceError
from engine.persistence.cassandra.aio import CassandraUrl, CqlSession

# Bump with every change to schema.cql.
# 2: `schedules`. 3: `cluster` (the recorded shard count) and `node_leases`.
SCHEMA_VERSION = 3

# Tables the store writes data to (every table but schema_version).
DATA_TABLES = (
    "executions",
    "history",
    "timers",
    "domains",
    "domains_by_name",
    "schedules",
    "visibility",
    "cluster",
    "node_leases",
)


def load_schema() -> str:
    return resources.files("engine.persistence.cassandra").joinpath("schema.cql").read_text("utf-8")


def schema_statements() -> list[str]:
    """The statements of schema.cql, comments removed; each ends where a line ends in ';'."""
    statements: list[str] = []
    current: list[str] = []
    for line in load_schema().splitlines():
        code = re.sub(r"--.*$", "", line).rstrip()
        if not code.strip():
            continue
        current.append(code)
        if code.endswith(";"):
            statements.append("\n".join(current).rstrip(";"))
            current = []
    if current:
        raise ValueError("schema.cql ends inside a statement (missing ';')")
    return statements


async def apply_schema(url: str) -> int:
    """Create the keyspace if missing and bring its tables to `SCHEMA_VERSION`; return it.

    Safe to run again, and against a keyspace some other process is using.

    Raises:
        ValueError: the URL is not a cassandra:// URL.
        PersistenceError: Cassandra is unreachable, rejects a statement, or the keyspace
            holds a newer schema than this build.
    """
    target = CassandraUrl.parse(url)
    ks = target.keyspace
    session = await CqlSession.connect(target, admin=True)
    try:
        await session.execute(
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {target.replication_factor}}}"
        )
        stored = await _stored_version(session, ks)
        if stored is not None and stored > SCHEMA_VERSION:
            raise PersistenceError(
                f"keyspace {ks} has schema version {stored}, newer than this build's "
                f"{SCHEMA_VERSION}: upgrade Cadenza instead"
            )
        # schema.cql names no keyspace (like `cqlsh -k KEYSPACE -f schema.cql`).
        await session.execute(f"USE {ks}")
        for statement in schema_statements():
            await session.execute(statement)
        version = await session.prepare(
            f"INSERT INTO {ks}.schema_version (keyspace_name, version, updated_at) "
            "VALUES (?, ?, toTimestamp(now()))"
        )
        await session.execute(version, (ks, SCHEMA_VERSION))
    finally:
        await session.close()
    return SCHEMA_VERSION


async def _stored_version(session: CqlSession, ks: str) -> int | None:
    tables = await session.fetch_all(
        "SELECT table_name FROM system_schema.tables WHERE keyspace_name = "
        f"'{ks}' AND table_name = 'schema_version'"
    )
    if not tables:
        return None
    rows = await session.fetch_all(
        f"SELECT version FROM {ks}.schema_version WHERE keyspace_name = '{ks}'"
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


async def check_schema(session: CqlSession, keyspace: str) -> None:
    """Raise a PersistenceError naming the fix unless `keyspace` holds `SCHEMA_VERSION`."""
    stored = await _stored_version(session, keyspace)
    if stored != SCHEMA_VERSION:
        found = "no Cadenza schema" if stored is None else f"schema version {stored}"
        raise PersistenceError(
            f"Cassandra keyspace {keyspace!r} has {found}, this build needs version "
            f"{SCHEMA_VERSION}: run `cadenza schema apply` with this persistence url"
        )


async def truncate_keyspace(url: str) -> None:
    """Empty every data table of the URL's keyspace (tests: a clean store per test)."""
    target = CassandraUrl.parse(url)
    session = await CqlSession.connect(target, admin=True)
    try:
        for table in DATA_TABLES:
            await session.execute(f"TRUNCATE {target.keyspace}.{table}")
    finally:
        await session.close()


async def drop_keyspace(url: str) -> None:
    """Drop the URL's keyspace and everything in it, if it exists."""
    target = CassandraUrl.parse(url)
    session = await CqlSession.connect(target, admin=True)
    try:
        await session.execute(f"DROP KEYSPACE IF EXISTS {target.keyspace}")
    finally:
        await session.close()
