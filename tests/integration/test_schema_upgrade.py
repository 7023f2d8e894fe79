"""A keyspace made by an older build: the store refuses it and names the fix, and
`apply_schema` (`cadenza schema apply`) brings it to this build's version in place, keeping
what it holds."""

from __future__ import annotations

import uuid

import pytest

from engine.errors import PersistenceError
from engine.persistence.cassandra.aio import CassandraUrl, CqlSession
from engine.persistence.cassandra.schema import SCHEMA_VERSION, apply_schema, drop_keyspace
from engine.persistence.cassandra.store import CassandraStore
from engine.persistence.protocols import DomainRecord, ScheduleRecord


async def test_a_version_1_keyspace_is_refused_then_upgraded_in_place() -> None:
    url = f"cassandra://127.0.0.1/upgrade_{uuid.uuid4().hex[:12]}"
    ks = CassandraUrl.parse(url).keyspace
    await apply_schema(url)
    try:
        async with CassandraStore(url) as store:
            await store.create_domain(DomainRecord("d-1", "kept", b"info"))
        # Make it what version 1 left: no schedules table, version 1 recorded.
        session = await CqlSession.connect(CassandraUrl.parse(url), admin=True)
        try:
            await session.execute(f"DROP TABLE {ks}.schedules")
            await session.execute(
                f"UPDATE {ks}.schema_version SET version = 1 WHERE keyspace_name = '{ks}'"
            )
        finally:
            await session.close()

        with pytest.raises(PersistenceError, match=r"schema version 1.*cadenza schema apply"):
            async with CassandraStore(url):
                pass

        assert await apply_schema(url) == SCHEMA_VERSION == 2
        async with CassandraStore(url) as store:
            assert await store.get_domain(name="kept") == DomainRecord("d-1", "kept", b"info")
            await store.create_schedule(ScheduleRecord("d-1", "nightly", b"spec", 1))
            assert (await store.get_schedule("d-1", "nightly")) is not None
    finally:
        await drop_keyspace(url)
