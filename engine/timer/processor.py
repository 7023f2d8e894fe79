"""TimerProcessor: makes timer tasks fire once, close to their due time, across restarts.

Timer tasks arrive on the timer topic. The processor stores them in the durable timer index
(`TimerStore`, ordered by due time) and commits the topic offset; only the timers due within
the next window are held in memory (a heap per shard), so millions of pending timers need not
fit in memory. A due timer becomes a TIMER_FIRED command on the shard's command partition;
its row is deleted only after that produce is durable. A crash in between fires it again, and
the shard ignores a timer that is no longer valid.

Most timers outlive their purpose (a decision or activity timeout of a task that completed, the
timeout of a run that closed). When the shard owner runs in this process, a timer of a run it
knows to be closed is dropped here instead of travelling to the shard as a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Sequence

import structlog

from engine.clock import Clock
from engine.history.views import LocalState
from engine.model.commands import Command, CommandKind, encode_command
from engine.model.tasks import TimerKind, decode_timer
from engine.persistence.protocols import TimerRow, TimerStore
from engine.queues.protocols import Record, TaskLog
from engine.queues.workers import PartitionWorkers
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC

log = structlog.get_logger(__name__)

NS = 1_000_000_000
# Timers that act on closed runs too (none of the others do anything once a run closed).
_ACT_ON_CLOSED = frozenset({TimerKind.DELETE_HISTORY})


class _Gate:
    """The in-memory window of one shard's timers."""

    def __init__(
        self,
        shard_id: int,
        store: TimerStore,
        task_log: TaskLog,
        clock: Clock,
        window_s: float,
        closed: LocalState | None,
    ):
        self.shard_id = shard_id
        self.closed = closed
        self.store = store
        self.log = task_log
        self.clock = clock
        self.window_ns = int(window_s * NS)
        self.heap: list[tuple[int, int, bytes]] = []
        self.ids: set[int] = set()
        self.horizon_ns = 0
        self.wake = asyncio.Event()
        # Rows offered while a reload's index query is in flight (None: no reload running).
        self._reloading: list[TimerRow] | None = None

    def offer(self, rows: Sequence[TimerRow]) -> None:
        if self._reloading is not None:
            # The index query in flight may have missed these rows (written after it read)
            # and the horizon is about to move: offer them again once it has.
            self._reloading.extend(rows)
        earliest = self.heap[0][0] if self.heap else None
        for row in rows:
            if row.fire_ns <= self.horizon_ns and row.task_id not in self.ids:
                heapq.heappush(self.heap, (row.fire_ns, row.task_id, row.value))
                self.ids.add(row.task_id)
        if self.heap and (earliest is None or self.heap[0][0] < earliest):
            self.wake.set()

    async def _reload(self, now: int) -> None:
        limit = 10_000
        horizon = now + self.window_ns
        self._reloading = []
        try:
            rows = await self.store.due_timers(self.shard_id, horizon, limit)
        finally:
            offered_meanwhile, self._reloading = self._reloading, None
        if len(rows) == limit:
            horizon = rows[-1].fire_ns
        self.horizon_ns = horizon
        self.offer(rows)
        self.offer(offered_meanwhile)

    async def run(self) -> None:
        while True:
            now = self.clock.now_ns()
            if now + self.window_ns // 2 >= self.horizon_ns:
                await self._reload(now)
            due: list[tuple[int, int, bytes]] = []
            while self.heap and self.heap[0][0] <= now:
                due.append(heapq.heappop(self.heap))
            if due:
                await self._fire(due)
                continue
            next_ns = self.horizon_ns - self.window_ns // 2
            if self.heap:
                next_ns = min(next_ns, self.heap[0][0])
            self.wake.clear()
            # Until `next_ns`, not for `next_ns - now`: `now` was read before the reload's
            # query, and time moved on while it ran (a clock advanced meanwhile would
            # otherwise put the wake-up past the timer, as far again as it moved).
            sleeper = asyncio.ensure_future(self.clock.sleep_until(next_ns))
            waker = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                waker.cancel()

    async def _fire(self, due: list[tuple[int, int, bytes]]) -> None:
        commands = []
        for _, _, value in due:
            task = decode_timer(value)
            if (
                self.closed is not None
                and task.kind not in _ACT_ON_CLOSED
                and self.closed.known_closed(
                    self.shard_id, (task.domain_id, task.workflow_id, task.run_id)
                )
            ):
                continue
            commands.append(
                encode_command(
                    Command(
                        kind=CommandKind.TIMER_FIRED,
                        domain_id=task.domain_id,
                        workflow_id=task.workflow_id,
                        run_id=task.run_id,
                        args={"task": value},
                    )
                )
            )
        if commands:
            try:
                await self.log.produce(COMMAND_TOPIC, self.shard_id, commands)
            except BaseException:
                # Not fired: back in the window, or they would be lost (their ids stay
                # known, so a reload of the index would not offer them again).
                for item in due:
                    heapq.heappush(self.heap, item)
                raise
        ids = [task_id for _, task_id, _ in due]
        try:
            await self.store.delete_timers(self.shard_id, ids)
        finally:
            # Fired. Should the delete have failed, the next reload finds the rows and fires
            # them again, which the shard ignores (the timer is no longer pending).
            self.ids.difference_update(ids)


class TimerProcessor:
    def __init__(
        self,
        task_log: TaskLog,
        store: TimerStore,
        clock: Clock,
        window_s: float = 60.0,
        closed: LocalState | None = None,
    ) -> None:
        self.closed = closed
        self.log = task_log
        self.store = store
        self.clock = clock
        self.window_s = window_s
        self._gates: dict[int, _Gate] = {}
        self._gate_tasks: dict[int, asyncio.Task[None]] = {}
        self.workers = PartitionWorkers(
            task_log,
            TIMER_TOPIC,
            "cadenza-timer",
            self._ingest,
            on_assigned=self._assigned,
            on_revoked=self._revoked,
        )

    async def start(self) -> None:
        await self.workers.start()

    async def stop(self) -> None:
        await self.workers.stop()

    async def _assigned(self, shard_id: int) -> None:
        gate = _Gate(shard_id, self.store, self.log, self.clock, self.window_s, self.closed)
        self._gates[shard_id] = gate
        self._gate_tasks[shard_id] = asyncio.create_task(self._guard(gate))

    async def _guard(self, gate: _Gate) -> None:
        while True:
            try:
                await gate.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("timer_gate_failed", shard_id=gate.shard_id)
                gate.horizon_ns = 0
                await asyncio.sleep(0.5)

    async def _revoked(self, shard_id: int) -> None:
        self._gates.pop(shard_id, None)
        task = self._gate_tasks.pop(shard_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _ingest(self, shard_id: int, records: Sequence[Record]) -> None:
        rows = []
        for r in records:
            task = decode_timer(r.value)
            rows.append(TimerRow(fire_ns=task.fire_ns, task_id=task.task_id, value=r.value))
        await self.store.put_timers(shard_id, rows)
        gate = self._gates.get(shard_id)
        if gate is not None:
            gate.offer(rows)
