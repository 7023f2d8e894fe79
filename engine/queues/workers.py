"""PartitionWorkers: one loop per owned partition of a topic, for queue processors.

The consumer group decides ownership; a loop starts on assign and is cancelled (and awaited)
on revoke. Each loop hands batches of records to `handle` and commits past them when it
returns: at-least-once, in order per partition. A failed batch is recovered as the shard's
apply loop recovers one (`engine.queues.recovery`): an outage (the store or a broker down) is
retried from the batch's first record after a growing pause and never skipped; a refusal (a
task that fails the same way every time: a poison task) is isolated at once by halving the
batch, and a lone refused task is tried a few times, then logged and skipped, so that one bad
task cannot hold up every timer or transfer task of its partition. A failed fetch or commit
(the broker restarting) is logged and the loop goes on: a loop that ended would leave its
partition unserved until the next rebalance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from engine.queues.protocols import LogConsumer, Record, TaskLog
from engine.queues.recovery import BatchRecovery

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
        backoff = 0.05  # between failed fetches
        recovery = BatchRecovery(self.max_records)
        # The offset of the next record to handle, once known (for the isolation's range).
        position = 0
        # Whether the failure streak's traceback was logged (once per streak, not per retry).
        logged = False
        while True:
            try:
                got = await consumer.getmany(
                    [partition], max_records=recovery.limit(position), timeout=1.0
                )
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
            position = records[0].offset
            try:
                await self.handle(partition, records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                consumer.seek(partition, position)
                step = recovery.failed(exc, records)
                where = {"topic": self.topic, "partition": partition, "offset": position}
                if step.skip:
                    log.error("queue_task_skipped", **where, error=repr(exc))
                    recovery.succeeded()
                    logged = False
                    position += 1
                    consumer.seek(partition, position)
                    await self._commit(consumer, partition, position)
                    continue
                if logged:
                    log.warning(
                        "queue_batch_failed", **where, records=len(records), error=repr(exc)
                    )
                else:
                    log.exception("queue_batch_failed", **where, records=len(records))
                    logged = True
                if step.pause_s:
                    await asyncio.sleep(step.pause_s)
                continue
            recovery.succeeded()
            position = records[-1].offset + 1
            if recovery.limit(position) == self.max_records:
                logged = False  # past the isolation: the streak is over
            await self._commit(consumer, partition, position)

    async def _commit(self, consumer: LogConsumer, partition: int, offset: int) -> None:
        try:
            await consumer.commit({partition: offset})
        except asyncio.CancelledError:
            raise
        except Exception:
            # The batch is done; without the commit it is only delivered again (tasks are
            # idempotent), and the next commit covers it. A revoked partition's loop is
            # cancelled by the revoke itself.
            log.warning("queue_commit_failed", topic=self.topic, partition=partition, exc_info=True)
