"""The timer window misses nothing that happens while its index query is in flight: a timer
stored meanwhile (the query may have read the index before it was written), or time moving
past a timer's due time (the wait for it must not be measured from before the query)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.clock import ManualClock
from engine.model.tasks import TimerKind, TimerTask, encode_task
from engine.persistence.protocols import TimerRow
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.inprocess import InProcessTaskLog
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC
from engine.timer.processor import _Gate


class SlowIndex(SqliteStore):
    """The first index query reads, then waits: rows written meanwhile are not in its answer."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def due_timers(self, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
        rows = await super().due_timers(shard_id, upto_ns, limit)
        if not self.reading.is_set():
            self.reading.set()
            await self.release.wait()
        return rows


async def test_a_timer_offered_during_a_reload_is_kept(tmp_path: Path) -> None:
    store = SlowIndex(str(tmp_path / "t.db"))
    await store.start()
    log = InProcessTaskLog(store, {COMMAND_TOPIC: 1, TIMER_TOPIC: 1})
    await log.start()
    clock = ManualClock()
    gate = _Gate(0, store, log, clock, 60.0, None)
    runner = asyncio.create_task(gate.run())
    try:
        await store.reading.wait()
        row = TimerRow(fire_ns=clock.now_ns() + 1_000_000_000, task_id=7, value=b"v")
        await store.put_timers(0, [row])
        gate.offer([row])
        store.release.set()
        await asyncio.sleep(0.1)
        assert 7 in gate.ids
        assert [item[1] for item in gate.heap] == [7]
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await log.stop()
        await store.stop()


async def test_a_timer_that_falls_due_during_a_reload_fires(tmp_path: Path) -> None:
    store = SlowIndex(str(tmp_path / "t.db"))
    await store.start()
    log = InProcessTaskLog(store, {COMMAND_TOPIC: 1, TIMER_TOPIC: 1})
    await log.start()
    clock = ManualClock()
    due = clock.now_ns() + 5_000_000_000
    task = TimerTask(
        task_id=9,
        kind=TimerKind.ACTIVITY_RETRY,
        fire_ns=due,
        domain_id="d",
        workflow_id="w",
        run_id="r",
    )
    await store.put_timers(0, [TimerRow(fire_ns=due, task_id=9, value=encode_task(task))])
    gate = _Gate(0, store, log, clock, 60.0, None)
    runner = asyncio.create_task(gate.run())
    try:
        await store.reading.wait()
        clock.advance(5)  # due now, while the query that found the timer is still running
        store.release.set()
        for _ in range(100):
            if not await store.due_timers(0, due, 10):
                break
            await asyncio.sleep(0.02)
        assert await store.due_timers(0, due, 10) == [], "the due timer did not fire"
        assert log.end_offset(COMMAND_TOPIC, 0) == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await log.stop()
        await store.stop()
