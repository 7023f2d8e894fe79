"""Conformance suite for the `TaskMatcher` protocol, run against every backend in `MATCHERS`.

Each factory takes a `ManualClock` (task TTLs are engine time) and returns an unstarted
matcher. Poll and offer timeouts are real long-poll deadlines, so they stay short here.
The Redis matcher runs against the real Redis (`CADENZA_TEST_REDIS_URL`, default the one of
`deploy/local-cluster`), each test under its own key prefix; tests at the end are specific to it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from engine.clock import Clock, ManualClock, SystemClock
from engine.matching.memory import MemoryTaskMatcher
from engine.matching.protocols import PolledTask, TaskMatcher, TaskType

if TYPE_CHECKING:
    from engine.matching.redis import RedisTaskMatcher

MatcherFactory = Callable[[ManualClock], TaskMatcher]

REDIS_URL = os.environ.get(
    "CADENZA_TEST_REDIS_URL",
    f"redis://127.0.0.1:{os.environ.get('LOCAL_CLUSTER_REDIS_PORT', '6379')}/0",
)
# Every key this module writes starts with this (one value per test run), so the run's keys
# can be deleted at the end without touching anybody else's data in the shared Redis.
REDIS_RUN_PREFIX = f"cadenza-test-matching-{uuid.uuid4().hex[:12]}"
_redis_prefixes = itertools.count()
_redis_used = False


def _redis_prefix() -> str:
    global _redis_used
    _redis_used = True
    return f"{REDIS_RUN_PREFIX}-{next(_redis_prefixes)}"


def _require_redis() -> None:
    """Fail (never skip) with a clear message when the Redis the tests need is not there."""
    parts = urlsplit(REDIS_URL)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), 2).close()
    except OSError as e:
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({e}); start it with "
            "`deploy/local-cluster up redis` or point CADENZA_TEST_REDIS_URL at one",
            pytrace=False,
        )


def redis_matcher(
    clock: Clock | None = None, prefix: str | None = None, **kw: Any
) -> RedisTaskMatcher:
    from engine.matching.redis import RedisTaskMatcher

    _require_redis()
    return RedisTaskMatcher(REDIS_URL, clock=clock, key_prefix=prefix or _redis_prefix(), **kw)


MATCHERS = [
    pytest.param(lambda clock: MemoryTaskMatcher(clock=clock), id="memory"),
    pytest.param(lambda clock: redis_matcher(clock), id="redis"),
]


@pytest.fixture(scope="module", autouse=True)
def _delete_redis_keys() -> Iterator[None]:
    yield
    if not _redis_used:
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{REDIS_RUN_PREFIX}-*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


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


# --- Redis only: what the real service adds (leases, a backlog that outlives the process) -----

REPO = Path(__file__).resolve().parents[2]

# A poller in a process of its own: short block slices and lease, so redelivery is quick.
DOOMED_POLLER = textwrap.dedent(
    """
    import asyncio, sys
    from engine.matching.protocols import TaskType
    from engine.matching.redis import RedisTaskMatcher

    async def main() -> None:
        url, prefix, tl = sys.argv[1:4]
        m = RedisTaskMatcher(url, key_prefix=prefix, lease_seconds=0.3, block_slice_seconds=1.0)
        await m.start()
        await m.poll("dom-1", tl, TaskType.ACTIVITY, 60, identity="doomed")

    asyncio.run(main())
    """
)


async def _freeze_while_blocked(admin: Any, proc: asyncio.subprocess.Process, name: str) -> None:
    """SIGSTOP `proc` at a moment Redis has its poll parked in BLMOVE (as Redis sees it)."""

    async def blocked() -> bool:
        return any(
            c.get("name") == name and c.get("cmd") == "blmove" and "b" in c.get("flags", "")
            for c in await admin.client_list()
        )

    for _ in range(1000):
        if proc.returncode is not None:
            raise AssertionError(f"the poller process exited with {proc.returncode}")
        if await blocked():
            proc.send_signal(signal.SIGSTOP)
            if await blocked():
                return
            proc.send_signal(signal.SIGCONT)  # its block slice ended in between: again
        await asyncio.sleep(0.01)
    raise AssertionError("the poller process never blocked in BLMOVE")


async def test_redis_task_of_a_dead_poller_is_handed_out_again_after_its_lease(tl: str) -> None:
    import redis.asyncio as aredis

    prefix = _redis_prefix()
    name = f"doomed-{uuid.uuid4().hex[:8]}"
    url = f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}client_name={name}"
    survivor = redis_matcher(SystemClock(), prefix, sweep_interval_seconds=0.05)
    admin = aredis.Redis.from_url(REDIS_URL, decode_responses=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DOOMED_POLLER, url, prefix, tl, cwd=REPO
    )
    try:
        await survivor.start()
        # Frozen while parked, the poller is handed the task by Redis itself (BLMOVE moves it
        # into the poller's in-flight list) but never gets to acknowledge it; then it dies.
        await _freeze_while_blocked(admin, proc, name)
        await survivor.add_task(D, tl, ACT, b"precious")
        assert await survivor.backlog(D, tl, ACT) == 0, "the frozen poller should hold the task"
        proc.kill()
        await proc.wait()
        # Still in flight: its lease has not run out yet.
        assert await survivor.poll(D, tl, ACT, 0) is None
        got = await survivor.poll(D, tl, ACT, 5.0)
        assert got == PolledTask(b"precious")
        assert await survivor.poll(D, tl, ACT, 0.2) is None, "handed out again only once"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await survivor.stop()
        await admin.aclose()


async def test_redis_backlog_survives_a_new_matcher_object(tl: str) -> None:
    prefix = _redis_prefix()
    clock = ManualClock()
    first = redis_matcher(clock, prefix)
    await first.start()
    for i in range(3):
        await first.add_task(D, tl, ACT, f"t{i}".encode())
    await first.add_task(D, tl, DEC, b"decision", ttl_seconds=60)
    await first.add_task(D, tl, DEC, b"expires", ttl_seconds=1)
    await first.stop()
    del first

    second = redis_matcher(clock, prefix)
    async with second:
        clock.advance(2)
        assert await second.backlog(D, tl, ACT) == 3
        assert await second.backlog(D, tl, DEC) == 1
        got = [await second.poll(D, tl, ACT, 0) for _ in range(4)]
        assert [g.payload if g else None for g in got] == [b"t0", b"t1", b"t2", None]
        assert await second.poll(D, tl, DEC, 0) == PolledTask(b"decision")
        assert await second.poll(D, tl, DEC, 0) is None


async def test_redis_poll_released_by_stop_gives_its_task_back(tl: str) -> None:
    prefix = _redis_prefix()
    clock = ManualClock()
    first = redis_matcher(clock, prefix)
    await first.start()
    waiting = asyncio.create_task(first.poll(D, tl, ACT, WAIT, identity="w1"))
    await _until_pollers(first, tl, ACT, 1)
    await first.add_task(D, tl, ACT, b"t0")
    await first.stop()
    # Either the poll got the task before stop, or stop gave it back: never lost, never both.
    polled = await asyncio.wait_for(waiting, 1.0)
    async with redis_matcher(clock, prefix) as second:
        again = await second.poll(D, tl, ACT, 0)
    assert [p for p in (polled, again) if p is not None] == [PolledTask(b"t0")]


async def test_backlog_epoch_is_stable_while_the_backlog_lives(matcher: TaskMatcher) -> None:
    first = await matcher.backlog_epoch()
    assert first
    assert await matcher.backlog_epoch() == first


async def test_redis_backlog_epoch_is_shared_and_changes_when_redis_loses_its_data(
    tl: str,
) -> None:
    import redis.asyncio as aioredis

    prefix = _redis_prefix()
    one, two = (
        redis_matcher(ManualClock(), prefix=prefix),
        redis_matcher(ManualClock(), prefix=prefix),
    )
    await one.start()
    await two.start()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        epoch = await one.backlog_epoch()
        assert await two.backlog_epoch() == epoch  # every process sees the same storage
        await one.add_task(D, tl, DEC, b"lost")
        # What a Redis restart without its data does to this matcher's keys.
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        await client.delete(*keys)
        assert await one.backlog(D, tl, DEC) == 0
        changed = await one.backlog_epoch()
        assert changed != epoch
        assert await two.backlog_epoch() == changed
    finally:
        await client.aclose()
        await one.stop()
        await two.stop()


async def test_memory_backlog_epoch_is_per_matcher() -> None:
    assert await MemoryTaskMatcher().backlog_epoch() != await MemoryTaskMatcher().backlog_epoch()
