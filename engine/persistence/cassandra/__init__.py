"""The distributed Cassandra backend: `CassandraStore` and `apply_schema`.

Importing this package imports cassandra-driver; the factory (`engine.persistence.factory`)
imports it only for a `cassandra://` URL. Layout: `aio` (the asyncio bridge, the URL, error
translation), `cql` (statements), `schema` + `schema.cql` (DDL and its version), `executions`,
`timers`, `domains`, `visibility` + `evaluate` (the store roles), `store` (the facade).
"""

from engine.persistence.cassandra.schema import SCHEMA_VERSION, apply_schema
from engine.persistence.cassandra.store import CassandraStore

__all__ = ["SCHEMA_VERSION", "CassandraStore", "apply_schema"]
