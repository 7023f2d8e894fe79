"""TransferProcessor: consumes the transfer topic of the owned shards and runs each task.

Tasks of one batch run concurrently (bounded); the batch's offset is committed once all are
done, so a crash re-delivers them (executors are idempotent). A task that keeps failing is
logged and dropped after a few attempts rather than blocking its partition forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from engine.errors import EngineError
from engine.history.bus import TRANSFER_TOPIC
from engine.model.tasks import TransferTask, decode_transfer
from engine.queues.protocols import Record, TaskLog
from engine.queues.workers import PartitionWorkers
from engine.transfer.executor import TransferExecutor

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5


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
            for attempt in range(MAX_ATTEMPTS):
                try:
                    await self.executor.execute(task)
                    return
                except asyncio.CancelledError:
                    raise
                except (EngineError, OSError, RuntimeError):
                    log.warning(
                        "transfer_task_retry",
                        task_kind=task.kind.name,
                        task_id=task.task_id,
                        workflow_id=task.workflow_id,
                        attempt=attempt,
                        exc_info=True,
                    )
                    await asyncio.sleep(0.1 * 2**attempt)
            log.error(
                "transfer_task_dropped",
                task_kind=task.kind.name,
                task_id=task.task_id,
                workflow_id=task.workflow_id,
            )
