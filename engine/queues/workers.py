"""PartitionWorkers: one loop per owned partition of a topic, for queue processors.

The consumer group decides ownership; a loop starts on assign and is cancelled (and awaited)
on revoke. Each loop hands batches of records to `handle` and commits past them when it
returns: at-least-once, in order per partition. A failed batch is retried from its first
record after a backoff. A failed fetch or commit (the broker restarting) is logged and the
loop goes on: a loop that ended would leave its partition unserved until the next rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from engine.queues.protocols import LogConsumer, Record, TaskLog

log = structlog.get_logger(__name__)

BatchHandler = Callable[[int, Sequence[Record]], Awaitable[None]]
PartitionHook = Callable[[int], Awaitable[None]]


class PartitionWorkers:
    def __init__(
        self,
        task_log: TaskLog,
        topic: str,
        group: str,
        handle: BatchHandler,
        *,
        on_assigned: PartitionHook | None = None,
        on_revoked: PartitionHook | None = None,
        max_records: int = 500,
    ) -> None:
        self.log = task_log
        self.topic = topic
        self.group = group
        self.handle = handle
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self.max_records = max_records
        self._consumer: LogConsumer | None = None
        self._loops: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._consumer = self.log.consumer(self.topic, self.group, self)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        await self.on_partitions_revoked(set(self._loops))

    def owned(self) -> set[int]:
        return set(self._loops)

    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        for p in partitions:
            task = self._loops.pop(p, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if self._on_revoked is not None:
                await self._on_revoked(p)

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        for p in partitions:
            if self._on_assigned is not None:
                await self._on_assigned(p)
            self._loops[p] = asyncio.create_task(self._run(p))

    async def _run(self, partition: int) -> None:
        consumer = self._consumer
        assert consumer is not None
        backoff = 0.05
        while True:
            try:
                got = await consumer.getmany([partition], max_records=self.max_records, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue_fetch_failed", topic=self.topic, partition=partition)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            records = got.get(partition, [])
            if not records:
                continue
            try:
                await self.handle(partition, records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue_batch_failed", topic=self.topic, partition=partition)
                consumer.seek(partition, records[0].offset)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            try:
                await consumer.commit({partition: records[-1].offset + 1})
            except asyncio.CancelledError:
                raise
            except Exception:
                # The batch is done; without the commit it is only delivered again (tasks
                # are idempotent), and the next commit covers it. A revoked partition's loop
                # is cancelled by the revoke itself.
                log.warning(
                    "queue_commit_failed", topic=self.topic, partition=partition, exc_info=True
                )
