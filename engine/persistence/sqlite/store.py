"""`SqliteStore`: the embedded backend of every store protocol, on one SQLite file.

The async facade the engine talks to. Each method is one transaction, run on the database's
single worker thread (`SqliteDatabase`), so the event loop never blocks; the statements live
in `executions`, `domains` and `visibility` beside this module. The same file also holds the
in-process log's tables: `InProcessTaskLog` shares this store's `database` handle, so embedded
mode runs on one file and one writer thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

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
    TimerRow,
    VisibilityRecord,
)
from engine.persistence.sqlite import cluster, domains, executions, schedules, visibility
from engine.persistence.sqlite.db import SqliteDatabase
from engine.visibility.query import Query


class SqliteStore:
    """Every store role (shard, execution, history, timer, domain, schedule, visibility) on SQLite.

    Fencing: `write_shard` reads the shard's range_id and applies the batch inside one
    BEGIN IMMEDIATE transaction, so a stale owner's write fails whole with
    `ShardOwnershipLostError`, and a failed condition (`ConditionFailedError`) applies nothing.

    Args:
        path: the database file (created if missing), or ":memory:" for a throwaway store.
    """

    def __init__(self, path: str) -> None:
        self._db = SqliteDatabase(path)

    @property
    def path(self) -> str:
        return self._db.path

    @property
    def database(self) -> SqliteDatabase:
        """The shared handle: the in-process log opens its tables through it."""
        return self._db

    async def start(self) -> None:
        """Open the file (WAL, synchronous=NORMAL, busy_timeout) and apply the schema."""
        await self._db.open()

    async def stop(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> SqliteStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- ClusterStore -----------------------------------------------------------------------

    async def get_num_shards(self) -> int | None:
        return await self._db.read(cluster.get_num_shards)

    async def record_num_shards(self, num_shards: int) -> int:
        return await self._db.write(cluster.record_num_shards, num_shards)

    async def claim_node(self, lease: NodeLease, ttl_s: int) -> NodeLease | None:
        return await self._db.write(self._claim_node, lease, ttl_s)

    async def renew_node(self, lease: NodeLease, ttl_s: int) -> bool:
        return await self._db.write(self._renew_node, lease, ttl_s)

    async def release_node(self, lease: NodeLease) -> None:
        await self._db.write(cluster.release_node, lease)

    # On the database thread, with the transaction: the lock file is rewritten there too.
    def _claim_node(
        self, conn: sqlite3.Connection, lease: NodeLease, ttl_s: int
    ) -> NodeLease | None:
        holder = cluster.claim_node(conn, lease, ttl_s)
        if holder is None:
            self._describe_holder(lease)
        return holder

    def _renew_node(self, conn: sqlite3.Connection, lease: NodeLease, ttl_s: int) -> bool:
        renewed = cluster.renew_node(conn, lease, ttl_s)
        if renewed:
            self._describe_holder(lease)
        return renewed

    def _describe_holder(self, lease: NodeLease) -> None:
        # What a second process refused this file is told (see sqlite/lock.py).
        if self._db.lock is not None:
            self._db.lock.describe(node_id=lease.node_id, address=lease.address)

    # --- ShardStore -------------------------------------------------------------------------

    async def acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        return await self._db.write(executions.acquire_shard, shard_id, owner)

    async def get_shard(self, shard_id: int) -> ShardInfo | None:
        return await self._db.read(executions.get_shard, shard_id)

    # --- ExecutionStore ---------------------------------------------------------------------

    async def get_current_run(
        self, shard_id: int, domain_id: str, workflow_id: str
    ) -> CurrentRun | None:
        return await self._db.read(executions.get_current_run, shard_id, domain_id, workflow_id)

    async def get_run(
        self, shard_id: int, domain_id: str, workflow_id: str, run_id: str
    ) -> RunSnapshot | None:
        return await self._db.read(executions.get_run, shard_id, domain_id, workflow_id, run_id)

    async def write_shard(self, write: ShardWrite) -> None:
        await self._db.write(executions.write_shard, write)

    async def read_outbox(self, shard_id: int, after_task_id: int) -> list[OutboxTask]:
        return await self._db.read(executions.read_outbox, shard_id, after_task_id)

    async def open_runs(self, shard_id: int, page_size: int = 1000) -> AsyncIterator[list[RunKey]]:
        after: RunKey | None = None
        while True:
            page = await self._db.read(executions.open_runs_after, shard_id, after, page_size)
            if page:
                yield page
            if len(page) < page_size:
                return
            after = page[-1]

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
        return await self._db.read(
            executions.read_history,
            domain_id,
            workflow_id,
            run_id,
            first_event_id,
            max_events,
            before_event_id,
        )

    # --- TimerStore -------------------------------------------------------------------------

    async def put_timers(self, shard_id: int, timers: Sequence[TimerRow]) -> None:
        if timers:
            await self._db.write(executions.put_timers, shard_id, list(timers))

    async def due_timers(self, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
        return await self._db.read(executions.due_timers, shard_id, upto_ns, limit)

    async def delete_timers(self, shard_id: int, task_ids: Sequence[int]) -> None:
        if task_ids:
            await self._db.write(executions.delete_timers, shard_id, list(task_ids))

    # --- DomainStore ------------------------------------------------------------------------

    async def create_domain(self, record: DomainRecord) -> None:
        await self._db.write(domains.create_domain, record)

    async def get_domain(self, *, name: str = "", domain_id: str = "") -> DomainRecord | None:
        return await self._db.read(domains.get_domain, name, domain_id)

    async def update_domain(self, record: DomainRecord, expected_version: int) -> None:
        await self._db.write(domains.update_domain, record, expected_version)

    async def list_domains(self, page_size: int, token: bytes) -> tuple[list[DomainRecord], bytes]:
        return await self._db.read(domains.list_domains, page_size, token)

    # --- ScheduleStore ----------------------------------------------------------------------

    async def create_schedule(self, record: ScheduleRecord) -> None:
        await self._db.write(schedules.create_schedule, record)

    async def get_schedule(self, domain_id: str, schedule_id: str) -> ScheduleRecord | None:
        return await self._db.read(schedules.get_schedule, domain_id, schedule_id)

    async def update_schedule(self, record: ScheduleRecord, expected_version: int) -> None:
        await self._db.write(schedules.update_schedule, record, expected_version)

    async def delete_schedule(self, domain_id: str, schedule_id: str) -> bool:
        return await self._db.write(schedules.delete_schedule, domain_id, schedule_id)

    async def list_schedules(
        self, domain_id: str, page_size: int, token: bytes
    ) -> tuple[list[ScheduleRecord], bytes]:
        return await self._db.read(schedules.list_schedules, domain_id, page_size, token)

    # --- VisibilityStore --------------------------------------------------------------------

    async def query_visibility(
        self,
        domain_id: str,
        query: Query,
        page_size: int,
        token: bytes,
    ) -> tuple[list[VisibilityRecord], bytes]:
        return await self._db.read(visibility.query, domain_id, query, page_size, token)

    async def count_visibility(self, domain_id: str, query: Query) -> int:
        return await self._db.read(visibility.count, domain_id, query)

    async def get_visibility(
        self, domain_id: str, workflow_id: str, run_id: str
    ) -> VisibilityRecord | None:
        return await self._db.read(visibility.get, domain_id, workflow_id, run_id)
