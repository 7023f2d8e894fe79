"""The timer processor's durable index on Cassandra (the `TimerStore` half of the store).

One partition per shard of the `timers` table holds two rows per timer: a kind-0 row ordered
by (fire_ns, task_id) that `due_timers` range-scans, and a kind-1 row keyed by task_id that
makes `put_timers` idempotent per task (an existing task id keeps its row, whatever fire time a
replay carries) and lets `delete_timers` find a timer by id. Both rows of a timer are written
or deleted in one single-partition batch, which Cassandra applies atomically.

`put_timers` checks which task ids exist and then inserts the rest; that read-then-write is
not isolated, so it relies on the timer processor being the shard's only writer (two
concurrent puts of one task id with different fire times could both insert).
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.persistence.cassandra.aio import CqlSession, batch_add, unlogged_batch
from engine.persistence.cassandra.cql import TIMER_DUE, TIMER_INDEX, Statements
from engine.persistence.protocols import TimerRow

# Task ids per IN lookup, and timers per batch (each timer is two small rows; batches stay
# far below max_mutation_size).
_LOOKUP_CHUNK = 200
_BATCH_TIMERS = 200


def _chunks(items: Sequence[int], size: int) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Timers:
    def __init__(self, db: CqlSession, st: Statements) -> None:
        self._db = db
        self._st = st

    async def _indexed(self, shard_id: int, task_ids: Sequence[int]) -> dict[int, int]:
        """task_id -> fire_ns of the timers of `task_ids` that exist."""
        found: dict[int, int] = {}
        for chunk in _chunks(sorted(set(task_ids)), _LOOKUP_CHUNK):
            rows = await self._db.execute(self._st.select_timer_index, (shard_id, list(chunk)))
            found.update((task_id, fire_ns) for task_id, fire_ns in rows)
        return found

    async def put_timers(self, shard_id: int, timers: Sequence[TimerRow]) -> None:
        if not timers:
            return
        existing = await self._indexed(shard_id, [t.task_id for t in timers])
        fresh: dict[int, TimerRow] = {}
        for t in timers:
            # The first of duplicates in one call wins, as with SQLite's INSERT OR IGNORE.
            if t.task_id not in existing and t.task_id not in fresh:
                fresh[t.task_id] = t
        rows = list(fresh.values())
        for start in range(0, len(rows), _BATCH_TIMERS):
            batch = unlogged_batch()
            for t in rows[start : start + _BATCH_TIMERS]:
                batch_add(batch, self._st.insert_timer, (shard_id, t.fire_ns, t.task_id, t.value))
                batch_add(batch, self._st.insert_timer_index, (shard_id, t.task_id, t.fire_ns))
            await self._db.execute(batch)

    async def due_timers(self, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
        if limit < 1:
            return []
        rows = await self._db.execute(self._st.select_due_timers, (shard_id, upto_ns, limit))
        return [TimerRow(fire_ns=r[0], task_id=r[1], value=r[2] or b"") for r in rows]

    async def delete_timers(self, shard_id: int, task_ids: Sequence[int]) -> None:
        if not task_ids:
            return
        existing = sorted((await self._indexed(shard_id, task_ids)).items())
        for start in range(0, len(existing), _BATCH_TIMERS):
            batch = unlogged_batch()
            for task_id, fire_ns in existing[start : start + _BATCH_TIMERS]:
                batch_add(batch, self._st.delete_timer, (shard_id, TIMER_DUE, fire_ns, task_id))
                batch_add(batch, self._st.delete_timer, (shard_id, TIMER_INDEX, 0, task_id))
            await self._db.execute(batch)
