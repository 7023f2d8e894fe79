"""Conformance suite for the `TaskLog` protocol, run against every backend in `BACKENDS`.

A backend factory takes a per-test namespace (a tmp directory) and the topics, and returns an
unstarted log; calling it again with the same namespace reaches the same records and committed
offsets (that is how restarts are tested). The in-process log runs on its own file and on a
`SqliteStore`'s file; the Kafka log runs on the broker of `deploy/local-cluster` (it must be up:
an unreachable broker fails the tests), each test under a namespace of its own whose topics are
deleted afterwards. Tests at the end that need internals are specific to the in-process log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from engine.errors import PersistenceError, ShardOwnershipLostError
from engine.persistence.protocols import ShardWrite
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.factory import open_task_log
from engine.queues.inprocess import InProcessTaskLog
from engine.queues.protocols import LogConsumer, Record, TaskLog

LogFactory = Callable[[Path, Mapping[str, int]], TaskLog]

KAFKA = f"127.0.0.1:{os.environ.get('LOCAL_CLUSTER_KAFKA_PORT', '9092')}"


def kafka_log(ns: Path, topics: Mapping[str, int]) -> TaskLog:
    """A Kafka log in a namespace of its own, remembered in `ns` so that a reopen finds it."""
    marker = ns / "kafka-namespace"
    if not marker.exists():
        marker.write_text(f"cadenza-conformance-{uuid.uuid4().hex[:12]}")
    return open_task_log(f"kafka://{KAFKA}/{marker.read_text()}", topics)


BACKENDS = [
    pytest.param(
        lambda ns, topics: InProcessTaskLog(str(ns / "log.db"), topics, trim_interval=0),
        id="inprocess",
    ),
    pytest.param(
        lambda ns, topics: open_task_log("memory://", topics, SqliteStore(str(ns / "store.db"))),
        id="inprocess-on-store",
    ),
    pytest.param(kafka_log, id="kafka"),
]

REPO = Path(__file__).resolve().parents[2]
TOPICS = {"commands": 4, "transfer": 2}


@pytest.fixture(params=BACKENDS)
async def make_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[Mapping[str, int]], TaskLog]]:
    factory: LogFactory = request.param
    made: list[TaskLog] = []

    def make(topics: Mapping[str, int] = TOPICS) -> TaskLog:
        made.append(factory(tmp_path, topics))
        return made[-1]

    yield make
    for log in made:
        # A shared broker outlives the test: drop the topics it created (Kafka backend only).
        # Best effort: with the broker unreachable the test has already failed on that.
        delete_topics = getattr(log, "delete_topics", None)
        if delete_topics is not None:
            with contextlib.suppress(PersistenceError):
                await delete_topics()


@pytest.fixture
async def task_log(make_log: Callable[..., TaskLog]) -> AsyncIterator[TaskLog]:
    log = make_log()
    await log.start()
    yield log
    await log.stop()


class Events:
    """Records rebalance callbacks of several members in one global order, and checks that a
    partition is never held by two members' listeners at once."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, frozenset[int]]] = []
        self.owner: dict[int, str] = {}
        self.violations: list[str] = []

    def listener(self, name: str) -> Listener:
        return Listener(self, name)


class Listener:
    def __init__(self, events: Events, name: str) -> None:
        self.events = events
        self.name = name
        self.owned: set[int] = set()

    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        self.events.calls.append(("revoke", self.name, frozenset(partitions)))
        await asyncio.sleep(0.01)  # a slow revoke must still finish before any assign
        for p in partitions:
            if self.events.owner.get(p) == self.name:
                del self.events.owner[p]
        self.owned -= partitions

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        self.events.calls.append(("assign", self.name, frozenset(partitions)))
        for p in partitions:
            holder = self.events.owner.get(p)
            if holder is not None and holder != self.name:
                self.events.violations.append(
                    f"{p} assigned to {self.name} while {holder} holds it"
                )
            self.events.owner[p] = self.name
        self.owned |= partitions


class Quiet:
    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        pass

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        pass


async def drain(
    consumer: LogConsumer, partition: int, want: int, timeout: float = 5.0
) -> list[Record]:
    """Read `want` records of one partition (failing after `timeout`)."""
    got: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} records arrived"
        batch = await consumer.getmany([partition], max_records=want - len(got), timeout=0.5)
        got += batch.get(partition, [])
    return got


# --- produce --------------------------------------------------------------------------------


async def test_offsets_grow_per_partition_from_zero(task_log: TaskLog) -> None:
    assert task_log.partitions("commands") == 4
    assert task_log.partitions("transfer") == 2
    assert await task_log.produce("commands", 0, [b"a", b"b", b"c"]) == 2
    assert await task_log.produce("commands", 0, [b"d"]) == 3
    assert await task_log.produce("commands", 1, [b"x"]) == 0
    assert await task_log.produce("transfer", 0, [b"t"]) == 0
    consumer = task_log.consumer("commands", "g", Quiet())
    await consumer.start()
    try:
        records = await drain(consumer, 0, 4)
        assert [(r.topic, r.partition, r.offset, r.value) for r in records] == [
            ("commands", 0, 0, b"a"),
            ("commands", 0, 1, b"b"),
            ("commands", 0, 2, b"c"),
            ("commands", 0, 3, b"d"),
        ]
        assert [r.value for r in await drain(consumer, 1, 1)] == [b"x"]
    finally:
        await consumer.stop()


async def test_concurrent_produces_keep_call_order(task_log: TaskLog) -> None:
    calls = [[f"{i}.{j}".encode() for j in range(1 + i % 3)] for i in range(200)]
    lasts = await asyncio.gather(*(task_log.produce("commands", 2, values) for values in calls))
    expected_last = -1
    for values, last in zip(calls, lasts, strict=True):
        expected_last += len(values)
        assert last == expected_last  # each call's records are contiguous, in call order
    consumer = task_log.consumer("commands", "g", Quiet())
    await consumer.start()
    try:
        records = await drain(consumer, 2, expected_last + 1)
        assert [r.value for r in records] == [v for values in calls for v in values]
        assert [r.offset for r in records] == list(range(expected_last + 1))
    finally:
        await consumer.stop()


# --- consume --------------------------------------------------------------------------------


async def test_getmany_timeout_returns_empty_and_wakes_on_produce(task_log: TaskLog) -> None:
    consumer = task_log.consumer("transfer", "g", Quiet())
    await consumer.start()
    try:
        started = time.monotonic()
        got = await consumer.getmany(timeout=0.2)
        assert not any(got.values())
        assert time.monotonic() - started >= 0.15

        async def produce_later() -> None:
            await asyncio.sleep(0.1)
            await task_log.produce("transfer", 1, [b"late"])

        producer = asyncio.create_task(produce_later())
        started = time.monotonic()
        got = await consumer.getmany(timeout=10)
        await producer
        assert time.monotonic() - started < 5  # woken by the produce, not by the timeout
        assert [r.value for r in got[1]] == [b"late"]
    finally:
        await consumer.stop()


async def test_getmany_respects_max_records_and_partitions(task_log: TaskLog) -> None:
    await task_log.produce("commands", 0, [b"%d" % i for i in range(10)])
    await task_log.produce("commands", 3, [b"p3"])
    consumer = task_log.consumer("commands", "g", Quiet())
    await consumer.start()
    try:
        only3 = await consumer.getmany([3], timeout=2)
        assert set(only3) <= {3}
        assert [r.value for r in only3[3]] == [b"p3"]
        first = await drain(consumer, 0, 4)
        assert [r.offset for r in first] == [0, 1, 2, 3]
        got = await consumer.getmany([0], max_records=3, timeout=2)
        assert [r.offset for r in got[0]] == [4, 5, 6]
        consumer.seek(0, 1)  # re-read from an earlier offset
        assert [r.offset for r in await drain(consumer, 0, 2)] == [1, 2]
    finally:
        await consumer.stop()


async def test_commit_then_resume_after_reopen(make_log: Callable[..., TaskLog]) -> None:
    log = make_log()
    await log.start()
    await log.produce("commands", 1, [b"r%d" % i for i in range(10)])
    consumer = log.consumer("commands", "history", Quiet())
    await consumer.start()
    assert await consumer.committed(1) == 0
    assert [r.offset for r in await drain(consumer, 1, 6)] == list(range(6))
    await consumer.commit({1: 4})  # records 4 and 5 were read but not committed
    assert await consumer.committed(1) == 4
    await consumer.stop()
    await log.stop()

    log = make_log()
    await log.start()
    try:
        assert await log.produce("commands", 1, [b"after"]) == 10  # offsets continue
        consumer = log.consumer("commands", "history", Quiet())
        await consumer.start()
        assert await consumer.committed(1) == 4
        resumed = await drain(consumer, 1, 7)
        assert [r.offset for r in resumed] == [4, 5, 6, 7, 8, 9, 10]
        assert resumed[-1].value == b"after"
        # Another group has its own position: from the start.
        other = log.consumer("commands", "other-group", Quiet())
        await consumer.stop()
        await other.start()
        assert [r.offset for r in await drain(other, 1, 2)] == [0, 1]
        await other.stop()
    finally:
        await log.stop()


async def test_rebalance_revokes_before_assigns_and_splits_partitions(task_log: TaskLog) -> None:
    events = Events()
    la, lb = events.listener("a"), events.listener("b")
    a = task_log.consumer("commands", "grp", la)
    b = task_log.consumer("commands", "grp", lb)
    await a.start()
    assert a.assignment() == la.owned == {0, 1, 2, 3}
    for p in range(4):
        await task_log.produce("commands", p, [b"before-%d" % p])
    # a reads and commits partition 3 only; whoever gets it next resumes after that.
    assert [r.value for r in await drain(a, 3, 1)] == [b"before-3"]
    await a.commit({3: 1})

    events.calls.clear()
    await b.start()
    revokes = [i for i, c in enumerate(events.calls) if c[0] == "revoke"]
    assigns = [i for i, c in enumerate(events.calls) if c[0] == "assign"]
    assert revokes, "a must give partitions up"
    assert assigns, "b must be given partitions"
    assert max(revokes) < min(assigns)
    assert a.assignment() == la.owned
    assert b.assignment() == lb.owned
    assert a.assignment()
    assert b.assignment()
    assert a.assignment() | b.assignment() == {0, 1, 2, 3}
    assert not a.assignment() & b.assignment()
    assert events.violations == []

    # Each record goes to the member that owns its partition, from the group's position.
    for p in b.assignment():
        expected = [] if p == 3 else [b"before-%d" % p]
        got = await drain(b, p, len(expected), timeout=2) if expected else []
        assert [r.value for r in got] == expected

    events.calls.clear()
    await a.stop()
    assert b.assignment() == lb.owned == {0, 1, 2, 3}
    assert la.owned == set()
    assert events.calls[0][:2] == ("revoke", "a")
    assert max(i for i, c in enumerate(events.calls) if c[0] == "revoke") < min(
        i for i, c in enumerate(events.calls) if c[0] == "assign"
    )
    assert events.violations == []
    await b.stop()
    assert lb.owned == set()


async def test_produce_is_durable_when_it_returns(make_log: Callable[..., TaskLog]) -> None:
    log = make_log()
    await log.start()
    lasts = await asyncio.gather(*(log.produce("transfer", 0, [b"v%d" % i]) for i in range(50)))
    assert sorted(lasts) == list(range(50))
    await log.stop()
    log = make_log()
    await log.start()
    try:
        consumer = log.consumer("transfer", "g", Quiet())
        await consumer.start()
        assert [r.value for r in await drain(consumer, 0, 50)] == [b"v%d" % i for i in range(50)]
        await consumer.stop()
    finally:
        await log.stop()


async def test_commit_of_unowned_partition_is_rejected(task_log: TaskLog) -> None:
    a = task_log.consumer("transfer", "g", Quiet())
    b = task_log.consumer("transfer", "g", Quiet())
    await a.start()
    await b.start()
    try:
        # Like Kafka's CommitFailedError after a rebalance: a stale member cannot move the
        # group's position for a partition it lost.
        with pytest.raises(ShardOwnershipLostError):
            await a.commit(dict.fromkeys(b.assignment(), 1))
        assert all([await b.committed(p) == 0 for p in b.assignment()])
    finally:
        await a.stop()
        await b.stop()


# --- in-process specifics -------------------------------------------------------------------


@contextlib.contextmanager
def counting_writes(log: InProcessTaskLog) -> Iterator[list[int]]:
    """Counts the write transactions the log's database runs inside the block (in [0])."""
    db = log.database
    writes = [0]
    real_write = db.write

    async def counting_write(fn: Any, *args: Any, **kwargs: Any) -> Any:
        writes[0] += 1
        return await real_write(fn, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "write", counting_write)
        yield writes


async def test_inprocess_groups_concurrent_produces_into_few_transactions(tmp_path: Path) -> None:
    log = InProcessTaskLog(str(tmp_path / "log.db"), TOPICS, trim_interval=0)
    await log.start()
    try:
        with counting_writes(log) as writes:
            await asyncio.gather(*(log.produce("commands", i % 4, [b"x"]) for i in range(100)))
        assert writes[0] <= 2, f"100 produces in one loop iteration took {writes[0]} transactions"
    finally:
        await log.stop()


async def test_inprocess_commits_ride_in_the_produces_transactions(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    log = InProcessTaskLog(path, TOPICS, trim_interval=0)
    await log.start()
    await log.produce("commands", 0, [b"a", b"b", b"c"])
    members = [log.consumer("commands", f"g{i}", Quiet()) for i in range(3)]
    for member in members:
        await member.start()
    with counting_writes(log) as writes:
        await asyncio.gather(
            *(member.commit({0: i + 1}) for i, member in enumerate(members)),
            *(log.produce("commands", 1, [b"x"]) for _ in range(10)),
        )
    assert writes[0] <= 2, f"3 commits and 10 produces took {writes[0]} transactions"
    for member in members:
        await member.stop()
    await log.stop()

    # Durable when `commit` returned: a new log on the file has each group's offset.
    log = InProcessTaskLog(path, TOPICS, trim_interval=0)
    await log.start()
    try:
        for i in range(3):
            member = log.consumer("commands", f"g{i}", Quiet())
            await member.start()
            assert await member.committed(0) == i + 1
            await member.stop()
    finally:
        await log.stop()


async def test_inprocess_trim_keeps_offsets_and_uncommitted_records(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    log = InProcessTaskLog(path, TOPICS, trim_interval=0, tail_records=2)
    await log.start()
    await log.produce("commands", 0, [b"%d" % i for i in range(10)])
    a = log.consumer("commands", "g1", Quiet())
    await a.start()
    assert await log.trim() == 0  # nothing committed yet
    await a.commit({0: 6})
    assert await log.trim() == 6
    await a.stop()
    await log.stop()

    log = InProcessTaskLog(path, TOPICS, trim_interval=0, tail_records=2)
    await log.start()
    try:
        assert await log.produce("commands", 0, [b"10"]) == 10
        again = log.consumer("commands", "g1", Quiet())
        await again.start()
        # Read back from disk (the tail holds only 2 records), from the committed offset.
        assert [r.offset for r in await drain(again, 0, 5)] == [6, 7, 8, 9, 10]
        await again.stop()
        # A new group starts at the earliest record still stored.
        fresh = log.consumer("commands", "g2", Quiet())
        await fresh.start()
        assert (await drain(fresh, 0, 1))[0].offset == 6
        await fresh.stop()
    finally:
        await log.stop()


async def test_inprocess_log_and_store_share_one_file(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "one.db"))
    log = open_task_log("memory://", TOPICS, store)
    await store.start()
    await log.start()
    try:
        shard = await store.acquire_shard(0, "me")
        await asyncio.gather(
            store.write_shard(ShardWrite(0, shard.range_id, applied_offset=5)),
            log.produce("commands", 0, [b"a"]),
        )
        row = await store.get_shard(0)
        assert row is not None
        assert row.applied_offset == 5
    finally:
        await log.stop()
        await store.stop()
    assert isinstance(log, InProcessTaskLog)
    assert store.database is log.database
    assert not store.database.is_open


async def test_inprocess_produce_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from engine.queues.inprocess import InProcessTaskLog

        async def main():
            log = InProcessTaskLog({str(path)!r}, {{"commands": 2}})
            await log.start()
            print(await log.produce("commands", 1, [b"a", b"b", b"c"]), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
    """)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    out, _ = await proc.communicate()
    assert proc.returncode == -9
    assert int(out) == 2
    log = InProcessTaskLog(str(path), {"commands": 2}, trim_interval=0)
    await log.start()
    try:
        consumer = log.consumer("commands", "g", Quiet())
        await consumer.start()
        assert [r.value for r in await drain(consumer, 1, 3)] == [b"a", b"b", b"c"]
        await consumer.stop()
    finally:
        await log.stop()


def test_open_task_log_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="amqp://x"):
        open_task_log("amqp://x", TOPICS)
    assert isinstance(open_task_log("memory://", TOPICS), InProcessTaskLog)
