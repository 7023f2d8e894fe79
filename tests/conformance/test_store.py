"""Conformance suite for the `Store` protocol, run against every backend in `BACKENDS`.

Each backend factory takes a per-test namespace (a tmp directory) and returns an unstarted
store; calling it again with the same namespace must reach the same data, which is how the
durability tests reopen. SQLite always runs; Cassandra runs against the real service at
CADENZA_TEST_CASSANDRA (default 127.0.0.1:9042, started by `deploy/local-cluster up`): the
tests fail, not skip, when it is not there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import (
    BadRequestError,
    ConditionFailedError,
    InUseError,
    PersistenceError,
    ShardOwnershipLostError,
)
from engine.persistence.factory import open_store
from engine.persistence.protocols import (
    CurrentRun,
    CurrentRunUpdate,
    DomainRecord,
    HistoryBatch,
    NodeLease,
    OutboxTask,
    RunKey,
    RunWrite,
    ScheduleRecord,
    ShardWrite,
    Store,
    TimerRow,
    VisibilityRecord,
)
from engine.persistence.sqlite.store import SqliteStore

StoreFactory = Callable[[Path], Store]


class CassandraBackend:
    """The real Cassandra: one keyspace per test module (random name, created on first use,
    dropped when the module ends); every test starts from empty tables, since TRUNCATE is far
    cheaper than a keyspace (and its schema) per test. Calls with one namespace reach the
    same data."""

    def __init__(self) -> None:
        host = os.environ.get("CADENZA_TEST_CASSANDRA", "127.0.0.1:9042")
        self.url = f"cassandra://{host}/cadenza_test_{uuid.uuid4().hex[:12]}"
        self.created = False

    def __call__(self, ns: Path) -> Store:
        return open_store(self.url)

    async def prepare(self) -> None:
        from engine.persistence.cassandra.schema import apply_schema, truncate_keyspace

        try:
            if self.created:
                await truncate_keyspace(self.url)
            else:
                await apply_schema(self.url)
                self.created = True
        except PersistenceError as exc:
            pytest.fail(
                f"Cassandra is not usable at {self.url} ({exc}); start it with "
                "`deploy/local-cluster up cassandra` or point CADENZA_TEST_CASSANDRA at one"
            )

    def drop(self) -> None:
        if self.created:
            from engine.persistence.cassandra.schema import drop_keyspace

            asyncio.run(drop_keyspace(self.url))
            self.created = False


CASSANDRA = CassandraBackend()

BACKENDS = [
    pytest.param(lambda ns: SqliteStore(str(ns / "store.db")), id="sqlite"),
    pytest.param(lambda ns: open_store(f"sqlite:///{ns / 'via-url.db'}"), id="sqlite-url"),
    pytest.param(CASSANDRA, id="cassandra"),
]

REPO = Path(__file__).resolve().parents[2]
D = "dom-1"


@pytest.fixture(scope="module", autouse=True)
def _drop_cassandra_keyspace() -> Iterator[None]:
    yield
    CASSANDRA.drop()


@pytest.fixture(params=BACKENDS)
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    factory: StoreFactory = request.param
    if isinstance(factory, CassandraBackend):
        await factory.prepare()
    return lambda: factory(tmp_path)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    s = make_store()
    await s.start()
    yield s
    await s.stop()


def visibility(
    run_id: str, wf: str = "wf-1", *, start: int = 1_000, closed: int = 0, **extra: Any
) -> VisibilityRecord:
    return VisibilityRecord(
        domain_id=D,
        workflow_id=wf,
        run_id=run_id,
        workflow_type="OrderFlow",
        start_time_ns=start,
        execution_time_ns=start,
        task_list="tl",
        close_status=closed,
        close_time_ns=start + 5 if closed else None,
        **extra,
    )


def run(
    run_id: str = "r1",
    wf: str = "wf-1",
    *,
    next_id: int = 3,
    expected: int | None = None,
    history: list[HistoryBatch] | None = None,
    current: CurrentRunUpdate | None = None,
    vis: VisibilityRecord | None = None,
    state: bytes = b"state",
) -> RunWrite:
    return RunWrite(
        domain_id=D,
        workflow_id=wf,
        run_id=run_id,
        state=state,
        next_event_id=next_id,
        expected_next_event_id=expected,
        history=history or [],
        current=current,
        visibility=vis,
    )


async def open_runs(store: Store, shard_id: int, page_size: int = 1000) -> list[RunKey]:
    """Every page of the shard's open runs, in the order the store gave them."""
    return [key async for page in store.open_runs(shard_id, page_size) for key in page]


def batch(first: int, count: int) -> HistoryBatch:
    return HistoryBatch(
        first_event_id=first, events=f"ev{first}-{count}".encode(), event_count=count
    )


def new_current(run_id: str, expected: str | None = "") -> CurrentRunUpdate:
    return CurrentRunUpdate(CurrentRun(run_id=run_id, create_request_id=f"req-{run_id}"), expected)


# --- shards and fencing ---------------------------------------------------------------------


async def test_acquire_bumps_range_id_and_keeps_offsets(store: Store) -> None:
    assert await store.get_shard(7) is None
    first = await store.acquire_shard(7, "host-a")
    assert (first.shard_id, first.owner, first.applied_offset, first.outbox_ack) == (
        7,
        "host-a",
        0,
        0,
    )
    await store.write_shard(ShardWrite(7, first.range_id, applied_offset=42, outbox_ack=5))
    second = await store.acquire_shard(7, "host-b")
    assert second.range_id > first.range_id
    assert (second.owner, second.applied_offset, second.outbox_ack) == ("host-b", 42, 5)
    assert await store.get_shard(7) == second


async def test_stale_owner_write_fails_and_applies_nothing(store: Store) -> None:
    a = await store.acquire_shard(1, "host-a")
    b = await store.acquire_shard(1, "host-b")
    stale = ShardWrite(
        1,
        a.range_id,
        runs=[run(history=[batch(1, 2)], current=new_current("r1"), vis=visibility("r1"))],
        tasks=[OutboxTask(1, "transfer", b"t1")],
        applied_offset=10,
        outbox_ack=0,
    )
    with pytest.raises(ShardOwnershipLostError) as err:
        await store.write_shard(stale)
    assert err.value.shard_id == 1
    assert await store.get_run(1, D, "wf-1", "r1") is None
    assert await store.get_current_run(1, D, "wf-1") is None
    assert await store.read_history(D, "wf-1", "r1", 1, 100) == []
    assert await store.read_outbox(1, 0) == []
    assert await store.get_visibility(D, "wf-1", "r1") is None
    assert await open_runs(store, 1) == []
    row = await store.get_shard(1)
    assert row is not None
    assert row.applied_offset == 0
    # The new owner's identical write goes through.
    stale.range_id = b.range_id
    await store.write_shard(stale)
    stored = await store.get_run(1, D, "wf-1", "r1")
    assert stored is not None
    assert stored.next_event_id == 3


async def test_write_to_unacquired_shard_is_fenced(store: Store) -> None:
    with pytest.raises(ShardOwnershipLostError):
        await store.write_shard(ShardWrite(99, 1, runs=[run()]))
    assert await store.get_run(99, D, "wf-1", "r1") is None


async def test_concurrent_writers_with_same_condition_only_one_wins(store: Store) -> None:
    shard = await store.acquire_shard(2, "host")
    await store.write_shard(ShardWrite(2, shard.range_id, runs=[run(next_id=3)]))
    writes = [
        store.write_shard(ShardWrite(2, shard.range_id, runs=[run(next_id=4 + i, expected=3)]))
        for i in range(5)
    ]
    results = await asyncio.gather(*writes, return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConditionFailedError) for r in results if r is not None)


# --- conditions and atomicity ---------------------------------------------------------------


async def test_next_event_id_conditions(store: Store) -> None:
    s = await store.acquire_shard(3, "host")
    with pytest.raises(ConditionFailedError):  # the run does not exist yet
        await store.write_shard(ShardWrite(3, s.range_id, runs=[run(expected=1)]))
    await store.write_shard(ShardWrite(3, s.range_id, runs=[run(next_id=3, state=b"v1")]))
    with pytest.raises(ConditionFailedError):  # None means "must not exist"
        await store.write_shard(ShardWrite(3, s.range_id, runs=[run(next_id=9)]))
    with pytest.raises(ConditionFailedError):  # stale next_event_id
        await store.write_shard(ShardWrite(3, s.range_id, runs=[run(next_id=9, expected=2)]))
    snap = await store.get_run(3, D, "wf-1", "r1")
    assert snap is not None
    assert (snap.state, snap.next_event_id) == (b"v1", 3)
    await store.write_shard(
        ShardWrite(3, s.range_id, runs=[run(next_id=5, expected=3, state=b"v2")])
    )
    snap = await store.get_run(3, D, "wf-1", "r1")
    assert snap is not None
    assert (snap.state, snap.next_event_id) == (b"v2", 5)


async def test_same_run_twice_in_one_batch_chains_conditions(store: Store) -> None:
    s = await store.acquire_shard(3, "host")
    await store.write_shard(
        ShardWrite(
            3,
            s.range_id,
            runs=[
                run(next_id=3, history=[batch(1, 2)]),
                run(next_id=5, expected=3, history=[batch(3, 2)]),
            ],
        )
    )
    snap = await store.get_run(3, D, "wf-1", "r1")
    assert snap is not None
    assert snap.next_event_id == 5
    assert [b.first_event_id for b in await store.read_history(D, "wf-1", "r1", 1, 100)] == [1, 3]
    with pytest.raises(ConditionFailedError):  # the second write must chain off the first
        await store.write_shard(
            ShardWrite(3, s.range_id, runs=[run(next_id=6, expected=5), run(next_id=7, expected=5)])
        )


async def test_current_run_conditions(store: Store) -> None:
    s = await store.acquire_shard(4, "host")
    await store.write_shard(ShardWrite(4, s.range_id, runs=[run("r1", current=new_current("r1"))]))
    current = await store.get_current_run(4, D, "wf-1")
    assert current == CurrentRun("r1", "req-r1", 0)
    with pytest.raises(ConditionFailedError):  # "" means: no current run may exist
        await store.write_shard(
            ShardWrite(4, s.range_id, runs=[run("r2", current=new_current("r2"))])
        )
    with pytest.raises(ConditionFailedError):  # current is r1, not r0
        await store.write_shard(
            ShardWrite(4, s.range_id, runs=[run("r2", current=new_current("r2", "r0"))])
        )
    assert await store.get_run(4, D, "wf-1", "r2") is None
    closed = CurrentRunUpdate(CurrentRun("r1", "req-r1", close_status=2), expected_run_id=None)
    await store.write_shard(
        ShardWrite(4, s.range_id, runs=[run("r1", next_id=4, expected=3, current=closed)])
    )
    assert (await store.get_current_run(4, D, "wf-1")) == CurrentRun("r1", "req-r1", 2)
    await store.write_shard(
        ShardWrite(4, s.range_id, runs=[run("r2", current=new_current("r2", "r1"))])
    )
    assert (await store.get_current_run(4, D, "wf-1")) == CurrentRun("r2", "req-r2", 0)


async def test_failing_batch_leaves_no_partial_write(store: Store) -> None:
    s = await store.acquire_shard(5, "host")
    good = run(
        "ok",
        "wf-ok",
        history=[batch(1, 2)],
        current=new_current("ok"),
        vis=visibility("ok", "wf-ok"),
    )
    bad = run("bad", "wf-bad", expected=7)  # does not exist: condition fails
    with pytest.raises(ConditionFailedError):
        await store.write_shard(
            ShardWrite(
                5,
                s.range_id,
                runs=[good, bad],
                tasks=[OutboxTask(1, "timer", b"x")],
                applied_offset=77,
                outbox_ack=0,
            )
        )
    assert await store.get_run(5, D, "wf-ok", "ok") is None
    assert await store.get_current_run(5, D, "wf-ok") is None
    assert await store.read_history(D, "wf-ok", "ok", 1, 100) == []
    assert await store.get_visibility(D, "wf-ok", "ok") is None
    assert await store.read_outbox(5, 0) == []
    info = await store.get_shard(5)
    assert info is not None
    assert info.applied_offset == 0


# --- outbox and applied offset --------------------------------------------------------------


async def test_outbox_round_trip_and_ack_deletes(store: Store) -> None:
    s = await store.acquire_shard(6, "host")
    tasks = [
        OutboxTask(i, "transfer" if i % 2 else "timer", f"task-{i}".encode())
        for i in (5, 1, 3, 2, 4)
    ]
    await store.write_shard(ShardWrite(6, s.range_id, tasks=tasks, applied_offset=12))
    assert [t.task_id for t in await store.read_outbox(6, 0)] == [1, 2, 3, 4, 5]
    above_two = await store.read_outbox(6, 2)
    assert above_two == [
        OutboxTask(3, "transfer", b"task-3"),
        OutboxTask(4, "timer", b"task-4"),
        OutboxTask(5, "transfer", b"task-5"),
    ]
    assert await store.read_outbox(7, 0) == []  # other shards see nothing
    await store.write_shard(ShardWrite(6, s.range_id, outbox_ack=3))
    info = await store.get_shard(6)
    assert info is not None
    assert (info.applied_offset, info.outbox_ack) == (12, 3)
    assert [t.task_id for t in await store.read_outbox(6, 0)] == [4, 5]
    # Tasks written and acknowledged in one batch leave nothing behind.
    await store.write_shard(
        ShardWrite(
            6,
            s.range_id,
            tasks=[OutboxTask(6, "timer", b"6"), OutboxTask(7, "timer", b"7")],
            outbox_ack=6,
            applied_offset=13,
        )
    )
    assert [t.task_id for t in await store.read_outbox(6, 0)] == [7]
    info = await store.get_shard(6)
    assert info is not None
    assert (info.applied_offset, info.outbox_ack) == (13, 6)


# --- history --------------------------------------------------------------------------------


async def test_history_pages_whole_batches(store: Store) -> None:
    s = await store.acquire_shard(8, "host")
    batches = [batch(1, 1), batch(2, 3), batch(5, 2), batch(7, 4)]
    await store.write_shard(ShardWrite(8, s.range_id, runs=[run(next_id=11, history=batches)]))

    def firsts(bs: list[HistoryBatch]) -> list[int]:
        return [b.first_event_id for b in bs]

    assert await store.read_history(D, "wf-1", "r1", 1, 1000) == batches
    assert firsts(await store.read_history(D, "wf-1", "r1", 1, 1)) == [1]
    # 1 event is not enough for max_events=2, so the next batch comes whole (4 events).
    assert firsts(await store.read_history(D, "wf-1", "r1", 1, 2)) == [1, 2]
    assert firsts(await store.read_history(D, "wf-1", "r1", 3, 100)) == [5, 7]
    assert firsts(await store.read_history(D, "wf-1", "r1", 5, 2)) == [5]
    assert await store.read_history(D, "wf-1", "r1", 11, 100) == []
    assert await store.read_history(D, "wf-1", "other-run", 1, 100) == []
    # A caller that knows where the committed history ends gets the batches below it.
    assert firsts(await store.read_history(D, "wf-1", "r1", 1, 100, before_event_id=7)) == [
        1,
        2,
        5,
    ]
    assert firsts(await store.read_history(D, "wf-1", "r1", 2, 100, before_event_id=11)) == [
        2,
        5,
        7,
    ]
    assert await store.read_history(D, "wf-1", "r1", 1, 100, before_event_id=1) == []
    # Rewriting a batch key replaces it.
    rewrite = run(next_id=11, expected=11, history=[HistoryBatch(7, b"rewritten", 4)])
    await store.write_shard(ShardWrite(8, s.range_id, runs=[rewrite]))
    last = await store.read_history(D, "wf-1", "r1", 7, 100)
    assert last == [HistoryBatch(7, b"rewritten", 4)]


# --- timers ---------------------------------------------------------------------------------


async def test_timers_order_limit_idempotent_put_and_delete(store: Store) -> None:
    await store.put_timers(
        1,
        [
            TimerRow(300, 3, b"c"),
            TimerRow(100, 9, b"a9"),
            TimerRow(100, 2, b"a2"),
            TimerRow(200, 4, b"b"),
        ],
    )
    await store.put_timers(2, [TimerRow(50, 1, b"other-shard")])
    due = await store.due_timers(1, 250, 10)
    assert [(t.fire_ns, t.task_id) for t in due] == [(100, 2), (100, 9), (200, 4)]
    assert [t.task_id for t in await store.due_timers(1, 1_000, 2)] == [2, 9]
    assert await store.due_timers(1, 99, 10) == []
    # Putting an existing (shard, task_id) again leaves the stored row as it was.
    await store.put_timers(1, [TimerRow(1, 4, b"changed")])
    assert [t for t in await store.due_timers(1, 1_000, 10) if t.task_id == 4] == [
        TimerRow(200, 4, b"b")
    ]
    await store.delete_timers(1, [2, 9, 12345])
    assert [t.task_id for t in await store.due_timers(1, 1_000, 10)] == [4, 3]
    assert [t.task_id for t in await store.due_timers(2, 1_000, 10)] == [1]


# --- domains --------------------------------------------------------------------------------


async def test_domains_unique_conditional_update_and_paging(store: Store) -> None:
    await store.create_domain(DomainRecord("id-b", "beta", b"info-b"))
    with pytest.raises(ConditionFailedError):
        await store.create_domain(DomainRecord("id-other", "beta", b"dup name"))
    with pytest.raises(ConditionFailedError):
        await store.create_domain(DomainRecord("id-b", "other", b"dup id"))
    assert await store.get_domain(name="beta") == DomainRecord("id-b", "beta", b"info-b", 0)
    assert await store.get_domain(domain_id="id-b") == DomainRecord("id-b", "beta", b"info-b", 0)
    assert await store.get_domain(name="other") is None
    assert await store.get_domain(domain_id="id-other") is None

    with pytest.raises(ConditionFailedError):
        await store.update_domain(DomainRecord("id-b", "beta", b"v2", 1), expected_version=5)
    await store.update_domain(DomainRecord("id-b", "beta", b"v2", 1), expected_version=0)
    assert await store.get_domain(name="beta") == DomainRecord("id-b", "beta", b"v2", 1)
    with pytest.raises(ConditionFailedError):  # version 0 is stale now
        await store.update_domain(DomainRecord("id-b", "beta", b"v3", 1), expected_version=0)

    for name in ["delta", "alpha", "epsilon", "gamma"]:
        await store.create_domain(DomainRecord(f"id-{name}", name, b""))
    names: list[str] = []
    token = b""
    pages = 0
    while True:
        page, token = await store.list_domains(2, token)
        pages += 1
        assert len(page) <= 2
        names += [d.name for d in page]
        if not token:
            break
    assert names == ["alpha", "beta", "delta", "epsilon", "gamma"]
    assert pages == 3


# --- schedules ------------------------------------------------------------------------------


def schedule(schedule_id: str, data: bytes = b"spec", version: int = 1) -> ScheduleRecord:
    return ScheduleRecord(domain_id=D, schedule_id=schedule_id, data=data, version=version)


async def test_schedules_are_unique_per_domain_and_updated_on_their_version(store: Store) -> None:
    await store.create_schedule(schedule("nightly"))
    with pytest.raises(ConditionFailedError):
        await store.create_schedule(schedule("nightly", b"other"))
    # The same id in another domain is another schedule.
    await store.create_schedule(ScheduleRecord("other-domain", "nightly", b"theirs", 1))
    assert await store.get_schedule(D, "nightly") == schedule("nightly")
    assert await store.get_schedule("other-domain", "nightly") == ScheduleRecord(
        "other-domain", "nightly", b"theirs", 1
    )
    assert await store.get_schedule(D, "missing") is None

    await store.update_schedule(schedule("nightly", b"paused", version=2), expected_version=1)
    assert await store.get_schedule(D, "nightly") == schedule("nightly", b"paused", 2)
    # A writer that read version 1 lost the race: nothing it sends is kept.
    with pytest.raises(ConditionFailedError):
        await store.update_schedule(schedule("nightly", b"stale", version=2), expected_version=1)
    with pytest.raises(ConditionFailedError):
        await store.update_schedule(schedule("missing", version=2), expected_version=1)
    assert await store.get_schedule(D, "nightly") == schedule("nightly", b"paused", 2)
    assert await store.get_schedule(D, "missing") is None


async def test_deleted_schedules_are_gone_and_their_id_free_again(store: Store) -> None:
    await store.create_schedule(schedule("hourly"))
    assert await store.delete_schedule(D, "hourly") is True
    assert await store.delete_schedule(D, "hourly") is False
    assert await store.get_schedule(D, "hourly") is None
    await store.create_schedule(schedule("hourly", b"again"))
    assert await store.get_schedule(D, "hourly") == schedule("hourly", b"again")


async def test_schedules_list_in_pages_by_id(store: Store) -> None:
    ids = [f"s-{i}" for i in (5, 1, 6, 3, 0, 4, 2)]
    for schedule_id in ids:
        await store.create_schedule(schedule(schedule_id))
    await store.create_schedule(ScheduleRecord("other-domain", "s-9", b"x", 1))
    pages, token = [], b""
    while True:
        page, token = await store.list_schedules(D, 3, token)
        pages.append([r.schedule_id for r in page])
        if not token:
            break
    assert pages == [["s-0", "s-1", "s-2"], ["s-3", "s-4", "s-5"], ["s-6"]]
    assert await store.list_schedules("empty-domain", 3, b"") == ([], b"")
    with pytest.raises(BadRequestError):
        await store.list_schedules(D, 3, b"not a token")
    with pytest.raises(BadRequestError):
        await store.list_schedules(D, 3, b"d1:s-0")  # a domain page's token
    with pytest.raises(ValueError, match="page_size"):
        await store.list_schedules(D, 0, b"")


# --- open runs ------------------------------------------------------------------------------


async def test_open_runs_come_in_pages_in_key_order_without_the_closed(store: Store) -> None:
    s = await store.acquire_shard(11, "host")
    ids = [f"wf-{i:02d}" for i in range(27)]
    # Every third run is created closed; they must not be listed, nor shift a page's bounds.
    await store.write_shard(
        ShardWrite(
            11,
            s.range_id,
            runs=[
                run(f"r-{wf}", wf, vis=visibility(f"r-{wf}", wf, closed=1 if i % 3 == 0 else 0))
                for i, wf in enumerate(ids)
            ],
        )
    )
    open_ids = [wf for i, wf in enumerate(ids) if i % 3 != 0]  # 18 runs
    pages = [page async for page in store.open_runs(11, page_size=5)]
    assert [len(page) for page in pages] == [5, 5, 5, 3]
    walked = [key for page in pages for key in page]
    assert walked == [RunKey(D, wf, f"r-{wf}") for wf in open_ids]
    # A count that fills its last page exactly ends without an empty page.
    assert [len(page) async for page in store.open_runs(11, page_size=6)] == [6, 6, 6]
    assert [page async for page in store.open_runs(12, page_size=5)] == []


async def test_open_runs_follow_visibility_close_status(store: Store) -> None:
    s = await store.acquire_shard(9, "host")
    await store.write_shard(
        ShardWrite(
            9,
            s.range_id,
            runs=[
                run("a", "wf-a"),  # no visibility: new runs start open
                run("b", "wf-b", vis=visibility("b", "wf-b")),
                run("c", "wf-c", vis=visibility("c", "wf-c", closed=1)),  # created closed
            ],
        )
    )
    await store.write_shard(
        ShardWrite(10, (await store.acquire_shard(10, "h")).range_id, runs=[run("z", "wf-z")])
    )

    def keys(runs: list[RunKey]) -> set[str]:
        return {r.run_id for r in runs}

    assert keys(await open_runs(store, 9)) == {"a", "b"}
    assert await open_runs(store, 10) == [RunKey(D, "wf-z", "z")]
    # Closing b through its visibility record; a later write without one leaves it closed.
    await store.write_shard(
        ShardWrite(
            9,
            s.range_id,
            runs=[run("b", "wf-b", next_id=4, expected=3, vis=visibility("b", "wf-b", closed=2))],
        )
    )
    await store.write_shard(
        ShardWrite(9, s.range_id, runs=[run("b", "wf-b", next_id=5, expected=4)])
    )
    assert keys(await open_runs(store, 9)) == {"a"}
    # An update without visibility leaves an open run open.
    await store.write_shard(
        ShardWrite(9, s.range_id, runs=[run("a", "wf-a", next_id=4, expected=3)])
    )
    assert await open_runs(store, 9) == [RunKey(D, "wf-a", "a")]


# --- visibility -----------------------------------------------------------------------------


async def test_visibility_record_round_trip(store: Store) -> None:
    s = await store.acquire_shard(11, "host")
    rec = visibility(
        "r1",
        start=123,
        closed=3,
        history_length=17,
        is_cron=True,
        memo=b"\x01memo",
        search_attributes={"CustomKeywordField": ["a", "b"], "CustomIntField": 5},
        parent=b"\x02parent",
    )
    await store.write_shard(ShardWrite(11, s.range_id, runs=[run(vis=rec)]))
    assert await store.get_visibility(D, "wf-1", "r1") == rec
    assert await store.get_visibility("other-domain", "wf-1", "r1") is None
    open_rec = visibility("r2", "wf-2")
    await store.write_shard(ShardWrite(11, s.range_id, runs=[run("r2", "wf-2", vis=open_rec)]))
    got = await store.get_visibility(D, "wf-2", "r2")
    assert got == open_rec
    assert got.close_time_ns is None
    assert got.search_attributes == {}


async def test_visibility_query_pages_in_order_and_counts(store: Store) -> None:
    from engine.visibility.query import parse_query

    s = await store.acquire_shard(12, "host")
    runs = [
        run(
            f"r{i}",
            f"wf-{i}",
            vis=visibility(f"r{i}", f"wf-{i}", start=1_000 + i, closed=1 if i % 3 == 0 else 0),
        )
        for i in range(7)
    ]
    await store.write_shard(ShardWrite(12, s.range_id, runs=runs))
    other = visibility("x", "wf-x", start=5_000)
    other.domain_id = "dom-2"
    await store.write_shard(ShardWrite(12, s.range_id, runs=[run("x", "wf-x", vis=other)]))

    async def all_pages(text: str, size: int) -> tuple[list[str], int]:
        ids: list[str] = []
        token, pages = b"", 0
        while True:
            page, token = await store.query_visibility(D, parse_query(text), size, token)
            pages += 1
            ids += [r.run_id for r in page]
            if not token:
                return ids, pages

    ids, pages = await all_pages("", 3)
    assert ids == [f"r{i}" for i in range(6, -1, -1)]  # newest start first, other domain absent
    assert pages == 3
    ids, _ = await all_pages("CloseTime = missing", 2)
    assert ids == ["r5", "r4", "r2", "r1"]
    ids, _ = await all_pages("CloseStatus = 'COMPLETED'", 2)
    assert ids == ["r6", "r3", "r0"]
    ids, _ = await all_pages("WorkflowID = 'wf-1' OR WorkflowID = 'wf-6' ORDER BY StartTime ASC", 1)
    assert ids == ["r1", "r6"]
    assert await store.count_visibility(D, parse_query("")) == 7
    assert await store.count_visibility(D, parse_query("CloseTime = missing")) == 4


# --- durability -----------------------------------------------------------------------------


async def populate(store: Store) -> int:
    s = await store.acquire_shard(20, "host")
    await store.write_shard(
        ShardWrite(
            20,
            s.range_id,
            runs=[
                run(
                    next_id=3,
                    history=[batch(1, 2)],
                    current=new_current("r1"),
                    vis=visibility("r1"),
                )
            ],
            tasks=[OutboxTask(1, "transfer", b"t1"), OutboxTask(2, "timer", b"t2")],
            applied_offset=33,
            outbox_ack=1,
        )
    )
    await store.put_timers(20, [TimerRow(10, 2, b"t2")])
    await store.create_domain(DomainRecord("id-x", "x", b"info"))
    return s.range_id


async def check_populated(store: Store, range_id: int) -> None:
    info = await store.get_shard(20)
    assert info is not None
    assert (info.range_id, info.applied_offset, info.outbox_ack) == (range_id, 33, 1)
    snap = await store.get_run(20, D, "wf-1", "r1")
    assert snap is not None
    assert (snap.state, snap.next_event_id) == (b"state", 3)
    assert await store.get_current_run(20, D, "wf-1") == CurrentRun("r1", "req-r1", 0)
    assert await store.read_history(D, "wf-1", "r1", 1, 10) == [batch(1, 2)]
    assert await store.read_outbox(20, 0) == [OutboxTask(2, "timer", b"t2")]
    assert await store.due_timers(20, 100, 10) == [TimerRow(10, 2, b"t2")]
    assert await store.get_domain(name="x") == DomainRecord("id-x", "x", b"info", 0)
    assert await store.get_visibility(D, "wf-1", "r1") == visibility("r1")
    assert await open_runs(store, 20) == [RunKey(D, "wf-1", "r1")]


# -- cluster metadata: the shard count and node leases -------------------------------------------


async def test_the_shard_count_is_recorded_once_and_kept(store: Store) -> None:
    assert await store.get_num_shards() is None
    # Two first starts at once agree on one count: the first writer's.
    first, second = await asyncio.gather(store.record_num_shards(8), store.record_num_shards(4))
    assert first == second
    assert first in (8, 4)
    assert await store.record_num_shards(16) == first
    assert await store.get_num_shards() == first


async def test_a_store_from_before_counts_were_recorded_infers_it_from_its_shards(
    store: Store,
) -> None:
    # What an older build left: shard rows, no recorded count.
    for shard_id in range(6):
        await store.acquire_shard(shard_id, "old-build")
    assert await store.get_num_shards() == 6
    assert await store.record_num_shards(6) == 6
    assert await store.record_num_shards(8) == 6


def lease(token: str, node_id: str = "node-a", address: str = "127.0.0.1:7833") -> NodeLease:
    return NodeLease(node_id, token, "host-1", 4242, address, 1_700_000_000_123_456_789)


async def test_a_node_id_is_leased_to_one_holder_at_a_time(store: Store) -> None:
    first, other = lease("t1"), lease("t2", address="127.0.0.1:7834")
    assert await store.claim_node(first, 30) is None
    # The refused claimant learns who holds the id.
    assert await store.claim_node(other, 30) == first
    assert not await store.renew_node(other, 30)
    # Claiming again what one holds is harmless; renewing updates the details.
    assert await store.claim_node(first, 30) is None
    moved = dataclasses.replace(first, address="127.0.0.1:9999")
    assert await store.renew_node(moved, 30)
    assert await store.claim_node(other, 30) == moved
    # Other node ids are independent.
    assert await store.claim_node(lease("t3", node_id="node-b"), 30) is None
    # Only the holder can release it.
    await store.release_node(other)
    assert await store.claim_node(other, 30) == moved
    await store.release_node(moved)
    assert await store.claim_node(other, 30) is None
    assert not await store.renew_node(moved, 30)


async def test_a_node_lease_that_is_not_renewed_expires(store: Store) -> None:
    crashed, successor = lease("t1"), lease("t2")
    assert await store.claim_node(crashed, 1) is None
    assert await store.claim_node(successor, 30) == crashed
    loop = asyncio.get_running_loop()
    until = loop.time() + 10
    while (holder := await store.claim_node(successor, 30)) is not None:
        assert loop.time() < until, f"the lease did not expire: {holder}"
        await asyncio.sleep(0.2)
    assert not await store.renew_node(crashed, 30)


async def test_a_sqlite_file_is_served_by_one_process_at_a_time(tmp_path: Path) -> None:
    """A second process opening a file in use is refused and told who holds it; once the
    holder is killed (-9, no clean-up at all) the file opens again."""
    path = tmp_path / "held.db"
    script = textwrap.dedent(f"""
        import asyncio, sys
        from engine.persistence.sqlite.store import SqliteStore
        from tests.conformance.test_store import lease

        async def main():
            store = SqliteStore({str(path)!r})
            await store.start()
            await store.claim_node(lease("holder", node_id="node-h"), 30)
            print("open", flush=True)
            sys.stdin.read()

        asyncio.run(main())
    """)
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 30) == b"open\n"
        second = SqliteStore(str(path))
        with pytest.raises(InUseError) as refused:
            await second.start()
        message = str(refused.value)
        assert f"pid {holder.pid}" in message
        assert "node node-h" in message
        assert "serving 127.0.0.1:7833" in message
        assert "since " in message
        assert not second.database.is_open
    finally:
        holder.kill()
        await holder.wait()
    store = SqliteStore(str(path))
    await store.start()
    try:
        assert await store.get_num_shards() is None
    finally:
        await store.stop()


async def test_everything_survives_close_and_reopen(make_store: Callable[[], Store]) -> None:
    first = make_store()
    await first.start()
    range_id = await populate(first)
    await first.stop()
    second = make_store()
    await second.start()
    try:
        await check_populated(second, range_id)
        # The fence keeps working across restarts.
        assert (await second.acquire_shard(20, "host-2")).range_id > range_id
        with pytest.raises(ShardOwnershipLostError):
            await second.write_shard(ShardWrite(20, range_id, applied_offset=99))
    finally:
        await second.stop()


async def test_sqlite_write_survives_kill_9(tmp_path: Path) -> None:
    """A write that returned survives the process being killed without any shutdown."""
    path = tmp_path / "killed.db"
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from engine.persistence.sqlite.store import SqliteStore
        from tests.conformance.test_store import populate

        async def main():
            store = SqliteStore({str(path)!r})
            await store.start()
            print(await populate(store), flush=True)
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
    store = SqliteStore(str(path))
    await store.start()
    try:
        await check_populated(store, int(out))
    finally:
        await store.stop()


def test_open_store_rejects_unknown_urls() -> None:
    with pytest.raises(ValueError, match="mysql://h/db"):
        open_store("mysql://h/db")
    with pytest.raises(ValueError, match="sqlite"):
        open_store("sqlite:///")
    assert isinstance(open_store("sqlite:///tmp/x.db"), SqliteStore)
    absolute = open_store("sqlite:////abs/x.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == "/abs/x.db"
    relative = open_store("sqlite:///rel/x.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == "rel/x.db"
