"""Shard loop under poison commands: a command whose write the store refuses (injected by
subclassing the real SqliteStore) or whose changes cannot be encoded (injected into the
handler: the engine clamps every time it derives, so no request value gets there any more) is
answered with a typed error and skipped, the rest of its batch is written and answered, and
the shard goes on without stalling its other runs. Commands are built directly, as the
frontend would, so the shard is tested even for values the frontend refuses or clamps (one
may already sit in a durable log: such starts are applied, with their times clamped).

Pauses are recorded instead of slept (`RecordingController`), so the tests assert how long
the loop chose to wait, not how long the machine took.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_workflow_pb2,
    tasklist_pb2,
)
from google.protobuf import duration_pb2

from engine.clock import ManualClock
from engine.errors import (
    BadRequestError,
    ConditionFailedError,
    InternalServiceError,
    PersistenceError,
    ServiceError,
    error_from_kind,
)
from engine.execution.protos import MAX_DURATION_SECONDS
from engine.history.batch import Batch
from engine.history.engine import FAILED_MESSAGE, UNSTORABLE_MESSAGE, Handler, ShardEngine
from engine.history.handlers import dispatch
from engine.model.commands import Command, CommandKind, Reply, encode_command
from engine.model.state import decode_state
from engine.persistence.protocols import ShardWrite
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.inprocess import InProcessTaskLog
from engine.queues.protocols import Record
from engine.routing.bus import CommandBus
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC
from engine.shards.context import ShardContext
from engine.shards.controller import ShardController

POISON = "poison-wf"
YEAR_S = 365 * 86400
# Past 2**64 - 1 ns from now: once, the run's state could not even be encoded.
THOUSAND_YEARS_S = 1000 * YEAR_S
# Past int64 but below 2**64 ns: once, a timer no store's timer index can hold.
TWO_HUNDRED_EIGHTY_YEARS_S = 280 * YEAR_S
# Workflow ids whose commands the handler corrupts (see `corrupting`).
UNENCODABLE = "unencodable"
FAR_TIMER = "far-timer"


class PoisonStore(SqliteStore):
    """Fault injection: every write that touches a poison workflow fails the same way."""

    failed_writes = 0

    async def write_shard(self, write: ShardWrite) -> None:
        if any(run.workflow_id.startswith(POISON) for run in write.runs):
            self.failed_writes += 1
            raise ConditionFailedError("injected: condition never holds")
        try:
            await super().write_shard(write)
        except Exception:
            self.failed_writes += 1
            raise


class FlakyStore(SqliteStore):
    """Fault injection: the first `outages` writes fail as a store outage does."""

    outages = 0
    writes = 0

    async def write_shard(self, write: ShardWrite) -> None:
        self.writes += 1
        if self.writes <= self.outages:
            raise PersistenceError("injected: store unreachable")
        await super().write_shard(write)


class RecordingController(ShardController):
    """Records the loop's pauses instead of sleeping them."""

    pauses: list[float]

    async def _pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        await asyncio.sleep(0)


@dataclass
class Shard:
    store: Any
    log: InProcessTaskLog
    bus: CommandBus
    controller: RecordingController

    @property
    def pauses(self) -> list[float]:
        return self.controller.pauses

    def submit(self, cmds: Sequence[Command]) -> list[asyncio.Future[Reply]]:
        """Expect the replies of `cmds`; `put` then appends them to the log."""
        futures = []
        for cmd in cmds:
            cmd.reply_to = self.bus.node_id
            cmd.reply_key = self.bus.new_key()
            futures.append(self.bus.expect(cmd.reply_key))
        return futures

    async def put(self, cmds: Sequence[Command]) -> None:
        """Append `cmds` in one produce: a shard that is not yet reading takes them as one
        batch."""
        await self.log.produce(COMMAND_TOPIC, 0, [encode_command(c) for c in cmds])


@asynccontextmanager
async def shard(
    path: Path,
    store_cls: type[SqliteStore] = SqliteStore,
    *,
    running: bool = True,
    handle: Handler = dispatch,
) -> AsyncIterator[Shard]:
    store = store_cls(str(path))
    await store.start()
    log = InProcessTaskLog(store, {COMMAND_TOPIC: 1, TRANSFER_TOPIC: 1, TIMER_TOPIC: 1})
    await log.start()
    bus = CommandBus(log, 1, "node", timeout=30)
    clock = ManualClock()

    def new_engine(ctx: ShardContext, applied_offset: int) -> ShardEngine:
        return ShardEngine(ctx, applied_offset, store, clock, frozenset(), handle)

    controller = RecordingController(store, log, bus, "node", new_engine)
    controller.pauses = []
    s = Shard(store, log, bus, controller)
    try:
        if running:
            await controller.start()
        yield s
    finally:
        await controller.stop()
        await log.stop()
        await store.stop()


def _start(workflow_id: str, timeout_s: int = 60) -> Command:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain="d",
        workflow_id=workflow_id,
        workflow_type=common_pb2.WorkflowType(name="t"),
        task_list=tasklist_pb2.TaskList(name="tl"),
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=timeout_s),
        task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
        request_id=str(uuid.uuid4()),
    )
    return Command(
        kind=CommandKind.START,
        domain_id="domain-id",
        workflow_id=workflow_id,
        request=req.SerializeToString(),
    )


def _signal(workflow_id: str, name: str) -> Command:
    req = service_workflow_pb2.SignalWorkflowExecutionRequest(
        domain="d",
        workflow_execution=common_pb2.WorkflowExecution(workflow_id=workflow_id),
        signal_name=name,
        request_id=str(uuid.uuid4()),
    )
    return Command(
        kind=CommandKind.SIGNAL,
        domain_id="domain-id",
        workflow_id=workflow_id,
        request=req.SerializeToString(),
    )


def _outcome(reply: Reply) -> ServiceError | None:
    if reply.ok:
        return None
    return error_from_kind(reply.error_kind, reply.error_message, **reply.error_fields)


def _assert_refused(reply: Reply) -> None:
    """The typed answer to a command the store cannot take: no internals, not retryable."""
    err = _outcome(reply)
    assert isinstance(err, BadRequestError), reply
    assert err.message == UNSTORABLE_MESSAGE
    for internal in ("Error", "injected", "int", "serialize"):
        assert internal not in err.message


async def _signal_names(store: SqliteStore, workflow_id: str) -> list[str]:
    cur = await store.get_current_run(0, "domain-id", workflow_id)
    assert cur is not None
    batches = await store.read_history("domain-id", workflow_id, cur.run_id, 1, 1000)
    events = [e for b in batches for e in history_pb2.History.FromString(b.events).events]
    return [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]


async def test_a_command_that_always_fails_is_skipped_and_the_shard_goes_on(tmp_path: Path) -> None:
    async with shard(tmp_path / "c.db", PoisonStore) as s:
        poisoned = asyncio.ensure_future(s.bus.call(_start(POISON)))
        good = asyncio.ensure_future(s.bus.call(_start("good-wf")))
        with pytest.raises(BadRequestError) as caught:
            await poisoned
        # A fixed message: nothing of the store's exception reaches the caller.
        assert caught.value.message == UNSTORABLE_MESSAGE
        values = await good
        assert values["run_id"]
        assert await s.store.get_current_run(0, "domain-id", "good-wf") is not None
        assert await s.store.get_current_run(0, "domain-id", POISON) is None
        shard_info = await s.store.get_shard(0)
        assert shard_info is not None
        assert shard_info.applied_offset == 2  # both commands are behind the shard now


async def test_a_refused_command_is_isolated_at_once_and_its_batch_is_written(
    tmp_path: Path,
) -> None:
    """One refused command among 40 in one batch: the batch is bisected with no pause, the
    39 healthy starts are written and answered, and the poison is tried only a few times."""
    async with shard(tmp_path / "c.db", PoisonStore, running=False) as s:
        cmds = [_start(f"good-{i}") for i in range(40)]
        cmds[17] = _start(POISON)
        replies = s.submit(cmds)
        await s.put(cmds)
        await s.controller.start()
        done = await asyncio.gather(*replies)
        for i, reply in enumerate(done):
            if i == 17:
                _assert_refused(reply)
            else:
                assert reply.ok, reply
                assert await s.store.get_current_run(0, "domain-id", f"good-{i}") is not None
        # Bisection (40 -> 20 -> 10 -> 5 -> 2 -> 1) and the poison's own attempts.
        assert s.store.failed_writes <= 8
        # Only the poison's own retries pause, and briefly: no backoff for a refusal.
        assert len(s.pauses) <= 2
        assert sum(s.pauses) <= 0.2
        info = await s.store.get_shard(0)
        assert info is not None
        assert info.applied_offset == 40


async def test_poison_commands_in_a_row_do_not_accumulate_backoff(tmp_path: Path) -> None:
    """Each of K poison commands costs what the first did: the pause is reset after a skip,
    so K of them do not stall the healthy commands behind them for K x seconds."""
    k = 5
    async with shard(tmp_path / "c.db", PoisonStore) as s:
        for i in range(k):
            with pytest.raises(BadRequestError):
                await s.bus.call(_start(f"{POISON}-{i}"))
            pauses = list(s.pauses)
            # The same short pauses before every skip, never more than the first one's.
            assert sum(pauses) <= 0.2 * (i + 1), pauses
            assert max(pauses) <= 0.1, pauses
        values = await s.bus.call(_start("good-after"))
        assert values["run_id"]


async def test_a_poisoned_shard_keeps_serving_its_other_runs(tmp_path: Path) -> None:
    """Several runs of one shard are signalled while poison commands arrive (refused by the
    store) and starts with times past what a store holds (recorded before the frontend
    clamped them); every signal lands, every poison is refused, the far starts are applied
    with their times clamped, and nothing stored before is lost."""
    async with shard(tmp_path / "c.db", PoisonStore) as s:
        runs = [f"run-{i}" for i in range(6)]
        for wid in runs:
            await s.bus.call(_start(wid))
        calls: list[Any] = []
        poisons: list[Any] = []
        for round_ in range(3):
            calls += [s.bus.call(_signal(wid, f"sig-{round_}")) for wid in runs]
            poisons.append(s.bus.call(_start(f"{POISON}-{round_}")))
            poisons.append(s.bus.call(_start(f"huge-{round_}", THOUSAND_YEARS_S)))
            poisons.append(s.bus.call(_start(f"far-{round_}", TWO_HUNDRED_EIGHTY_YEARS_S)))
            poisons.append(s.bus.call(_signal(f"{POISON}-never-started", "x")))
        results = await asyncio.gather(*calls, *poisons, return_exceptions=True)
        signals, refused = results[: len(calls)], results[len(calls) :]
        assert [r for r in signals if not isinstance(r, dict)] == []
        for i, r in enumerate(refused):
            if i % 4 == 3:
                # A signal to a run that never started: refused by the handler as usual.
                assert type(r).__name__ == "EntityNotExistsError", r
            elif i % 4 == 0:
                assert isinstance(r, BadRequestError), r
                assert r.message == UNSTORABLE_MESSAGE
            else:
                assert isinstance(r, dict), r
                assert r["run_id"]
        for wid in runs:
            assert await _signal_names(s.store, wid) == [f"sig-{n}" for n in range(3)]
        for round_ in range(3):
            assert await s.store.get_current_run(0, "domain-id", f"{POISON}-{round_}") is None
            for prefix in ("huge", "far"):
                cur = await s.store.get_current_run(0, "domain-id", f"{prefix}-{round_}")
                assert cur is not None
                snap = await s.store.get_run(0, "domain-id", f"{prefix}-{round_}", cur.run_id)
                assert snap is not None
                assert decode_state(snap.state).execution_timeout_s == MAX_DURATION_SECONDS
        info = await s.store.get_shard(0)
        assert info is not None
        assert info.applied_offset == len(runs) + len(calls) + len(poisons)


async def corrupting(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    """The real handler, then a bug's damage for the commands of two workflow ids: a state
    value msgspec cannot encode, and a timer past int64 (msgspec encodes it; no store's
    timer index can hold it)."""
    values = await dispatch(engine, batch, cmd)
    if cmd.workflow_id == UNENCODABLE:
        for (_, workflow_id, _), entry in batch.runs.items():
            if workflow_id == UNENCODABLE:
                entry.state.signal_count = 2**70
    if cmd.workflow_id == FAR_TIMER:
        for tm in batch.timers:
            if tm.workflow_id == FAR_TIMER:
                tm.fire_ns = 2**63 + 5
    return values


async def test_an_unencodable_command_fails_alone_without_failing_its_batch(tmp_path: Path) -> None:
    """A start whose state cannot be encoded, amid healthy starts in one batch, written
    through the real SqliteStore: it is answered with a typed error and the batch's write
    does not fail at all."""
    async with shard(tmp_path / "c.db", PoisonStore, running=False, handle=corrupting) as s:
        cmds = [_start(f"good-{i}") for i in range(10)]
        cmds[4] = _start(UNENCODABLE)
        replies = s.submit(cmds)
        await s.put(cmds)
        await s.controller.start()
        done = await asyncio.gather(*replies)
        _assert_refused(done[4])
        assert all(r.ok for i, r in enumerate(done) if i != 4)
        assert s.store.failed_writes == 0
        assert s.pauses == []
        assert await s.store.get_current_run(0, "domain-id", UNENCODABLE) is None


async def test_a_timer_past_int64_is_refused_before_it_reaches_the_outbox(tmp_path: Path) -> None:
    """A timer whose deadline encodes (below 2**64 ns) but is past int64 would reach the
    outbox, and no store's timer index can hold it (a 280-year timeout did that before times
    were clamped). It is refused with its command, and nothing of it is stored."""
    async with shard(tmp_path / "c.db", PoisonStore, running=False, handle=corrupting) as s:
        cmds = [_start("good-0"), _start(FAR_TIMER), _start("good-1")]
        replies = s.submit(cmds)
        await s.put(cmds)
        await s.controller.start()
        done = await asyncio.gather(*replies)
        _assert_refused(done[1])
        assert done[0].ok
        assert done[2].ok
        assert s.store.failed_writes == 0
        assert await s.store.get_current_run(0, "domain-id", FAR_TIMER) is None
        outbox = await s.store.read_outbox(0, 0)
        assert outbox  # the healthy starts' tasks
        assert all(t.task_id for t in outbox)


async def test_a_store_outage_is_waited_out_never_skipped(tmp_path: Path) -> None:
    """Retryable failures back off (doubling) and the command is applied once the store is
    back, however many attempts that took: an outage is never a reason to skip."""

    class Down(FlakyStore):
        outages = 9

    async with shard(tmp_path / "c.db", Down) as s:
        values = await s.bus.call(_start("good-wf"))
        assert values["run_id"]
        assert len(s.pauses) == 9
        assert s.pauses == sorted(s.pauses)
        assert s.pauses[-1] == 2.0  # capped
        assert await s.store.get_current_run(0, "domain-id", "good-wf") is not None


async def test_a_command_whose_handler_crashes_hears_no_internals(tmp_path: Path) -> None:
    """A handler's unexpected exception is answered with a fixed INTERNAL message, its
    changes are rolled back, and its traceback is logged once, even when its batch is
    applied again after the store refused another command of it."""
    store = PoisonStore(str(tmp_path / "c.db"))
    await store.start()
    try:
        info = await store.acquire_shard(0, "node")

        async def handle(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
            values = await dispatch(engine, batch, cmd)
            if cmd.workflow_id == "crash":
                raise RuntimeError("secret: hunter2")
            return values

        cmds = [_start("good"), _start("crash"), _start(POISON)]
        for i, cmd in enumerate(cmds):
            cmd.reply_key = f"k{i}"
        records = [Record(COMMAND_TOPIC, 0, i, encode_command(cmd)) for i, cmd in enumerate(cmds)]
        with structlog.testing.capture_logs() as logs:
            engine = ShardEngine(
                ShardContext(0, info.range_id),
                info.applied_offset,
                store,
                ManualClock(),
                frozenset(),
                handle,
            )
            with pytest.raises(ConditionFailedError):
                await engine.apply_batch(records)
            result = await engine.apply_batch(records[:2])
        good, crash = (reply for _, reply in result.replies)
        assert good.ok
        err = _outcome(crash)
        assert isinstance(err, InternalServiceError)
        assert err.message == FAILED_MESSAGE
        assert "hunter2" not in err.message
        assert await store.get_current_run(0, "domain-id", "crash") is None
        assert await store.get_current_run(0, "domain-id", "good") is not None
        events = [e for e in logs if e["event"] == "command_failed"]
        assert len(events) == 1
        assert events[0]["exc_info"] is True
        assert events[0]["log_level"] == "error"
        assert (events[0]["offset"], events[0]["kind"], events[0]["workflow_id"]) == (
            1,
            CommandKind.START,
            "crash",
        )
    finally:
        await store.stop()
