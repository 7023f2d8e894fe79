"""Shards, runs, the outbox and history on Cassandra: the engine's group-commit write path.

Everything a shard writes atomically lives in its partition of `executions` (see
schema.cql), so `write_shard` is ONE logged batch with lightweight-transaction conditions, all
in that partition: `IF range_id = ?` on the shard row fences a stale owner, and each run row
carries `IF next_event_id = ?` (or `IF NOT EXISTS` for a new run), each current-run row
`IF current_run_id = ?` (or `IF NOT EXISTS`). Cassandra applies such a batch all-or-nothing.
When it is not applied, the rows it returns tell a moved range_id (ShardOwnershipLostError)
from a failed condition (ConditionFailedError).

Conditions are evaluated against the stored rows, never against earlier statements of the
same batch, so several writes of one run (or one current-run pointer) in a group commit are
chained here first: the first write's condition goes to Cassandra, the later ones are checked
against the earlier ones, and the batch carries the last values.

History batches are written BEFORE the conditional batch, as single-row inserts: large blobs
stay out of Paxos, and a run's committed state never points at history that is not there.
A failed batch can leave orphan history rows; `read_history` never returns them (it stops at
the run's committed next_event_id, skips batches a newer one overlaps, and prefers a newer
owner's row for the same first_event_id), and the next committed write replaces them.
Callers page history from batch boundaries (1, or the end of the last batch returned).

Single writer: the owner of a shard serialises its writes, as the engine does; the store's
bookkeeping of visibility copies (see `visibility`) assumes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.errors import ConditionFailedError, PersistenceError, ShardOwnershipLostError
from engine.persistence.cassandra import visibility
from engine.persistence.cassandra.aio import CqlSession, batch_add, logged_batch
from engine.persistence.cassandra.cql import CURRENT, OPEN_RUN, RUN, SHARD, VISIBILITY, Statements
from engine.persistence.protocols import (
    CurrentRun,
    HistoryBatch,
    OutboxTask,
    RunKey,
    RunSnapshot,
    ShardInfo,
    ShardWrite,
    VisibilityRecord,
)

log = structlog.get_logger(__name__)

RunTuple = tuple[str, str, str]
_ACQUIRE_ATTEMPTS = 20
_OUTBOX_FETCH = 500


class _InBatchConflict(Exception):
    """Two writes of one batch disagree with each other (found before sending anything)."""


@dataclass(slots=True)
class _RunPlan:
    domain_id: str
    workflow_id: str
    run_id: str
    # The condition sent to Cassandra: the first write's expectation.
    expected: int | None
    state: bytes
    next_event_id: int
    visibility: VisibilityRecord | None = None


@dataclass(slots=True)
class _CurrentPlan:
    # None: unconditional; "": no current run may exist; else the current run must be it.
    condition: str | None
    run: CurrentRun


@dataclass(slots=True)
class _Plan:
    runs: dict[RunTuple, _RunPlan] = field(default_factory=dict)
    currents: dict[tuple[str, str], _CurrentPlan] = field(default_factory=dict)
    history: dict[tuple[RunTuple, int], HistoryBatch] = field(default_factory=dict)


def _plan(write: ShardWrite) -> _Plan:
    plan = _Plan()
    for run in write.runs:
        key = (run.domain_id, run.workflow_id, run.run_id)
        found = plan.runs.get(key)
        if found is None:
            found = plan.runs[key] = _RunPlan(
                *key, run.expected_next_event_id, run.state, run.next_event_id
            )
        elif run.expected_next_event_id != found.next_event_id:
            raise _InBatchConflict(
                f"run {run.workflow_id}/{run.run_id}: expected next_event_id "
                f"{run.expected_next_event_id}, an earlier write of the batch left "
                f"{found.next_event_id}"
            )
        found.state, found.next_event_id = run.state, run.next_event_id
        if run.visibility is not None:
            found.visibility = run.visibility
        for b in run.history:
            plan.history[(key, b.first_event_id)] = b
        if run.current is not None:
            wkey = (run.domain_id, run.workflow_id)
            expected = run.current.expected_run_id
            current = plan.currents.get(wkey)
            if current is None:
                plan.currents[wkey] = _CurrentPlan(expected, run.current.run)
                continue
            if expected is not None and expected != current.run.run_id:
                raise _InBatchConflict(
                    f"workflow {run.workflow_id}: expected current run {expected!r}, an earlier "
                    f"write of the batch made it {current.run.run_id!r}"
                )
            current.run = run.current.run
    return plan


class Executions:
    """The `ShardStore`/`ExecutionStore`/`HistoryStore` half of `CassandraStore`."""

    def __init__(self, db: CqlSession, st: Statements) -> None:
        self._db = db
        self._st = st
        # Per shard: records committed but not yet copied to the visibility table, and
        # copied ones whose kind-5 row the shard's next batch deletes.
        self._uncopied: dict[int, dict[RunTuple, visibility.Pending]] = {}
        self._copied: dict[int, set[RunTuple]] = {}

    # --- shards -----------------------------------------------------------------------------

    async def get_shard(self, shard_id: int, *, serial: bool = False) -> ShardInfo | None:
        rows = await self._db.execute(self._st.select_shard, (shard_id,), serial=serial)
        if not rows:
            return None
        range_id, owner, applied_offset, outbox_ack = rows[0]
        return ShardInfo(shard_id, range_id, owner or "", applied_offset or 0, outbox_ack or 0)

    async def acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        info = await self._bump_range(shard_id, owner)
        # Finish what a previous owner may have left: committed records not yet copied.
        self._uncopied[shard_id] = {}
        self._copied[shard_id] = set()
        rows = await self._db.fetch_all(self._st.select_flags, (shard_id, VISIBILITY))
        pending = [visibility.Pending(visibility.decode_pending(r[3]), r[4]) for r in rows]
        await self._copy(shard_id, pending)
        return info

    async def _bump_range(self, shard_id: int, owner: str) -> ShardInfo:
        for _ in range(_ACQUIRE_ATTEMPTS):
            # A serial read completes any Paxos round in flight, so the bump below starts
            # from the latest committed row.
            current = await self.get_shard(shard_id, serial=True)
            if current is None:
                applied = await self._db.conditional(self._st.insert_shard, (shard_id, 1, owner))
                if applied:
                    return ShardInfo(shard_id, 1, owner)
                continue
            new_range = current.range_id + 1
            applied = await self._db.conditional(
                self._st.acquire_shard,
                (
                    new_range,
                    owner,
                    shard_id,
                    current.range_id,
                    current.applied_offset,
                    current.outbox_ack,
                ),
            )
            if applied:
                return ShardInfo(
                    shard_id, new_range, owner, current.applied_offset, current.outbox_ack
                )
        raise PersistenceError(
            f"shard {shard_id}: range_id kept moving during {_ACQUIRE_ATTEMPTS} acquire attempts"
        )

    # --- runs -------------------------------------------------------------------------------

    async def get_current_run(
        self, shard_id: int, domain_id: str, workflow_id: str
    ) -> CurrentRun | None:
        rows = await self._db.execute(self._st.select_current, (shard_id, domain_id, workflow_id))
        if not rows:
            return None
        run_id, request_id, close_status = rows[0]
        return CurrentRun(run_id or "", request_id or "", close_status or 0)

    async def get_run(
        self, shard_id: int, domain_id: str, workflow_id: str, run_id: str
    ) -> RunSnapshot | None:
        rows = await self._db.execute(
            self._st.select_run, (shard_id, domain_id, workflow_id, run_id)
        )
        if not rows:
            return None
        state, next_event_id = rows[0]
        return RunSnapshot(state=state or b"", next_event_id=next_event_id)

    async def open_runs(self, shard_id: int, page_size: int) -> AsyncIterator[list[RunKey]]:
        # The driver's paging state walks the partition; the next page is fetched only when
        # this one was consumed.
        async for rows in self._db.pages(
            self._st.select_flags, (shard_id, OPEN_RUN), fetch_size=page_size
        ):
            if rows:
                yield [RunKey(domain_id=r[0], workflow_id=r[1], run_id=r[2]) for r in rows]

    async def read_outbox(self, shard_id: int, after_task_id: int) -> list[OutboxTask]:
        rows = await self._db.fetch_all(
            self._st.select_outbox, (shard_id, after_task_id), fetch_size=_OUTBOX_FETCH
        )
        return [OutboxTask(task_id=r[0], queue=r[1], value=r[2] or b"") for r in rows]

    # --- the group-commit write -------------------------------------------------------------

    async def write_shard(self, write: ShardWrite) -> None:
        sid = write.shard_id
        try:
            plan = _plan(write)
        except _InBatchConflict as conflict:
            # Fencing comes first, as in the SQLite store: a stale owner learns that.
            await self._check_fence(write)
            raise ConditionFailedError(str(conflict)) from None

        await self._db.execute_all(
            [
                (
                    self._st.insert_history,
                    (*key, sid, first, write.range_id, b.event_count, b.events),
                )
                for (key, first), b in plan.history.items()
            ]
        )

        batch, touched = self._batch(write, plan)
        rows = await self._db.execute_named(batch)
        if not rows or not rows[0].get("[applied]", False):
            raise self._not_applied(write, plan, rows)

        # The batch deleted the kind-5 rows of earlier copies, or replaced them by new ones.
        self._copied.setdefault(sid, set()).difference_update(touched)
        uncopied = self._uncopied.setdefault(sid, {})
        for p in plan.runs.values():
            if p.visibility is not None:
                version = visibility.version_of(p.next_event_id, write.range_id)
                pending = visibility.Pending(p.visibility, version)
                uncopied[pending.key] = pending
        await self._copy(sid, list(uncopied.values()))

    def _batch(self, write: ShardWrite, plan: _Plan) -> tuple[Any, set[RunTuple]]:
        """The conditional batch, and the runs whose kind-5 row it writes or deletes."""
        st, sid, rid = self._st, write.shard_id, write.range_id
        batch = logged_batch()
        # Every fence variant ends with the shard key and the range_id condition.
        sets: tuple[int, ...]
        if write.applied_offset is not None and write.outbox_ack is not None:
            fence, sets = st.fence_offset_ack, (rid, write.applied_offset, write.outbox_ack)
        elif write.applied_offset is not None:
            fence, sets = st.fence_offset, (rid, write.applied_offset)
        elif write.outbox_ack is not None:
            fence, sets = st.fence_ack, (rid, write.outbox_ack)
        else:
            fence, sets = st.fence, (rid,)
        batch_add(batch, fence, (*sets, sid, rid))
        marked: set[RunTuple] = set()
        for key, p in plan.runs.items():
            if p.expected is None:
                batch_add(batch, st.insert_run, (sid, *key, p.state, p.next_event_id))
            else:
                batch_add(batch, st.update_run, (p.state, p.next_event_id, sid, *key, p.expected))
            if p.visibility is not None:
                is_open: bool | None = p.visibility.close_status == 0
                pending = visibility.Pending(
                    p.visibility, visibility.version_of(p.next_event_id, rid)
                )
                data = visibility.encode_pending(p.visibility)
                # Keyed by the record, as the copy bookkeeping is (see visibility.Pending).
                batch_add(
                    batch, st.insert_pending_visibility, (sid, *pending.key, data, pending.version)
                )
                marked.add(pending.key)
            else:
                # A new run starts open; an existing run keeps its state.
                is_open = True if p.expected is None else None
            if is_open is True:
                batch_add(batch, st.insert_open, (sid, *key))
            elif is_open is False:
                batch_add(batch, st.delete_flag, (sid, OPEN_RUN, *key))
        for (domain_id, workflow_id), c in plan.currents.items():
            run = c.run
            row = (run.run_id, run.create_request_id, run.close_status)
            if c.condition is None:
                batch_add(batch, st.set_current, (*row, sid, domain_id, workflow_id))
            elif c.condition == "":
                batch_add(batch, st.insert_current, (sid, domain_id, workflow_id, *row))
            else:
                batch_add(
                    batch, st.update_current, (*row, sid, domain_id, workflow_id, c.condition)
                )
        deleted = self._copied.get(sid, set()) - marked
        for key in deleted:
            batch_add(batch, st.delete_flag, (sid, VISIBILITY, *key))
        ack = write.outbox_ack
        tasks = {t.task_id: t for t in write.tasks if ack is None or t.task_id > ack}
        for t in tasks.values():
            batch_add(batch, st.insert_outbox, (sid, t.task_id, t.queue, t.value))
        if ack is not None:
            batch_add(batch, st.delete_outbox_upto, (sid, ack))
        return batch, marked | deleted

    async def _copy(self, shard_id: int, pending: list[visibility.Pending]) -> None:
        """Copy committed records to the visibility table; on failure keep them for the next
        write (or the next owner): the write itself already committed."""
        if not pending:
            return
        try:
            await visibility.project(self._db, self._st, pending)
        except PersistenceError as exc:
            log.warning(
                "visibility_copy_failed", shard_id=shard_id, records=len(pending), error=str(exc)
            )
            return
        uncopied = self._uncopied.setdefault(shard_id, {})
        copied = self._copied.setdefault(shard_id, set())
        for p in pending:
            if uncopied.get(p.key) is p:
                del uncopied[p.key]
            copied.add(p.key)

    async def _check_fence(self, write: ShardWrite) -> None:
        info = await self.get_shard(write.shard_id)
        if info is None or info.range_id != write.range_id:
            self._forget(write.shard_id)
            raise ShardOwnershipLostError(
                write.shard_id,
                f"shard {write.shard_id}: write with range_id {write.range_id}, stored "
                f"{None if info is None else info.range_id}",
            )

    def _forget(self, shard_id: int) -> None:
        # The next owner copies whatever is left (acquire_shard).
        self._uncopied.pop(shard_id, None)
        self._copied.pop(shard_id, None)

    def _not_applied(
        self, write: ShardWrite, plan: _Plan, rows: list[dict[str, Any]]
    ) -> PersistenceError:
        """The error for a batch Cassandra did not apply, from the rows it returned (the
        current values of the conditioned rows that exist)."""
        by_key: dict[tuple[Any, ...], dict[str, Any]] = {
            (r.get("type"), r.get("domain_id"), r.get("workflow_id"), r.get("run_id")): r
            for r in rows
        }
        shard = by_key.get((SHARD, "", "", ""))
        stored_range = None if shard is None else shard.get("range_id")
        if stored_range != write.range_id:
            self._forget(write.shard_id)
            return ShardOwnershipLostError(
                write.shard_id,
                f"shard {write.shard_id}: write with range_id {write.range_id}, stored "
                f"{stored_range}",
            )
        for key, p in plan.runs.items():
            row = by_key.get((RUN, *key))
            stored = None if row is None else row.get("next_event_id")
            if stored != p.expected:
                return ConditionFailedError(
                    f"run {p.workflow_id}/{p.run_id}: expected next_event_id {p.expected}, "
                    f"stored {stored}"
                )
        for (domain_id, workflow_id), c in plan.currents.items():
            if c.condition is None:
                continue
            row = by_key.get((CURRENT, domain_id, workflow_id, ""))
            stored_run = "" if row is None else (row.get("current_run_id") or "")
            if stored_run != c.condition:
                return ConditionFailedError(
                    f"workflow {workflow_id}: expected current run {c.condition!r}, "
                    f"found {stored_run!r}"
                )
        return ConditionFailedError(f"shard {write.shard_id}: conditional batch not applied")

    # --- history ----------------------------------------------------------------------------

    async def read_history(
        self,
        domain_id: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int,
        max_events: int,
        before_event_id: int | None = None,
    ) -> list[HistoryBatch]:
        batches: list[HistoryBatch] = []
        total = 0
        # Where the committed history ends: given by a caller that knows it, else read below.
        bound: int | None = before_event_id
        last_first: int | None = None
        expected: int | None = None
        # Every batch holds an event, so max_events rows (+ older copies) fill the request.
        fetch = max(2, min(max_events + 1, 200))
        pages = self._db.pages(
            self._st.select_history,
            (domain_id, workflow_id, run_id, first_event_id),
            fetch_size=fetch,
        )
        async for page in pages:
            for shard_id, first, count, events in page:
                if bound is None:
                    rows = await self._db.execute(
                        self._st.select_next_event_id, (shard_id, domain_id, workflow_id, run_id)
                    )
                    if not rows:
                        return []  # only orphans of a run that never committed
                    bound = int(rows[0][0])
                if first == last_first:
                    continue  # an older owner's copy of the same batch (range_id DESC)
                last_first = first
                if first >= bound:
                    return batches  # past the committed end: orphans of a failed write
                if expected is not None and first < expected:
                    continue  # inside the previous batch: an orphan a later write overlapped
                if total >= max_events:
                    return batches
                batches.append(HistoryBatch(first_event_id=first, events=events, event_count=count))
                total += count
                expected = first + count
        return batches
