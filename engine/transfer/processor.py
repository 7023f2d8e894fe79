"""TransferProcessor: consumes the transfer topic of the owned shards and runs each task.

Tasks of one batch run concurrently (bounded); the batch's offset is committed once all are
done, so a crash re-delivers them (executors are idempotent). A task that fails for a reason
that can pass (a store, Redis or the log unreachable, a shard busy or moving: the error is
`retryable`, or a network error) is retried with capped backoff until it succeeds or the
partition is revoked: dropping it would lose the work for good. Only a task that fails
deterministically is logged and dropped after a few attempts, so a bug cannot block its
partition forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from engine.errors import EngineError, can_pass
from engine.model.tasks import TransferTask, decode_transfer
from engine.queues.protocols import Record, TaskLog
from engine.queues.workers import PartitionWorkers
from engine.routing.topics import TRANSFER_TOPIC
from engine.transfer.executor import TransferExecutor

log = structlog.get_logger(__name__)

# Attempts of a task that fails deterministically before it is dropped.
MAX_ATTEMPTS = 5
MAX_BACKOFF_S = 5.0


class TransferProcessor:
    def __init__(
        self, task_log: TaskLog, executor: TransferExecutor, concurrency: int = 64
    ) -> None:
        self.executor = executor
        self._sem = asyncio.Semaphore(concurrency)
        self.workers = PartitionWorkers(task_log, TRANSFER_TOPIC, "cadenza-transfer", self._batch)

    async def start(self) -> None:
        await self.workers.start()

    async def stop(self) -> None:
        await self.workers.stop()

    async def _batch(self, partition: int, records: Sequence[Record]) -> None:
        await asyncio.gather(*(self._one(decode_transfer(r.value)) for r in records))

    async def _one(self, task: TransferTask) -> None:
        async with self._sem:
            attempt = deterministic = 0
            while True:
                try:
                    await self.executor.execute(task)
                    return
                except asyncio.CancelledError:
                    raise
                except (EngineError, OSError, RuntimeError) as exc:
                    retryable = can_pass(exc)
                    if not retryable:
                        deterministic += 1
                        if deterministic >= MAX_ATTEMPTS:
                            log.exception(
                                "transfer_task_dropped",
                                task_kind=task.kind.name,
                                task_id=task.task_id,
                                workflow_id=task.workflow_id,
                            )
                            return
                    # Every attempt would flood the log during an outage: the first few,
                    # then one in ten.
                    if attempt < 3 or attempt % 10 == 0:
                        log.warning(
                            "transfer_task_retry",
                            task_kind=task.kind.name,
                            task_id=task.task_id,
                            workflow_id=task.workflow_id,
                            attempt=attempt,
                            retryable=retryable,
                            exc_info=True,
                        )
                    await asyncio.sleep(min(0.1 * 2 ** min(attempt, 8), MAX_BACKOFF_S))
                    attempt += 1
