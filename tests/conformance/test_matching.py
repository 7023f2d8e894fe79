"""Conformance suite for the `TaskMatcher` protocol, run against every backend in `MATCHERS`.

Each factory takes a `ManualClock` (task TTLs are engine time) and returns an unstarted
matcher. Poll and offer timeouts are real long-poll deadlines, so they stay short here.
The Redis matcher joins `MATCHERS` when its adapter lands.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from engine.clock import ManualClock
from engine.matching.memory import MemoryTaskMatcher
from engine.matching.protocols import PolledTask, TaskMatcher, TaskType

MatcherFactory = Callable[[ManualClock], TaskMatcher]

MATCHERS = [
    pytest.param(lambda clock: MemoryTaskMatcher(clock=clock), id="memory"),
]

D = "dom-1"
TL = "tl-1"
DEC = TaskType.DECISION
ACT = TaskType.ACTIVITY
# Long enough never to expire in a passing test, short enough to fail fast.
WAIT = 5.0

_names = itertools.count()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=MATCHERS)
async def matcher(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[TaskMatcher]:
    factory: MatcherFactory = request.param
    m = factory(clock)
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
def tl() -> str:
    """A fresh task list per test, so shared backends (Redis) never leak state across tests."""
    return f"{TL}-{next(_names)}"


async def _until_pollers(m: TaskMatcher, tl: str, task_type: TaskType, n: int) -> None:
    """Wait until `n` pollers are registered as waiting (observed through `pollers()`)."""
    for _ in range(500):
        if len(await m.pollers(D, tl, task_type)) >= n:
            # Registration and waiting happen in the same step for the memory backend; one
            # extra loop turn lets any backend finish parking the poller.
            await asyncio.sleep(0.01)
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{n} pollers never showed up")


async def test_sync_match_hands_task_to_waiting_poller(matcher: TaskMatcher, tl: str) -> None:
    poller = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT, identity="w1"))
    await _until_pollers(matcher, tl, ACT, 1)
    await matcher.add_task(D, tl, ACT, b"task-1")
    got = await asyncio.wait_for(poller, 1.0)
    assert got == PolledTask(b"task-1")
    assert await matcher.backlog(D, tl, ACT) == 0


async def test_backlog_is_fifo(matcher: TaskMatcher, tl: str) -> None:
    for i in range(5):
        await matcher.add_task(D, tl, ACT, f"t{i}".encode())
    assert await matcher.backlog(D, tl, ACT) == 5
    got = [await matcher.poll(D, tl, ACT, 0.1) for _ in range(5)]
    assert [g.payload for g in got if g is not None] == [b"t0", b"t1", b"t2", b"t3", b"t4"]
    assert await matcher.backlog(D, tl, ACT) == 0


async def test_task_lists_are_isolated(matcher: TaskMatcher, tl: str) -> None:
    await matcher.add_task(D, tl, ACT, b"activity")
    await matcher.add_task("dom-2", tl, DEC, b"other-domain")
    assert await matcher.poll(D, tl, DEC, 0.05) is None
    assert await matcher.poll(D, tl + "-x", ACT, 0.05) is None
    got = await matcher.poll(D, tl, ACT, 0.05)
    assert got is not None
    assert got.payload == b"activity"


async def test_poll_timeout_returns_none_quickly(matcher: TaskMatcher, tl: str) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await matcher.poll(D, tl, ACT, 0.1) is None
    elapsed = loop.time() - started
    assert 0.09 <= elapsed < 0.5


async def test_zero_timeout_poll_takes_backlog_without_waiting(
    matcher: TaskMatcher, tl: str
) -> None:
    assert await matcher.poll(D, tl, ACT, 0) is None
    await matcher.add_task(D, tl, ACT, b"ready")
    got = await matcher.poll(D, tl, ACT, 0)
    assert got is not None
    assert got.payload == b"ready"


async def test_expired_task_is_dropped(matcher: TaskMatcher, clock: ManualClock, tl: str) -> None:
    await matcher.add_task(D, tl, ACT, b"short", ttl_seconds=10)
    await matcher.add_task(D, tl, ACT, b"forever")
    await matcher.add_task(D, tl, ACT, b"long", ttl_seconds=100)
    clock.advance(10)
    assert await matcher.backlog(D, tl, ACT) == 2
    got = [await matcher.poll(D, tl, ACT, 0.05) for _ in range(3)]
    assert [g.payload if g else None for g in got] == [b"forever", b"long", None]


async def test_task_expiring_in_backlog_is_not_handed_out(
    matcher: TaskMatcher, clock: ManualClock, tl: str
) -> None:
    await matcher.add_task(D, tl, ACT, b"stale", ttl_seconds=1)
    clock.advance(5)
    assert await matcher.poll(D, tl, ACT, 0.05) is None


async def test_query_offer_taken_by_waiting_decision_poller(matcher: TaskMatcher, tl: str) -> None:
    poller = asyncio.create_task(matcher.poll(D, tl, DEC, WAIT, identity="w1"))
    await _until_pollers(matcher, tl, DEC, 1)
    assert await matcher.offer_query(D, tl, b"query-1", 1.0) is True
    assert await asyncio.wait_for(poller, 1.0) == PolledTask(b"query-1", is_query=True)


async def test_query_offer_waits_for_a_poller_to_arrive(matcher: TaskMatcher, tl: str) -> None:
    offer = asyncio.create_task(matcher.offer_query(D, tl, b"query-1", WAIT))
    await asyncio.sleep(0.02)
    got = await matcher.poll(D, tl, DEC, 1.0)
    assert got == PolledTask(b"query-1", is_query=True)
    assert await asyncio.wait_for(offer, 1.0) is True


async def test_query_offer_fails_without_poller_and_is_not_stored(
    matcher: TaskMatcher, tl: str
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await matcher.offer_query(D, tl, b"query-1", 0.1) is False
    assert loop.time() - started < 0.5
    # Never stored: a later poller does not see the failed query.
    assert await matcher.poll(D, tl, DEC, 0.05) is None
    assert await matcher.backlog(D, tl, DEC) == 0


async def test_query_offer_ignores_activity_pollers(matcher: TaskMatcher, tl: str) -> None:
    poller = asyncio.create_task(matcher.poll(D, tl, ACT, 0.3))
    await asyncio.sleep(0.02)
    assert await matcher.offer_query(D, tl, b"query-1", 0.1) is False
    assert await poller is None


async def test_queries_are_preferred_over_backlog(matcher: TaskMatcher, tl: str) -> None:
    await matcher.add_task(D, tl, DEC, b"decision-1")
    offer = asyncio.create_task(matcher.offer_query(D, tl, b"query-1", WAIT))
    await asyncio.sleep(0.02)
    first = await matcher.poll(D, tl, DEC, 1.0)
    second = await matcher.poll(D, tl, DEC, 1.0)
    assert first == PolledTask(b"query-1", is_query=True)
    assert second == PolledTask(b"decision-1")
    assert await offer is True


async def test_cancelled_query_offer_is_withdrawn(matcher: TaskMatcher, tl: str) -> None:
    offer = asyncio.create_task(matcher.offer_query(D, tl, b"query-1", WAIT))
    await asyncio.sleep(0.02)
    offer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await offer
    assert await matcher.poll(D, tl, DEC, 0.05) is None


async def test_no_task_handed_to_two_pollers(matcher: TaskMatcher, tl: str) -> None:
    pollers = [
        asyncio.create_task(matcher.poll(D, tl, ACT, 0.5, identity=f"w{i}")) for i in range(10)
    ]
    await _until_pollers(matcher, tl, ACT, 10)
    await matcher.add_task(D, tl, ACT, b"only-one")
    results = await asyncio.gather(*pollers)
    assert [r for r in results if r is not None] == [PolledTask(b"only-one")]


async def test_cancelled_poller_does_not_lose_a_task(matcher: TaskMatcher, tl: str) -> None:
    doomed = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT, identity="doomed"))
    await _until_pollers(matcher, tl, ACT, 1)
    # Hand the task to the waiting poller and cancel it in the same loop turn, before it can
    # resume: the task sits in its future and must survive the cancellation.
    await matcher.add_task(D, tl, ACT, b"precious")
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    got = await matcher.poll(D, tl, ACT, 1.0)
    assert got == PolledTask(b"precious")


async def test_cancelled_poller_passes_task_to_next_waiting_poller(
    matcher: TaskMatcher, tl: str
) -> None:
    doomed = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT, identity="doomed"))
    await _until_pollers(matcher, tl, ACT, 1)
    survivor = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT, identity="survivor"))
    await _until_pollers(matcher, tl, ACT, 2)
    await matcher.add_task(D, tl, ACT, b"precious")
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert await asyncio.wait_for(survivor, 1.0) == PolledTask(b"precious")


async def test_cancelled_decision_poller_passes_query_on(matcher: TaskMatcher, tl: str) -> None:
    doomed = asyncio.create_task(matcher.poll(D, tl, DEC, WAIT, identity="doomed"))
    await _until_pollers(matcher, tl, DEC, 1)
    offer = asyncio.create_task(matcher.offer_query(D, tl, b"query-1", WAIT))
    await asyncio.sleep(0)  # the offer runs and hands the query to the waiting poller
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert not offer.done(), "the offer must not succeed while nobody has the query"
    got = await matcher.poll(D, tl, DEC, 1.0)
    assert got == PolledTask(b"query-1", is_query=True)
    assert await asyncio.wait_for(offer, 1.0) is True


async def test_cancelled_poller_leaves_no_waiter_behind(matcher: TaskMatcher, tl: str) -> None:
    doomed = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT))
    await asyncio.sleep(0.02)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    # The task must go to the backlog, not to the cancelled poller.
    await matcher.add_task(D, tl, ACT, b"t")
    assert await matcher.backlog(D, tl, ACT) == 1


async def test_many_concurrent_pollers_each_task_delivered_once(
    matcher: TaskMatcher, tl: str
) -> None:
    n = 200

    async def worker(i: int) -> list[bytes]:
        got: list[bytes] = []
        while True:
            task = await matcher.poll(D, tl, ACT, 0.2, identity=f"w{i % 7}")
            if task is None:
                return got
            got.append(task.payload)

    workers = [asyncio.create_task(worker(i)) for i in range(50)]

    async def producer(start: int) -> None:
        for i in range(start, n, 4):
            await matcher.add_task(D, tl, ACT, f"t{i}".encode())
            if i % 3 == 0:
                await asyncio.sleep(0)

    await asyncio.gather(*(producer(k) for k in range(4)))
    delivered = [p for batch in await asyncio.gather(*workers) for p in batch]
    assert sorted(delivered) == sorted(f"t{i}".encode() for i in range(n))
    assert len(delivered) == len(set(delivered))


async def test_pollers_reports_recent_identities(
    matcher: TaskMatcher, clock: ManualClock, tl: str
) -> None:
    assert await matcher.pollers(D, tl, DEC) == []
    await matcher.poll(D, tl, DEC, 0, identity="alice")
    clock.advance(1)
    await matcher.poll(D, tl, DEC, 0, identity="bob")
    infos = await matcher.pollers(D, tl, DEC)
    assert [p.identity for p in infos] == ["bob", "alice"]
    assert infos[0].last_access_ns == clock.now_ns()
    assert await matcher.pollers(D, tl, ACT) == []
    # Pollers drop out of the list once they have been quiet for a long time.
    clock.advance(3600)
    assert await matcher.pollers(D, tl, DEC) == []


async def test_stop_releases_waiting_pollers(matcher: TaskMatcher, tl: str) -> None:
    poller = asyncio.create_task(matcher.poll(D, tl, ACT, WAIT))
    offer = asyncio.create_task(matcher.offer_query(D, tl, b"query-1", WAIT))
    await asyncio.sleep(0.02)
    await matcher.stop()
    assert await asyncio.wait_for(poller, 1.0) is None
    assert await asyncio.wait_for(offer, 1.0) is False
