"""Distributed mode under faults, on the real services of `deploy/local-cluster`.

Two `cadenza serve` processes (every role) share one cluster's shards through the Kafka
consumer group. Workflows (one activity, some with a 1 s timer first) are started the way a
careful user starts them (a fixed request id per workflow, retried on UNAVAILABLE, busy and
timeouts until acknowledged) and worked on by the official client's Worker. Then:

1. one process is killed with SIGKILL while hundreds of workflows are in flight;
2. Kafka, Cassandra or Redis is stopped and started again while workflows are being started
   and worked on;
3. one process is frozen (SIGSTOP) until the group gives its shards to the other, load goes on,
   then it is thawed (SIGCONT): a zombie owner, which the shard's range_id must fence off.

After each: every acknowledged workflow completed with the right result, exactly one run per
workflow id (visibility), every full history passes `check_history`, and an activity ran more
than once only where its history records retries. Clients and workers always talk to a process
that stays up. A service that is down fails the test (see `tests/integration/cluster.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
from cadence import Client, Registry, activity, workflow
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_workflow_pb2,
    tasklist_pb2,
)
from cadence.error import CadenceRpcError
from cadence.worker import Worker
from google.protobuf import duration_pb2

from engine.execution.checker import check_history
from engine.ids import shard_for
from tests.e2e.harness import event_types
from tests.integration.cluster import (
    NUM_SHARDS,
    FaultCluster,
    ServeNode,
    after_test,
    service_down,
)

DOMAIN = "fault-tests"
ALL_SHARDS = set(range(NUM_SHARDS))
# Codes a careful caller retries with the same request id: the server was unreachable, busy,
# failed inside, or did not answer in time (the start may or may not have been applied).
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
}
CALL_TIMEOUT_S = 10.0
# A start is retried this long before the test gives up on it (an outage lasts well under it).
START_DEADLINE_S = 120.0
# Decision and activity tasks lost with a process come back after these timeouts.
DECISION_TIMEOUT_S = 5
ACTIVITY_TIMEOUT_S = 10

reg = Registry()
# Attempts each activity execution saw, per workflow key (the worker runs in this process).
_attempts: defaultdict[str, list[int]] = defaultdict(list)


@reg.activity(name="fault_step")
async def fault_step(key: str) -> str:
    _attempts[key].append(activity.info().attempt)
    return f"done {key}"


@reg.workflow(name="FaultStep")
class FaultStep:
    @workflow.run
    async def run(self, key: str, sleep_s: int) -> str:
        if sleep_s:
            await workflow.sleep(timedelta(seconds=sleep_s))
        return await fault_step.with_options(
            start_to_close_timeout=timedelta(seconds=ACTIVITY_TIMEOUT_S),
            # A task lost with a process (or a completion lost with a shard) is retried.
            retry_policy={
                "initial_interval": timedelta(seconds=1),
                "backoff_coefficient": 1.0,
                "maximum_attempts": 30,
            },
        ).execute(key)


def _rpc_code(exc: BaseException) -> grpc.StatusCode | None:
    if isinstance(exc, CadenceRpcError):
        return exc.code
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code()
    return None


async def _call(
    what: str, fn: Callable[[], Awaitable[Any]], deadline_s: float = START_DEADLINE_S
) -> Any:
    """`await fn()` until it succeeds, retrying retryable statuses for up to `deadline_s`."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    backoff = 0.2
    while True:
        try:
            return await fn()
        except (CadenceRpcError, grpc.aio.AioRpcError) as exc:
            if _rpc_code(exc) not in RETRYABLE or loop.time() > until:
                raise AssertionError(f"{what}: {exc!r}") from exc
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 2.0)


class Workload:
    """FaultStep runs started like a careful user starts them, then checked."""

    def __init__(self, client: Client, task_list: str) -> None:
        self.client = client
        self.task_list = task_list
        self.tag = uuid.uuid4().hex[:8]
        self.sleeps: dict[str, int] = {}  # key -> timer seconds, for every start attempted
        self.acked: dict[str, str] = {}  # key -> run id, once the start was acknowledged
        self.retried: Counter[str] = Counter()  # status -> start attempts that were retried
        self._tasks: set[asyncio.Task[None]] = set()

    def workflow_id(self, key: str) -> str:
        return f"fault-{key}"

    def request(self, key: str) -> service_workflow_pb2.StartWorkflowExecutionRequest:
        return service_workflow_pb2.StartWorkflowExecutionRequest(
            domain=DOMAIN,
            workflow_id=self.workflow_id(key),
            workflow_type=common_pb2.WorkflowType(name="FaultStep"),
            task_list=tasklist_pb2.TaskList(name=self.task_list),
            input=self.client.data_converter.to_data([key, self.sleeps[key]]),
            execution_start_to_close_timeout=duration_pb2.Duration(seconds=300),
            task_start_to_close_timeout=duration_pb2.Duration(seconds=DECISION_TIMEOUT_S),
            identity="fault-test",
            # Fixed per workflow: every retry is the same start, which the shard dedupes.
            request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"cadenza-fault/{key}")),
        )

    async def start(self, key: str) -> None:
        request = self.request(key)
        loop = asyncio.get_running_loop()
        until = loop.time() + START_DEADLINE_S
        backoff = 0.2
        while True:
            try:
                resp = await self.client.workflow_stub.StartWorkflowExecution(
                    request, timeout=CALL_TIMEOUT_S
                )
            except (CadenceRpcError, grpc.aio.AioRpcError) as exc:
                code = _rpc_code(exc)
                if code not in RETRYABLE or loop.time() > until:
                    raise AssertionError(f"start of {key} failed: {exc!r}") from exc
                self.retried[str(code)] += 1
            else:
                self.acked[key] = resp.run_id
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def spawn(self, index: int) -> asyncio.Task[None]:
        key = f"{self.tag}-{index}"
        self.sleeps[key] = 1 if index % 4 == 0 else 0  # a quarter wait on a timer first
        task = asyncio.create_task(self.start(key))
        self._tasks.add(task)
        return task

    async def start_many(self, count: int, concurrency: int) -> None:
        """Start `count` workflows, `concurrency` start calls at a time."""
        sem = asyncio.Semaphore(concurrency)
        index = iter(range(count))

        async def lane() -> None:
            for i in index:
                async with sem:
                    await self.spawn(i)

        await asyncio.gather(*(lane() for _ in range(concurrency)))

    async def start_paced(self, stop: asyncio.Event, per_second: float, in_flight: int) -> None:
        """Start workflows at `per_second` until `stop`, with at most `in_flight` start calls
        outstanding (while a service is down they wait; the rest queue behind them)."""
        sem = asyncio.Semaphore(in_flight)
        index = 0
        while not stop.is_set():
            await sem.acquire()
            task = self.spawn(index)
            task.add_done_callback(lambda _: sem.release())
            index += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1 / per_second)

    async def cancel_pending(self) -> None:
        """Give up the starts still retrying (a test that already failed)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def starts_done(self, timeout: float) -> None:
        """Every start attempted is acknowledged (a start that gave up fails the test)."""
        try:
            await asyncio.wait_for(asyncio.gather(*self._tasks), timeout)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.sleeps) - len(self.acked)} starts still not acknowledged after "
                f"{timeout:.0f} s (retried: {dict(self.retried)})"
            ) from None

    async def wait_acked(self, more_than: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while len(self.acked) <= more_than:
            failed = [e for t in self._tasks if t.done() and (e := t.exception()) is not None]
            if failed:
                raise failed[0]
            if loop.time() > until:
                raise AssertionError(
                    f"only {len(self.acked)} starts acknowledged in {timeout:.0f} s "
                    f"(waiting for more than {more_than}; retried: {dict(self.retried)})"
                )
            await asyncio.sleep(0.2)

    # -- results ---------------------------------------------------------------------------

    async def close_event(self, key: str) -> history_pb2.HistoryEvent:
        execution = common_pb2.WorkflowExecution(
            workflow_id=self.workflow_id(key), run_id=self.acked[key]
        )
        while True:
            request = service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=DOMAIN,
                workflow_execution=execution,
                wait_for_new_event=True,
                history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
            )
            resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse = await _call(
                f"close of {key}",
                partial(self.client.workflow_stub.GetWorkflowExecutionHistory, request, timeout=25),
            )
            events = resp.history.events
            if events:
                return events[-1]

    async def history(self, key: str) -> list[history_pb2.HistoryEvent]:
        execution = common_pb2.WorkflowExecution(
            workflow_id=self.workflow_id(key), run_id=self.acked[key]
        )
        events: list[history_pb2.HistoryEvent] = []
        token = b""
        while True:
            request = service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=DOMAIN, workflow_execution=execution, next_page_token=token
            )
            resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse = await _call(
                f"history of {key}",
                partial(
                    self.client.workflow_stub.GetWorkflowExecutionHistory,
                    request,
                    timeout=CALL_TIMEOUT_S,
                ),
            )
            events.extend(resp.history.events)
            token = resp.next_page_token
            if not token:
                return events

    async def runs_by_workflow(self) -> dict[str, list[str]]:
        """Every run of the domain that visibility knows, open or closed, by workflow id."""
        stub = service_visibility_pb2_grpc.VisibilityAPIStub(self.client._channel)  # type: ignore[no-untyped-call]
        runs: dict[str, list[str]] = defaultdict(list)
        token = b""
        while True:
            request = service_visibility_pb2.ScanWorkflowExecutionsRequest(
                domain=DOMAIN, page_size=1000, next_page_token=token
            )
            resp = await _call(
                "visibility scan",
                partial(stub.ScanWorkflowExecutions, request, timeout=CALL_TIMEOUT_S),
            )
            for info in resp.executions:
                runs[info.workflow_execution.workflow_id].append(info.workflow_execution.run_id)
            token = resp.next_page_token
            if not token:
                return dict(runs)

    async def wait_all_closed(self, timeout: float) -> dict[str, history_pb2.HistoryEvent]:
        sem = asyncio.Semaphore(32)
        closes: dict[str, history_pb2.HistoryEvent] = {}

        async def one(key: str) -> None:
            async with sem:
                closes[key] = await self.close_event(key)

        try:
            await asyncio.wait_for(asyncio.gather(*(one(k) for k in self.acked)), timeout)
        except TimeoutError:
            stuck = sorted(set(self.acked) - set(closes))
            shapes = {k: event_types(await self.history(k)) for k in stuck[:5]}
            raise AssertionError(
                f"{len(stuck)} of {len(self.acked)} workflows did not close in {timeout:.0f} s; "
                f"first ones: {shapes}"
            ) from None
        return closes

    async def verify(self, budget: Budget) -> None:
        """Every workflow started: completed once, right result, valid history."""
        await self.starts_done(budget.left(60))
        assert set(self.acked) == set(self.sleeps)
        closes = await self.wait_all_closed(budget.left(90))
        problems: list[str] = []
        for key in sorted(self.acked):
            close = closes[key]
            if not close.HasField("workflow_execution_completed_event_attributes"):
                problems.append(f"{key}: closed by {event_types([close])}")
                continue
            result = close.workflow_execution_completed_event_attributes.result.data
            if json.loads(result) != f"done {key}":
                problems.append(f"{key}: result {result!r}")
            events = await self.history(key)
            try:
                check_history(events)
            except AssertionError as exc:
                problems.append(f"{key}: invalid history: {exc}")
            types = event_types(events)
            problems += [
                f"{key}: {types.count(kind)} x {kind}: {types}"
                for kind in ("WorkflowExecutionStarted", "ActivityTaskScheduled")
                if types.count(kind) != 1
            ]
            if types.count("ActivityTaskCompleted") != 1:
                problems.append(f"{key}: activity did not complete exactly once: {types}")
            timers = 1 if self.sleeps[key] else 0
            if not types.count("TimerStarted") == types.count("TimerFired") == timers:
                problems.append(f"{key}: timers {types}")
            problems += self._activity_runs(key, events)
        runs = await self.runs_by_workflow()
        expected = {self.workflow_id(k): [run_id] for k, run_id in self.acked.items()}
        wrong = {
            w: runs.get(w) for w in runs.keys() | expected.keys() if runs.get(w) != expected.get(w)
        }
        if wrong:
            problems.append(
                f"visibility: not exactly the acknowledged run per workflow id: {wrong}"
            )
        assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:20])

    def _activity_runs(self, key: str, events: list[history_pb2.HistoryEvent]) -> list[str]:
        """An activity ran more than once only if its history shows retries: the recorded
        (completing) attempt is the last that ran, and no attempt ran twice."""
        started = [e for e in events if e.HasField("activity_task_started_event_attributes")]
        if len(started) != 1:
            return [f"{key}: {len(started)} ActivityTaskStarted events"]
        attempt = started[0].activity_task_started_event_attributes.attempt
        seen = _attempts[key]
        if attempt == 0 and seen == [0]:
            return []
        if attempt > 0 and len(set(seen)) == len(seen) and max(seen, default=-1) == attempt:
            return []
        return [f"{key}: activity attempts run {seen}, history records attempt {attempt}"]


# -- the cluster ------------------------------------------------------------------------------

TEST_TIMEOUT_S = 175
# Kept out of every wait, so that a failing test still cleans up (and brings a stopped service
# back up) before pytest-timeout stops it where it stands.
CLEANUP_RESERVE_S = 30


class Budget:
    """The time a test may spend waiting: its timeout less the clean-up reserve."""

    def __init__(self) -> None:
        self.until = time.monotonic() + TEST_TIMEOUT_S - CLEANUP_RESERVE_S

    def left(self, cap: float) -> float:
        return max(1.0, min(cap, self.until - time.monotonic()))


@pytest.fixture(autouse=True)
def _backstop() -> Iterator[None]:
    yield
    after_test()


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[tuple[ServeNode, ServeNode, Client]]:
    """Two all-role serve processes sharing the shards; a client on the first."""
    cluster = FaultCluster(tmp_path, DOMAIN)
    clients: list[Client] = []
    try:
        await cluster.apply_schema()
        a = cluster.start_node("node-a")
        client = Client(domain=DOMAIN, target=a.address)
        clients.append(client)
        await a.wait_ready(client, DOMAIN)
        b = cluster.start_node("node-b")
        probe = Client(domain=DOMAIN, target=b.address)
        clients.append(probe)
        await b.wait_ready(probe, DOMAIN)

        def split() -> bool:
            owned_a, owned_b = a.owned_shards(), b.owned_shards()
            return bool(owned_a and owned_b and owned_a | owned_b == ALL_SHARDS)

        await until(split, 60, lambda: f"shards a={a.owned_shards()} b={b.owned_shards()}")
        await cluster.remember_domain(client)
        yield a, b, client
    finally:
        for c in clients:
            await c.close()
        await cluster.cleanup()


async def until(
    check: Callable[[], bool], timeout: float, describe: Callable[[], str] | None = None
) -> None:
    """Poll a synchronous condition (a log, a counter) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            detail = describe() if describe is not None else ""
            raise AssertionError(f"condition not met in {timeout} s {detail}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def workload(client: Client, task_list: str) -> AsyncIterator[Workload]:
    load = Workload(client, task_list)
    try:
        yield load
    finally:
        await load.cancel_pending()


def fast_worker(client: Client, task_list: str) -> Worker:
    return Worker(
        client,
        task_list,
        reg,
        decision_task_pollers=8,
        activity_task_pollers=4,
    )


# -- 1. kill -9 ---------------------------------------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_kill_9_of_one_of_two_processes_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    budget = Budget()
    async with two_nodes(tmp_path) as (a, b, client):
        task_list = f"tl-{uuid.uuid4().hex[:8]}"
        async with workload(client, task_list) as load, fast_worker(client, task_list):
            starting = asyncio.create_task(load.start_many(240, concurrency=32))
            try:
                await load.wait_acked(199, timeout=budget.left(60))
                victim_shards = b.owned_shards()
                # Started and not yet at their activity's end: still in flight (at least).
                open_on_victim = [
                    k
                    for k in load.acked
                    if not _attempts[k]
                    and shard_for(load.workflow_id(k), NUM_SHARDS) in victim_shards
                ]
                open_now = [k for k in load.acked if not _attempts[k]]
                b.kill()
                # Hundreds in flight, plenty of them on the shards of the killed process.
                assert len(open_now) >= 100, len(open_now)
                assert len(open_on_victim) >= 20, len(open_on_victim)
                await starting
            finally:
                if not starting.done():
                    starting.cancel()
            await load.verify(budget)
        # The survivor took every shard of the killed process.
        assert a.owned_shards() == ALL_SHARDS, a.owned_shards()
        assert len(load.acked) == 240


# -- 2. service restarts ------------------------------------------------------------------------


# How long each service stays down (on top of its stop and start). Kafka: longer than the
# producer's 30 s request timeout, so produces fail rather than wait the outage out.
# Cassandra takes ~20 s to come back anyway. Redis: longer than a few quick retries.
OUTAGE_S = {"kafka": 30.0, "cassandra": 5.0, "redis": 10.0}


@pytest.mark.parametrize("service", list(OUTAGE_S))
@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_a_service_restart_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, service: str
) -> None:
    budget = Budget()
    async with two_nodes(tmp_path) as (a, b, client):
        task_list = f"tl-{uuid.uuid4().hex[:8]}"
        async with workload(client, task_list) as load, fast_worker(client, task_list):
            stop = asyncio.Event()
            starting = asyncio.create_task(load.start_paced(stop, per_second=8, in_flight=64))
            try:
                await load.wait_acked(20, timeout=budget.left(60))
                async with service_down(service):
                    # Down for a while: starts, decisions and activities hit the outage.
                    await asyncio.sleep(OUTAGE_S[service])
                # Back up: the load must get going again.
                await load.wait_acked(len(load.acked) + 20, timeout=budget.left(90))
            finally:
                stop.set()
                await starting
            await load.verify(budget)
        assert a.alive(), "a serve process died in the restart"
        assert b.alive(), "a serve process died in the restart"


# -- 3. a zombie owner ------------------------------------------------------------------------


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_a_frozen_owner_that_wakes_up_is_fenced_off(tmp_path: Path) -> None:
    budget = Budget()
    async with two_nodes(tmp_path) as (a, b, client):
        task_list = f"tl-{uuid.uuid4().hex[:8]}"
        async with workload(client, task_list) as load, fast_worker(client, task_list):
            stop = asyncio.Event()
            starting = asyncio.create_task(load.start_paced(stop, per_second=5, in_flight=48))
            try:
                await load.wait_acked(20, timeout=budget.left(60))
                frozen_shards = b.owned_shards()
                assert frozen_shards
                b.pause()
                try:
                    # Past the session timeout the group hands b's shards to a.
                    await until(
                        lambda: a.owned_shards() == ALL_SHARDS,
                        budget.left(60),
                        lambda: f"a owns {a.owned_shards()}",
                    )
                    await load.wait_acked(len(load.acked) + 20, timeout=budget.left(60))
                    mark = len(b.records())
                finally:
                    b.resume()

                def b_noticed() -> bool:
                    lost = {
                        int(r["shard_id"])
                        for r in b.records()[mark:]
                        if r.get("event") in ("shard_ownership_lost", "shard_released")
                    }
                    return frozen_shards <= lost

                await until(b_noticed, budget.left(60), lambda: b.tail())
                await load.wait_acked(len(load.acked) + 20, timeout=budget.left(60))
            finally:
                stop.set()
                await starting
            await load.verify(budget)
        assert b.alive(), "the thawed process died instead of standing down"
