"""The `ClusterStore` half of `CassandraStore`: the recorded shard count and node leases.

The shard count is one row written with LWT `IF NOT EXISTS`, so concurrent first starts agree
on one value. A node lease is a row per node id written with LWT and a TTL: the holder renews
it (`IF claim_token = ?`, its own claim's token) and deletes it on stop; a holder that died
without deleting it loses it when the TTL runs out, counted by Cassandra itself.
"""

from __future__ import annotations

from typing import Any

from engine.errors import PersistenceError
from engine.persistence.cassandra.aio import CqlSession
from engine.persistence.cassandra.cql import Statements
from engine.persistence.protocols import NodeLease


def _lease(row: dict[str, Any]) -> NodeLease:
    return NodeLease(
        node_id=row["node_id"],
        token=row.get("claim_token") or "",
        host=row.get("host") or "",
        pid=row.get("pid") or 0,
        address=row.get("address") or "",
        since_ns=row.get("since_ns") or 0,
    )


class Cluster:
    def __init__(self, db: CqlSession, st: Statements) -> None:
        self._db = db
        self._st = st

    async def get_num_shards(self) -> int | None:
        rows = await self._db.execute(self._st.select_num_shards, serial=True)
        if rows and rows[0][0] is not None:
            return int(rows[0][0])
        # A keyspace from before version 3: each shard has its partition of `executions`
        # once a server has acquired it (every shard is, once any history process runs).
        ids = await self._db.fetch_all(self._st.select_shard_ids)
        return max(int(row[0]) for row in ids) + 1 if ids else None

    async def record_num_shards(self, num_shards: int) -> int:
        rows = await self._db.execute_named(self._st.insert_num_shards, (num_shards,))
        if not rows:
            raise PersistenceError("cassandra: no result row for the shard count's LWT")
        row = rows[0]
        return num_shards if row["[applied]"] else int(row["num_shards"])

    async def claim_node(self, lease: NodeLease, ttl_s: int) -> NodeLease | None:
        rows = await self._db.execute_named(
            self._st.insert_node_lease,
            (
                lease.node_id,
                lease.token,
                lease.host,
                lease.pid,
                lease.address,
                lease.since_ns,
                ttl_s,
            ),
        )
        if rows and rows[0]["[applied]"]:
            return None
        holder = _lease(rows[0]) if rows else None
        if holder is not None and holder.token != lease.token:
            return holder
        # Ours already (a claim whose answer was lost, retried): renew it instead. Should it
        # have expired in between, claim again.
        if await self.renew_node(lease, ttl_s):
            return None
        return await self.claim_node(lease, ttl_s)

    async def renew_node(self, lease: NodeLease, ttl_s: int) -> bool:
        return await self._db.conditional(
            self._st.renew_node_lease,
            (
                ttl_s,
                lease.token,
                lease.host,
                lease.pid,
                lease.address,
                lease.since_ns,
                lease.node_id,
                lease.token,
            ),
        )

    async def release_node(self, lease: NodeLease) -> None:
        await self._db.conditional(self._st.delete_node_lease, (lease.node_id, lease.token))
