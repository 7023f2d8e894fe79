"""ShardDriver: drives one real ShardEngine in-process, without gRPC, the way the shard loop does.

Commands are built as the frontend builds them (engine/frontend/workflow.py, worker.py), encoded
with `encode_command` and appended to an in-memory command log (offset = index). `deliver`
hands a slice of that log to `ShardEngine.apply_batch(records)` (one group commit),
optionally rewound to re-deliver records below the applied offset, which the engine must skip.
What a batch produces is collected like matching and the timer processor would see it: decision
and activity dispatch tasks, timer tasks, other transfer tasks, and the replies (keyed by offset).

Everything that changes the shard goes through `script`, so `replay(script)` on a fresh store
re-runs the exact same stream (same records, same clock, same batch boundaries, same restarts).
Run ids come from a counter while a driver is open (`engine.history.handlers.new_run_id` is
patched), so a replay creates the same runs.

`check_shard` reads every run back from the store and checks the invariants the engine promises.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from cadence.api.v1 import history_pb2, service_workflow_pb2

from engine.clock import ManualClock
from engine.errors import ShardOwnershipLostError
from engine.execution.checker import CLOSE_FIELDS, check_history
from engine.history import handlers
from engine.history.engine import BatchResult, ShardEngine
from engine.history.handlers import dispatch
from engine.model.commands import Command, CommandKind, Reply, decode_command, encode_command
from engine.model.state import EMPTY_EVENT_ID, MutableState, decode_state, encode_state
from engine.model.tasks import TimerTask, TransferKind, TransferTask
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.protocols import Record
from engine.shards.context import ShardContext

DOMAIN_ID = "d0000000-0000-4000-8000-000000000000"
DOMAIN = "prop-domain"
TASK_LIST = "prop-tl"
SHARD_ID = 0
TOPIC = "cadenza-commands"
ALLOWED_SEARCH_ATTRIBUTES = frozenset({"CustomKeywordField", "CustomIntField"})

# The typed errors each command may answer with; anything else (InternalServiceError above
# all) is a bug.
ALLOWED_ERRORS: dict[CommandKind, frozenset[str]] = {
    CommandKind.START: frozenset({"WorkflowExecutionAlreadyStartedError"}),
    CommandKind.SIGNAL_WITH_START: frozenset({"WorkflowExecutionAlreadyStartedError"}),
    CommandKind.SIGNAL: frozenset({"EntityNotExistsError", "LimitExceededError"}),
    CommandKind.REQUEST_CANCEL: frozenset(
        {"EntityNotExistsError", "CancellationAlreadyRequestedError"}
    ),
    CommandKind.TERMINATE: frozenset({"EntityNotExistsError"}),
    CommandKind.RECORD_DECISION_STARTED: frozenset({"EntityNotExistsError"}),
    CommandKind.DECISION_COMPLETED: frozenset({"EntityNotExistsError"}),
    CommandKind.DECISION_FAILED: frozenset({"EntityNotExistsError"}),
    CommandKind.RECORD_ACTIVITY_STARTED: frozenset({"EntityNotExistsError"}),
    CommandKind.ACTIVITY_COMPLETED: frozenset({"EntityNotExistsError"}),
    CommandKind.ACTIVITY_FAILED: frozenset({"EntityNotExistsError"}),
    CommandKind.ACTIVITY_CANCELED: frozenset({"EntityNotExistsError"}),
    CommandKind.ACTIVITY_HEARTBEAT: frozenset({"EntityNotExistsError"}),
    CommandKind.TIMER_FIRED: frozenset(),
    CommandKind.EXTERNAL_SIGNALED: frozenset(),
    CommandKind.EXTERNAL_SIGNAL_FAILED: frozenset(),
    CommandKind.EXTERNAL_CANCEL_REQUESTED: frozenset(),
    CommandKind.EXTERNAL_CANCEL_FAILED: frozenset(),
    CommandKind.REFRESH_TASKS: frozenset(),
    CommandKind.START_CHILD: frozenset({"WorkflowExecutionAlreadyStartedError"}),
    CommandKind.CHILD_STARTED: frozenset(),
    CommandKind.CHILD_START_FAILED: frozenset(),
    CommandKind.CHILD_COMPLETED: frozenset(),
}

_CLOSE_STATUS_BY_FIELD = {
    "workflow_execution_completed_event_attributes": 1,
    "workflow_execution_failed_event_attributes": 2,
    "workflow_execution_canceled_event_attributes": 3,
    "workflow_execution_terminated_event_attributes": 4,
    "workflow_execution_continued_as_new_event_attributes": 5,
    "workflow_execution_timed_out_event_attributes": 6,
}
_ACTIVITY_END = frozenset(
    {
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_timed_out_event_attributes",
        "activity_task_canceled_event_attributes",
    }
)
_DECISION_END = frozenset(
    {
        "decision_task_completed_event_attributes",
        "decision_task_failed_event_attributes",
        "decision_task_timed_out_event_attributes",
    }
)


def uuid_for(n: int, tag: int = 0) -> str:
    """A well-formed, deterministic UUID string (request ids must parse as UUIDs)."""
    return f"{tag:08x}-0000-4000-8000-{n:012x}"


class RunIds:
    """Deterministic run ids, handed out in order; remembers every id it gave."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> str:
        run_id = uuid_for(len(self.issued), tag=0xA)
        self.issued.append(run_id)
        return run_id


@dataclass(frozen=True)
class Step:
    """One entry of a driver's script: what happened to the shard, in order."""

    kind: str  # "submit" | "deliver" | "advance" | "restart"
    value: bytes = b""
    start: int = 0
    end: int = 0
    seconds: float = 0.0


@dataclass
class RunView:
    """One run as read back from the store."""

    workflow_id: str
    run_id: str
    events: list[history_pb2.HistoryEvent]
    state: MutableState
    # The history plus the buffered events (no ids yet), in the order they will be written.
    effective: list[history_pb2.HistoryEvent]


class ShardDriver:
    """One shard engine on a SqliteStore at `path`, fed from an in-memory command log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.store = SqliteStore(str(path))
        self.clock = ManualClock()
        self.run_ids = RunIds()
        self.engine: ShardEngine | None = None
        self.log: list[bytes] = []
        # The consumer position: the next offset `deliver` reads.
        self.position = 0
        self.replies: dict[int, Reply] = {}
        self.reply_order: list[int] = []
        self.decision_tasks: list[TransferTask] = []
        self.activity_tasks: list[TransferTask] = []
        self.other_transfer: list[TransferTask] = []
        self.timers: list[TimerTask] = []
        self.script: list[Step] = []
        # What the test meant by a record (not part of it): checked against the outcome.
        self.meta: dict[int, dict[str, Any]] = {}
        self.restarts = 0
        self._patch: contextlib.AbstractContextManager[Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> ShardDriver:
        # The engine draws jitter from `random` (decision retry timeouts): a replay must draw
        # the same.
        random.seed(0)
        self._patch = mock.patch.object(handlers, "new_run_id", self.run_ids)
        self._patch.__enter__()
        await self.store.start()
        info = await self.store.acquire_shard(SHARD_ID, "driver")
        self.engine = self._engine(info.range_id, info.applied_offset)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.stop()
        if self._patch is not None:
            self._patch.__exit__(None, None, None)

    def _engine(self, range_id: int, applied_offset: int) -> ShardEngine:
        return ShardEngine(
            ShardContext(SHARD_ID, range_id),
            applied_offset,
            self.store,
            self.clock,
            ALLOWED_SEARCH_ATTRIBUTES,
            dispatch,
        )

    @property
    def applied_offset(self) -> int:
        assert self.engine is not None
        return self.engine.applied_offset

    # -- the command log -------------------------------------------------------------------------

    @property
    def next_offset(self) -> int:
        return len(self.log)

    def submit(self, cmd: Command, **meta: Any) -> int:
        """Append a command to the log (as the bus does) and return its offset."""
        offset = len(self.log)
        if meta:
            self.meta[offset] = meta
        cmd.reply_to = "driver"
        cmd.reply_key = str(offset)
        value = encode_command(cmd)
        self.log.append(value)
        self.script.append(Step("submit", value=value))
        return offset

    def command(self, offset: int) -> Command:
        return decode_command(self.log[offset])

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.script.append(Step("advance", seconds=seconds))

    async def deliver(self, count: int, rewind: int = 0) -> BatchResult:
        """One batch: records [position - rewind, position + count) in offset order."""
        assert self.engine is not None
        start = max(0, self.position - rewind)
        end = min(len(self.log), self.position + count)
        return await self._deliver(start, end)

    async def _deliver(self, start: int, end: int) -> BatchResult:
        assert self.engine is not None
        self.script.append(Step("deliver", start=start, end=end))
        before = self.engine.applied_offset
        records = [Record(TOPIC, SHARD_ID, off, self.log[off]) for off in range(start, end)]
        result = await self.engine.apply_batch(records)
        self.position = max(self.position, end)
        # Exactly once: the records below the applied offset are skipped, every other one is
        # applied and answered once, in log order.
        expected = list(range(max(start, before), end))
        got = [int(reply.key) for _, reply in result.replies]
        assert got == expected, f"batch [{start},{end}) from {before}: replies for {got}"
        assert self.engine.applied_offset == max(before, end)
        for cmd, reply in result.replies:
            offset = int(reply.key)
            assert offset not in self.replies, f"record {offset} applied twice"
            assert cmd.kind == self.command(offset).kind
            self.replies[offset] = reply
            self.reply_order.append(offset)
        for task in result.transfer:
            if task.kind == TransferKind.DECISION_TASK:
                self.decision_tasks.append(task)
            elif task.kind == TransferKind.ACTIVITY_TASK:
                self.activity_tasks.append(task)
            else:
                self.other_transfer.append(task)
        self.timers.extend(result.timers)
        if expected:
            info = await self.store.get_shard(SHARD_ID)
            assert info is not None
            assert info.applied_offset == self.engine.applied_offset
        return result

    async def restart(self) -> None:
        """A new owner takes the shard (range_id bumps); the old engine is fenced out."""
        assert self.engine is not None
        self.script.append(Step("restart"))
        old = self.engine
        info = await self.store.acquire_shard(SHARD_ID, "driver")
        assert info.range_id == old.shard.range_id + 1
        assert info.applied_offset == old.applied_offset
        if old.applied_offset < len(self.log):
            # A stale owner's group commit fails whole and changes nothing.
            off = old.applied_offset
            rec = Record(TOPIC, SHARD_ID, off, self.log[off])
            try:
                await old.apply_batch([rec])
            except ShardOwnershipLostError:
                pass
            else:
                raise AssertionError("a fenced-out shard engine could still write")
            after = await self.store.get_shard(SHARD_ID)
            assert after is not None
            assert after.applied_offset == info.applied_offset
        self.engine = self._engine(info.range_id, info.applied_offset)
        self.restarts += 1


async def replay(script: list[Step], path: Path) -> ShardDriver:
    """Run `script` again on a fresh store at `path`; the caller closes the driver."""
    driver = ShardDriver(path)
    await driver.__aenter__()
    try:
        for step in script:
            if step.kind == "submit":
                driver.log.append(step.value)
                driver.script.append(step)
            elif step.kind == "advance":
                driver.advance(step.seconds)
            elif step.kind == "deliver":
                await driver._deliver(step.start, step.end)
            elif step.kind == "restart":
                await driver.restart()
            else:
                raise AssertionError(step.kind)
    except BaseException:
        await driver.__aexit__(None, None, None)
        raise
    return driver


def regroup(script: list[Step], sizes: Iterator[int], rewinds: Iterator[int]) -> list[Step]:
    """The same stream in other group-commit batches: every record is still applied at the same
    clock time by the same shard owner (deliveries move up to the next advance or restart),
    but the batch boundaries come from `sizes`, each batch re-delivering `rewinds` records."""
    out: list[Step] = []
    applied = 0  # the engine's applied offset
    due = 0  # records up to here are delivered before the next advance or restart

    def flush() -> None:
        nonlocal applied
        while applied < due:
            end = min(due, applied + next(sizes))
            out.append(Step("deliver", start=max(0, applied - next(rewinds)), end=end))
            applied = end

    for step in script:
        if step.kind == "deliver":
            due = max(due, step.end)
            continue
        if step.kind in ("advance", "restart"):
            flush()
        out.append(step)
    flush()
    return out


# -- reading back -------------------------------------------------------------------------------


async def read_runs(driver: ShardDriver, workflow_ids: Iterator[str] | list[str]) -> list[RunView]:
    """Every run of these workflow ids in the store (any run id the engine could have made)."""
    runs: list[RunView] = []
    for wf in workflow_ids:
        for run_id in driver.run_ids.issued:
            snap = await driver.store.get_run(SHARD_ID, DOMAIN_ID, wf, run_id)
            if snap is None:
                continue
            state = decode_state(snap.state)
            assert state.next_event_id == snap.next_event_id
            assert (state.workflow_id, state.run_id, state.domain_id) == (wf, run_id, DOMAIN_ID)
            events = await read_history(driver.store, wf, run_id)
            buffered = [history_pb2.HistoryEvent.FromString(raw) for raw in state.buffered]
            runs.append(RunView(wf, run_id, events, state, events + buffered))
    return runs


async def read_history(
    store: SqliteStore, workflow_id: str, run_id: str
) -> list[history_pb2.HistoryEvent]:
    batches = await store.read_history(DOMAIN_ID, workflow_id, run_id, 1, 1 << 30)
    events: list[history_pb2.HistoryEvent] = []
    for b in batches:
        got = list(history_pb2.History.FromString(b.events).events)
        # Batches are whole, contiguous and keyed by their first event id.
        assert got, f"{run_id}: empty history batch at {b.first_event_id}"
        assert b.event_count == len(got)
        assert b.first_event_id == got[0].event_id == len(events) + 1, (
            f"{run_id}: batch at {b.first_event_id} follows {len(events)} events"
        )
        events.extend(got)
    return events


# -- invariants ---------------------------------------------------------------------------------


def _field(event: history_pb2.HistoryEvent) -> str:
    name = event.WhichOneof("attributes")
    assert name is not None
    return str(name)


def check_run(run: RunView) -> None:
    """One run: a legal history, and mutable state that agrees with it."""
    events, st, where = run.events, run.state, f"run {run.workflow_id}/{run.run_id}"
    check_history(events)
    assert st.next_event_id == events[-1].event_id + 1, f"{where}: next_event_id"
    task_ids = [e.task_id for e in events]
    assert task_ids == sorted(set(task_ids)), f"{where}: event task ids not increasing"
    closes = [e for e in events if _field(e) in CLOSE_FIELDS]
    started = events[0].workflow_execution_started_event_attributes
    assert started.original_execution_run_id == run.run_id
    assert started.first_execution_run_id == st.first_execution_run_id
    if st.is_open:
        assert not closes, f"{where}: open run with a close event"
    else:
        assert len(closes) == 1, f"{where}: closed with {len(closes)} close events"
        last = events[-1]
        assert closes[0] is last, f"{where}: the close event is not last"
        assert st.close_event_id == last.event_id
        assert st.close_event == last.SerializeToString()
        assert st.close_status == _CLOSE_STATUS_BY_FIELD[_field(last)], f"{where}: close status"
        assert st.decision is None, f"{where}: a closed run keeps a decision"
        assert not st.decision_backoff_ns, f"{where}: a closed run keeps a decision backoff"
        assert not st.buffered, f"{where}: a closed run keeps buffered events"
        if _field(last) == "workflow_execution_continued_as_new_event_attributes":
            new = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            assert st.continued_run_id == new
    _check_decision_state(run, where)
    _check_pending(run, where)


def _check_decision_state(run: RunView, where: str) -> None:
    events, st = run.events, run.state
    last_completed_started = EMPTY_EVENT_ID
    pending_scheduled: int | None = None
    pending_started: int | None = None
    for e in events:
        f = _field(e)
        if f == "decision_task_scheduled_event_attributes":
            pending_scheduled = e.event_id
        elif f == "decision_task_started_event_attributes":
            pending_started = e.event_id
        elif f in _DECISION_END:
            pending_scheduled = pending_started = None
            if f == "decision_task_completed_event_attributes":
                last_completed_started = e.decision_task_completed_event_attributes.started_event_id
        elif f in CLOSE_FIELDS:
            pending_scheduled = pending_started = None
    assert st.last_processed_event == last_completed_started, f"{where}: last_processed_event"
    if st.buffered:
        assert st.decision is not None, f"{where}: events buffered without a decision"
        assert st.decision.started_id != EMPTY_EVENT_ID, f"{where}: buffered, none in flight"
    d = st.decision
    if st.decision_backoff_ns:
        # A backoff holds a scheduled decision back (engine/execution/decision_backoff.py).
        assert d is not None, f"{where}: a decision backoff without a decision"
        assert d.started_id == EMPTY_EVENT_ID, f"{where}: a decision started during its backoff"
        assert d.scheduled_ns == st.decision_backoff_ns, f"{where}: backoff and schedule differ"
        assert st.decision_failures > 0, f"{where}: a backoff without failures"
    if d is None:
        assert pending_scheduled is None, f"{where}: history has decision {pending_scheduled}"
        return
    assert st.is_open
    if d.attempt == 0:
        assert d.schedule_id == pending_scheduled, (
            f"{where}: state decision {d.schedule_id}, history {pending_scheduled}"
        )
        if d.started_id == EMPTY_EVENT_ID:
            assert pending_started is None
        else:
            assert d.started_id == pending_started == events[-1].event_id, (
                f"{where}: started decision {d.started_id} is not the last event"
            )
    else:
        # Transient: nothing of it is persisted; its ids are the next two.
        assert pending_scheduled is None, f"{where}: transient decision with a persisted one"
        assert d.schedule_id == st.next_event_id, f"{where}: transient decision ids"
        assert d.started_id in (EMPTY_EVENT_ID, d.schedule_id + 1)


def _check_pending(run: RunView, where: str) -> None:
    """Pending activities, timers, signals and cancel requests agree with the history."""
    st = run.state
    activities: dict[int, str] = {}
    timers: dict[str, int] = {}
    signals = 0
    cancel_requests = 0
    for e in run.effective:
        f = _field(e)
        attrs = getattr(e, f)
        if f == "activity_task_scheduled_event_attributes":
            activities[e.event_id] = attrs.activity_id
        elif f in _ACTIVITY_END:
            activities.pop(attrs.scheduled_event_id, None)
        elif f == "timer_started_event_attributes":
            timers[attrs.timer_id] = e.event_id
        elif f in ("timer_fired_event_attributes", "timer_canceled_event_attributes"):
            timers.pop(attrs.timer_id, None)
        elif f == "workflow_execution_signaled_event_attributes":
            signals += 1
        elif f == "workflow_execution_cancel_requested_event_attributes":
            cancel_requests += 1
    assert st.signal_count == signals, f"{where}: signal_count {st.signal_count} != {signals}"
    # Signals are deduplicated by request id within a run.
    request_ids = [
        e.workflow_execution_signaled_event_attributes.request_id
        for e in run.effective
        if _field(e) == "workflow_execution_signaled_event_attributes"
    ]
    assert len(set(request_ids) - {""}) == len([r for r in request_ids if r]), (
        f"{where}: a signal request id was applied twice"
    )
    assert cancel_requests <= 1, f"{where}: {cancel_requests} cancel requests"
    assert st.cancel_requested == (cancel_requests == 1), f"{where}: cancel_requested"
    if not st.is_open:
        return
    assert {k: v.activity_id for k, v in st.activities.items()} == activities, (
        f"{where}: pending activities {sorted(st.activities)} != history {sorted(activities)}"
    )
    assert {k: v.started_id for k, v in st.timers.items()} == timers, (
        f"{where}: pending timers {st.timers} != history {timers}"
    )


async def check_shard(driver: ShardDriver, workflow_ids: list[str]) -> dict[str, RunView]:
    """Read every run back and check it, the shard-wide rules, and every reply so far."""
    runs = await read_runs(driver, workflow_ids)
    by_id = {r.run_id: r for r in runs}
    for run in runs:
        check_run(run)
        # Mutable state round-trips through its codec.
        assert decode_state(encode_state(run.state)) == run.state
    # No event twice: task ids are unique across the shard.
    all_ids = [e.task_id for r in runs for e in r.events]
    assert len(all_ids) == len(set(all_ids)), "an event was written twice"
    open_rows = {
        (k.workflow_id, k.run_id) async for page in driver.store.open_runs(SHARD_ID) for k in page
    }
    assert open_rows == {(r.workflow_id, r.run_id) for r in runs if r.state.is_open}
    for wf in workflow_ids:
        mine = [r for r in runs if r.workflow_id == wf]
        cur = await driver.store.get_current_run(SHARD_ID, DOMAIN_ID, wf)
        if not mine:
            assert cur is None, f"{wf}: current run {cur} without runs"
            continue
        assert cur is not None, f"{wf}: runs but no current run"
        # One open run at most per workflow id, and it is the current one.
        open_runs = [r.run_id for r in mine if r.state.is_open]
        assert len(open_runs) <= 1, f"{wf}: open runs {open_runs}"
        current = by_id[cur.run_id]
        assert current.workflow_id == wf
        if open_runs:
            assert open_runs == [cur.run_id], f"{wf}: open run {open_runs} is not current"
        assert cur.close_status == current.state.close_status
        assert cur.create_request_id == current.state.create_request_id
        # The current run is the newest run of the workflow id.
        assert max(mine, key=lambda r: driver.run_ids.issued.index(r.run_id)) is current
    for run in runs:
        if run.state.continued_run_id:
            nxt = by_id.get(run.state.continued_run_id)
            assert nxt is not None, f"{run.run_id}: continued as a run that does not exist"
            attrs = nxt.events[0].workflow_execution_started_event_attributes
            assert attrs.continued_execution_run_id == run.run_id
            assert nxt.state.first_execution_run_id == run.state.first_execution_run_id
    check_children(runs, by_id)
    check_replies(driver, by_id)
    return by_id


_CHILD_CLOSE_STATUS = {
    "child_workflow_execution_completed_event_attributes": 1,
    "child_workflow_execution_failed_event_attributes": 2,
    "child_workflow_execution_canceled_event_attributes": 3,
    "child_workflow_execution_terminated_event_attributes": 4,
    "child_workflow_execution_timed_out_event_attributes": 6,
}


def check_children(runs: list[RunView], by_id: dict[str, RunView]) -> None:
    """Parents and children name each other consistently."""
    for run in runs:
        p = run.state.parent
        if p is None:
            continue
        initiator = by_id.get(p.run_id)
        assert initiator is not None, f"{run.run_id}: parent {p.run_id} does not exist"
        initiated = initiator.events[p.initiated_id - 1]
        attrs = initiated.start_child_workflow_execution_initiated_event_attributes
        assert attrs.workflow_id == run.workflow_id, f"{run.run_id}: not initiated by its parent"
    for parent in runs:
        for e in parent.effective:
            f = _field(e)
            if f == "child_workflow_execution_started_event_attributes":
                run_id = (
                    e.child_workflow_execution_started_event_attributes.workflow_execution.run_id
                )
                child = by_id.get(run_id)
                assert child is not None, f"{parent.run_id}: started child {run_id} is missing"
                assert child.state.parent is not None
                assert child.state.parent.run_id == parent.run_id
                assert child.state.parent.initiated_id == (
                    e.child_workflow_execution_started_event_attributes.initiated_event_id
                )
            elif f in _CHILD_CLOSE_STATUS:
                run_id = getattr(e, f).workflow_execution.run_id
                child = by_id.get(run_id)
                assert child is not None, f"{parent.run_id}: closed child {run_id} is missing"
                assert child.state.close_status == _CHILD_CLOSE_STATUS[f], (
                    f"{parent.run_id}: child {run_id} closed as {child.state.close_status}, "
                    f"parent recorded {f}"
                )


def _events_of(run: RunView, f: str) -> list[Any]:
    return [getattr(e, f) for e in run.effective if e.WhichOneof("attributes") == f]


def check_replies(driver: ShardDriver, runs: dict[str, RunView]) -> None:
    """Replies agree with what the runs recorded."""
    assert sorted(driver.replies) == list(range(driver.applied_offset)), "a record lost its reply"
    decision_winners: dict[tuple[str, int, int], str] = {}
    decision_answers: dict[tuple[str, int, int, str], dict[str, Any]] = {}
    activity_winners: dict[tuple[str, int, int], str] = {}
    # Commands carry identity "rec-<offset>": none may write the same kind of event twice.
    identities: dict[tuple[str, str], int] = {}
    for run in runs.values():
        for e in run.effective:
            f = _field(e)
            ident = getattr(getattr(e, f), "identity", "")
            if ident.startswith("rec-") and f.startswith("workflow_execution_"):
                identities[(f, ident)] = identities.get((f, ident), 0) + 1
    for (f, ident), n in identities.items():
        assert n == 1, f"the command {ident} wrote {n} {f} events"
    for offset in driver.reply_order:
        reply = driver.replies[offset]
        cmd = driver.command(offset)
        a = cmd.args
        where = f"record {offset} ({cmd.kind})"
        if not reply.ok:
            assert reply.error_kind in ALLOWED_ERRORS[cmd.kind], (
                f"{where}: {reply.error_kind}: {reply.error_message}"
            )
            continue
        v = reply.values
        if cmd.kind in (CommandKind.START, CommandKind.SIGNAL_WITH_START):
            assert v["run_id"] in runs, f"{where}: no run {v['run_id']}"
            run = runs[v["run_id"]]
            assert run.workflow_id == cmd.workflow_id, where
            if cmd.kind == CommandKind.START:
                start = service_workflow_pb2.StartWorkflowExecutionRequest.FromString(cmd.request)
                assert run.state.create_request_id == start.request_id, where
        elif cmd.kind == CommandKind.RECORD_DECISION_STARTED:
            run = runs[v["run_id"]]
            key = (v["run_id"], a["schedule_id"], a["attempt"])
            assert (v["schedule_id"], v["attempt"]) == (a["schedule_id"], a["attempt"]), where
            # One poller wins a decision task; its retry gets the same answer.
            winner = decision_winners.setdefault(key, a["request_id"])
            assert winner == a["request_id"], f"{where}: started twice ({winner})"
            first = decision_answers.setdefault((*key, a["request_id"]), v)
            assert first == v, f"{where}: a retried poll got another answer"
            if a["attempt"] == 0:
                assert v["next_event_id"] == v["started_id"] + 1, where
                ev = run.events[v["started_id"] - 1]
                assert ev.decision_task_started_event_attributes.request_id == a["request_id"]
                assert (
                    ev.decision_task_started_event_attributes.scheduled_event_id
                    == (a["schedule_id"])
                )
            else:
                assert v["next_event_id"] == v["schedule_id"], where
                assert v["started_id"] == v["schedule_id"] + 1, where
            prev = EMPTY_EVENT_ID
            for e in run.events[: v["schedule_id"] - 1]:
                if e.WhichOneof("attributes") == "decision_task_completed_event_attributes":
                    prev = e.decision_task_completed_event_attributes.started_event_id
            assert v["previous_started_event_id"] == prev, f"{where}: previous started id"
        elif cmd.kind == CommandKind.DECISION_COMPLETED and a["attempt"] == 0:
            run = runs[cmd.run_id]
            ends = [
                x
                for f in _DECISION_END
                for x in _events_of(run, f)
                if x.scheduled_event_id == a["schedule_id"]
            ]
            assert len(ends) == 1, f"{where}: {len(ends)} ends of decision {a['schedule_id']}"
            if driver.meta.get(offset, {}).get("expect_failure"):
                failed = _events_of(run, "decision_task_failed_event_attributes")
                assert any(x.scheduled_event_id == a["schedule_id"] for x in failed), (
                    f"{where}: an invalid decision list was accepted"
                )
        elif cmd.kind == CommandKind.DECISION_FAILED and a["attempt"] == 0:
            run = runs[cmd.run_id]
            failed = [
                x
                for x in _events_of(run, "decision_task_failed_event_attributes")
                if x.scheduled_event_id == a["schedule_id"]
            ]
            assert len(failed) == 1, where
        elif cmd.kind == CommandKind.RECORD_ACTIVITY_STARTED:
            run = runs[v["run_id"]]
            key = (v["run_id"], a["schedule_id"], a["attempt"])
            winner = activity_winners.setdefault(key, a["request_id"])
            assert winner == a["request_id"], f"{where}: activity started twice ({winner})"
            for x in _events_of(run, "activity_task_started_event_attributes"):
                if (x.scheduled_event_id, x.attempt) == (a["schedule_id"], a["attempt"]):
                    assert x.request_id == a["request_id"], where
        elif cmd.kind == CommandKind.ACTIVITY_COMPLETED and "schedule_id" in a:
            run = runs[cmd.run_id]
            done = [
                x
                for x in _events_of(run, "activity_task_completed_event_attributes")
                if x.scheduled_event_id == a["schedule_id"]
            ]
            assert len(done) == 1, where
        elif cmd.kind == CommandKind.SIGNAL:
            run = runs[v["run_id"]]
            sig = [
                x
                for x in _events_of(run, "workflow_execution_signaled_event_attributes")
                if x.identity == f"rec-{offset}"
            ]
            assert len(sig) <= 1, where
            if driver.meta.get(offset, {}).get("fresh_request"):
                assert len(sig) == 1, f"{where}: an accepted signal wrote no event"
        elif cmd.kind == CommandKind.TERMINATE:
            run = runs[v["run_id"]]
            last = run.events[-1]
            assert last.WhichOneof("attributes") == "workflow_execution_terminated_event_attributes"
            stop = service_workflow_pb2.TerminateWorkflowExecutionRequest.FromString(cmd.request)
            assert last.workflow_execution_terminated_event_attributes.identity == stop.identity
        elif cmd.kind == CommandKind.REQUEST_CANCEL:
            # Accepted: it made the run's one cancel request, or repeated its request id.
            run = runs[v["run_id"]]
            req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest.FromString(cmd.request)
            (made,) = _events_of(run, "workflow_execution_cancel_requested_event_attributes")
            assert made.request_id == req.request_id, f"{where}: a second cancel was accepted"
