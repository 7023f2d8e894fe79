"""A keyspace made by an older build: the store refuses it and names the fix, and
`apply_schema` (`cadenza schema apply`) brings it to this build's version in place, keeping
what it holds. A keyspace from before shard counts were recorded (version 2 or older) gets
its count from the shards it holds, and a process configured with another count is refused."""

from __future__ import annotations

import uuid

import pytest

from engine.errors import ConfigMismatchError, PersistenceError
from engine.persistence.cassandra.aio import CassandraUrl, CqlSession
from engine.persistence.cassandra.schema import SCHEMA_VERSION, apply_schema, drop_keyspace
from engine.persistence.cassandra.store import CassandraStore
from engine.persistence.protocols import DomainRecord, NodeLease, ScheduleRecord
from engine.startup import resolve_num_shards

# What each older version lacks, by version.
MISSING = {1: ("schedules", "cluster", "node_leases"), 2: ("cluster", "node_leases")}


@pytest.mark.parametrize("old", sorted(MISSING))
async def test_an_older_keyspace_is_refused_then_upgraded_in_place(old: int) -> None:
    url = f"cassandra://127.0.0.1/upgrade_{uuid.uuid4().hex[:12]}"
    ks = CassandraUrl.parse(url).keyspace
    await apply_schema(url)
    try:
        async with CassandraStore(url) as store:
            await store.create_domain(DomainRecord("d-1", "kept", b"info"))
            # The older build's servers acquired its 4 shards.
            for shard_id in range(4):
                await store.acquire_shard(shard_id, "old-build")
        # Make it what that version left: its tables only, its version recorded.
        session = await CqlSession.connect(CassandraUrl.parse(url), admin=True)
        try:
            for table in MISSING[old]:
                await session.execute(f"DROP TABLE {ks}.{table}")
            await session.execute(
                f"UPDATE {ks}.schema_version SET version = {old} WHERE keyspace_name = '{ks}'"
            )
        finally:
            await session.close()

        with pytest.raises(PersistenceError, match=rf"schema version {old}.*cadenza schema apply"):
            async with CassandraStore(url):
                pass

        assert await apply_schema(url) == SCHEMA_VERSION == 3
        async with CassandraStore(url) as store:
            assert await store.get_domain(name="kept") == DomainRecord("d-1", "kept", b"info")
            await store.create_schedule(ScheduleRecord("d-1", "nightly", b"spec", 1))
            assert (await store.get_schedule("d-1", "nightly")) is not None
            # The shard count comes from the shards: another one is refused, and the found
            # one is recorded by the first process that starts.
            assert await store.get_num_shards() == 4
            with pytest.raises(ConfigMismatchError, match="has 4 shards, not 8"):
                await resolve_num_shards(store, 8, url)
            assert await resolve_num_shards(store, None, url) == 4
            assert await store.record_num_shards(8) == 4
            lease = NodeLease("n-1", "t-1", "h", 1, "127.0.0.1:7833", 1)
            assert await store.claim_node(lease, 30) is None
    finally:
        await drop_keyspace(url)
