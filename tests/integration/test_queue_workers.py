"""Queue loops (transfer, timer) under a poison task: the task that fails the same way every
time is isolated and skipped, the tasks around it are handled in order, and an outage is
waited out, never skipped. On the real in-process log over SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.persistence.sqlite.store import SqliteStore
from engine.queues.inprocess import InProcessTaskLog
from engine.queues.protocols import Record
from engine.queues.workers import PartitionWorkers

TOPIC = "cadenza-test-tasks"
POISON = b"poison"


class Handler:
    """Handles tasks in order; a poison task fails every time, as a task the store refuses
    does; `outages` makes the next that many batches fail as if the store were down."""

    def __init__(self) -> None:
        self.handled: list[bytes] = []
        self.calls = 0
        self.outages = 0

    async def __call__(self, partition: int, records: Sequence[Record]) -> None:
        self.calls += 1
        if self.outages:
            self.outages -= 1
            raise ConnectionError("injected: store unreachable")
        if any(r.value == POISON for r in records):
            raise OverflowError("injected: a value no store can hold")
        self.handled.extend(r.value for r in records)


@pytest.fixture
async def task_log(tmp_path: Path) -> AsyncIterator[InProcessTaskLog]:
    store = SqliteStore(str(tmp_path / "q.db"))
    await store.start()
    log = InProcessTaskLog(store, {TOPIC: 1})
    await log.start()
    yield log
    await log.stop()
    await store.stop()


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not check():
        if loop.time() > until:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_a_poison_task_is_skipped_and_the_partition_goes_on(
    task_log: InProcessTaskLog,
) -> None:
    handler = Handler()
    good = [f"task-{i}".encode() for i in range(40)]
    await task_log.produce(TOPIC, 0, [*good[:17], POISON, *good[17:]])
    workers = PartitionWorkers(task_log, TOPIC, "g", handler)
    with capture_logs() as logs:
        await workers.start()
        try:
            await _until(lambda: len(handler.handled) == len(good))
        finally:
            await workers.stop()
    assert handler.handled == good  # every healthy task, once, in order
    skipped = [e for e in logs if e["event"] == "queue_task_skipped"]
    assert [e["offset"] for e in skipped] == [17]
    # Isolated by halving, not by retrying the whole batch: a handful of calls, not dozens.
    assert handler.calls <= 15, handler.calls
    # One traceback for the streak, not one per retry.
    assert sum(1 for e in logs if e.get("exc_info")) <= 1


async def test_poison_tasks_in_a_row_are_each_skipped(task_log: InProcessTaskLog) -> None:
    handler = Handler()
    await task_log.produce(TOPIC, 0, [b"a", POISON, POISON, POISON, b"b"])
    workers = PartitionWorkers(task_log, TOPIC, "g", handler)
    await workers.start()
    try:
        await _until(lambda: handler.handled == [b"a", b"b"])
    finally:
        await workers.stop()


async def test_an_outage_is_waited_out_and_nothing_is_skipped(task_log: InProcessTaskLog) -> None:
    handler = Handler()
    handler.outages = 5  # more than a refused task's attempts before it is skipped
    tasks = [b"x", b"y", b"z"]
    await task_log.produce(TOPIC, 0, tasks)
    workers = PartitionWorkers(task_log, TOPIC, "g", handler)
    with capture_logs() as logs:
        await workers.start()
        try:
            await _until(lambda: handler.handled == tasks)
        finally:
            await workers.stop()
    assert not [e for e in logs if e["event"] == "queue_task_skipped"]
    assert handler.calls == 6
