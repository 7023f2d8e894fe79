"""A timer stored while the timer window reloads from the index is not missed (the reload's
query may have read the index before the timer was written)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.clock import ManualClock
from engine.history.bus import COMMAND_TOPIC, TIMER_TOPIC
from engine.persistence.protocols import TimerRow
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.inprocess import InProcessTaskLog
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
