"""`CassandraStore`: the distributed backend of every store protocol, on Apache Cassandra.

The facade the engine talks to (through `engine.persistence.factory.open_store` for a
`cassandra://host1[,host2][:port]/keyspace` URL). It connects, checks the schema version
(`schema.apply_schema` creates the schema; the store never runs DDL), prepares every
statement once, and delegates: `executions` (shards, runs, the outbox, history: the
group-commit write path), `timers`, `domains`, `schedules`, `visibility` and `cluster` (the
shard count, node leases), beside this module. All I/O goes through the asyncio bridge in `aio`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from types import TracebackType

from engine.errors import PersistenceError
from engine.persistence.cassandra import visibility
from engine.persistence.cassandra.aio import CassandraUrl, CqlSession
from engine.persistence.cassandra.cluster import Cluster
from engine.persistence.cassandra.cql import Statements
from engine.persistence.cassandra.domains import Domains
from engine.persistence.cassandra.executions import Executions
from engine.persistence.cassandra.schedules import Schedules
from engine.persistence.cassandra.schema import check_schema
from engine.persistence.cassandra.timers import Timers
from engine.persistence.protocols import (
    CurrentRun,
    DomainRecord,
    HistoryBatch,
    NodeLease,
    OutboxTask,
    RunKey,
    RunSnapshot,
    ScheduleRecord,
    ShardInfo,
    ShardWrite,
    Store,
    TimerRow,
    VisibilityRecord,
)
from engine.visibility.query import Query


class _Parts:
    """What exists only while the store is started."""

    def __init__(self, db: CqlSession, st: Statements) -> None:
        self.db = db
        self.st = st
        self.executions = Executions(db, st)
        self.timers = Timers(db, st)
        self.domains = Domains(db, st)
        self.schedules = Schedules(db, st)
        self.cluster = Cluster(db, st)


class CassandraStore:
    """Every store role (shard, execution, history, timer, domain, visibility) on Cassandra.

    Fencing: `write_shard` is one conditional batch in the shard's partition, `IF range_id =
    ?` on the shard row plus each run's and current-run pointer's condition: a stale owner's
    write fails whole with `ShardOwnershipLostError`, a failed condition with
    `ConditionFailedError`, and neither applies anything (see `executions`).

    Consistency: LOCAL_QUORUM reads and writes, LOCAL_SERIAL for conditional writes.

    Args:
        url: `cassandra://host1[,host2...][:port]/keyspace`, optionally with `?local_dc=NAME`
            (see `aio.CassandraUrl`). The keyspace must hold this build's schema (created by
            `apply_schema(url)`, i.e. `cadenza schema apply`).

    Raises:
        ValueError: the URL is malformed (at construction).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._target = CassandraUrl.parse(url)
        self._parts: _Parts | None = None

    @property
    def keyspace(self) -> str:
        return self._target.keyspace

    async def start(self) -> None:
        """Connect, check the schema version, prepare every statement.

        Raises:
            PersistenceError: Cassandra is unreachable, or the keyspace lacks this build's
                schema (the message says to run `cadenza schema apply`).
        """
        if self._parts is not None:
            return
        db = await CqlSession.connect(self._target)
        try:
            await check_schema(db, self.keyspace)
            st = await Statements.prepare(db, self.keyspace)
        except BaseException:
            await db.close()
            raise
        self._parts = _Parts(db, st)

    async def stop(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            await parts.db.close()

    async def __aenter__(self) -> CassandraStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def _p(self) -> _Parts:
        if self._parts is None:
            raise PersistenceError(f"cassandra store {self._target.address} is not started")
        return self._parts

    # --- ClusterStore -----------------------------------------------------------------------

    async def get_num_shards(self) -> int | None:
        return await self._p.cluster.get_num_shards()

    async def record_num_shards(self, num_shards: int) -> int:
        return await self._p.cluster.record_num_shards(num_shards)

    async def claim_node(self, lease: NodeLease, ttl_s: int) -> NodeLease | None:
        return await self._p.cluster.claim_node(lease, ttl_s)

    async def renew_node(self, lease: NodeLease, ttl_s: int) -> bool:
        return await self._p.cluster.renew_node(lease, ttl_s)

    async def release_node(self, lease: NodeLease) -> None:
        await self._p.cluster.release_node(lease)

    # --- ShardStore -------------------------------------------------------------------------

    async def acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        return await self._p.executions.acquire_shard(shard_id, owner)

    async def get_shard(self, shard_id: int) -> ShardInfo | None:
        return await self._p.executions.get_shard(shard_id)

    # --- ExecutionStore ---------------------------------------------------------------------

    async def get_current_run(
        self, shard_id: int, domain_id: str, workflow_id: str
    ) -> CurrentRun | None:
        return await self._p.executions.get_current_run(shard_id, domain_id, workflow_id)

    async def get_run(
        self, shard_id: int, domain_id: str, workflow_id: str, run_id: str
    ) -> RunSnapshot | None:
        return await self._p.executions.get_run(shard_id, domain_id, workflow_id, run_id)

    async def write_shard(self, write: ShardWrite) -> None:
        await self._p.executions.write_shard(write)

    async def read_outbox(self, shard_id: int, after_task_id: int) -> list[OutboxTask]:
        return await self._p.executions.read_outbox(shard_id, after_task_id)

    async def open_runs(self, shard_id: int, page_size: int = 1000) -> AsyncIterator[list[RunKey]]:
        async for page in self._p.executions.open_runs(shard_id, page_size):
            yield page

    # --- HistoryStore -----------------------------------------------------------------------

    async def read_history(
        self,
        domain_id: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int,
        max_events: int,
        *,
        before_event_id: int | None = None,
    ) -> list[HistoryBatch]:
        return await self._p.executions.read_history(
            domain_id, workflow_id, run_id, first_event_id, max_events, before_event_id
        )

    # --- TimerStore -------------------------------------------------------------------------

    async def put_timers(self, shard_id: int, timers: Sequence[TimerRow]) -> None:
        await self._p.timers.put_timers(shard_id, timers)

    async def due_timers(self, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
        return await self._p.timers.due_timers(shard_id, upto_ns, limit)

    async def delete_timers(self, shard_id: int, task_ids: Sequence[int]) -> None:
        await self._p.timers.delete_timers(shard_id, task_ids)

    # --- DomainStore ------------------------------------------------------------------------

    async def create_domain(self, record: DomainRecord) -> None:
        await self._p.domains.create_domain(record)

    async def get_domain(self, *, name: str = "", domain_id: str = "") -> DomainRecord | None:
        return await self._p.domains.get_domain(name, domain_id)

    async def update_domain(self, record: DomainRecord, expected_version: int) -> None:
        await self._p.domains.update_domain(record, expected_version)

    async def list_domains(self, page_size: int, token: bytes) -> tuple[list[DomainRecord], bytes]:
        return await self._p.domains.list_domains(page_size, token)

    # --- ScheduleStore ----------------------------------------------------------------------

    async def create_schedule(self, record: ScheduleRecord) -> None:
        await self._p.schedules.create_schedule(record)

    async def get_schedule(self, domain_id: str, schedule_id: str) -> ScheduleRecord | None:
        return await self._p.schedules.get_schedule(domain_id, schedule_id)

    async def update_schedule(self, record: ScheduleRecord, expected_version: int) -> None:
        await self._p.schedules.update_schedule(record, expected_version)

    async def delete_schedule(self, domain_id: str, schedule_id: str) -> bool:
        return await self._p.schedules.delete_schedule(domain_id, schedule_id)

    async def list_schedules(
        self, domain_id: str, page_size: int, token: bytes
    ) -> tuple[list[ScheduleRecord], bytes]:
        return await self._p.schedules.list_schedules(domain_id, page_size, token)

    # --- VisibilityStore --------------------------------------------------------------------

    async def query_visibility(
        self,
        domain_id: str,
        query: Query,
        page_size: int,
        token: bytes,
    ) -> tuple[list[VisibilityRecord], bytes]:
        p = self._p
        return await visibility.query(p.db, p.st, domain_id, query, page_size, token)

    async def count_visibility(self, domain_id: str, query: Query) -> int:
        p = self._p
        return await visibility.count(p.db, p.st, domain_id, query)

    async def get_visibility(
        self, domain_id: str, workflow_id: str, run_id: str
    ) -> VisibilityRecord | None:
        p = self._p
        return await visibility.get(p.db, p.st, domain_id, workflow_id, run_id)


def _conforms(store: CassandraStore) -> Store:
    # The factory imports this module lazily and casts; this makes mypy check the protocol.
    return store
