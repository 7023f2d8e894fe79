"""Durability: the server stops (cleanly, or by kill -9) in the middle of workflows, a new one
starts on the same SQLite file, and every workflow finishes with a valid history and nothing
lost or duplicated.

In-process tests stop a `Server` and start a new one on the same file and port, so the same
client and worker carry on: an activity running across the restart, a pending user timer, a
pending activity retry, a decision scheduled but not yet polled, signals and cancel requests
acknowledged before the stop. The kill -9 test runs `python -m engine.cli dev` as a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cadence import Client, Registry, activity, workflow
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_domain_pb2,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_workflow_pb2,
)
from cadence.worker import Worker

from engine.clock import ManualClock
from engine.execution.checker import check_history
from engine.server import Server
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    eventually,
    full_history,
    register_domain,
    running_server,
    worker_for,
)

REPO = Path(__file__).resolve().parents[2]

reg = Registry()

# Activity bookkeeping, shared with the tests (workers run in this process).
_gates: dict[str, asyncio.Event] = {}
_calls: defaultdict[str, list[int]] = defaultdict(list)  # key -> attempts seen


def _gate(key: str) -> asyncio.Event:
    return _gates.setdefault(key, asyncio.Event())


@reg.activity()
async def gated(key: str) -> str:
    """Runs until the test opens its gate; counts its invocations."""
    _calls[key].append(activity.info().attempt)
    await _gate(key).wait()
    return f"done {key}"


@reg.activity()
async def flaky(key: str) -> str:
    """Fails its first attempt, succeeds on the next."""
    attempt = activity.info().attempt
    _calls[key].append(attempt)
    if attempt == 0:
        raise RuntimeError("first attempt fails")
    return f"recovered {key}"


@reg.activity()
async def step(key: str) -> str:
    """Completes at once for keys ending in 'odd', waits on the gate otherwise."""
    _calls[key].append(activity.info().attempt)
    if not key.endswith("odd"):
        await _gate(key).wait()
    return f"step {key}"


@reg.workflow()
class RunsGated:
    @workflow.run
    async def run(self, key: str) -> str:
        return await gated.with_options(schedule_to_close_timeout=timedelta(seconds=60)).execute(
            key
        )


@reg.workflow()
class Sleeps:
    @workflow.run
    async def run(self, seconds: int) -> str:
        await workflow.sleep(timedelta(seconds=seconds))
        return "woke"


@reg.workflow()
class RetriesFlaky:
    @workflow.run
    async def run(self, key: str) -> str:
        return await flaky.with_options(
            schedule_to_close_timeout=timedelta(seconds=60),
            retry_policy={
                "initial_interval": timedelta(seconds=5),
                "backoff_coefficient": 1.0,
                "maximum_attempts": 3,
            },
        ).execute(key)


@reg.workflow()
class Echo:
    @workflow.run
    async def run(self, value: str) -> str:
        return value


@reg.workflow()
class Collects:
    """Collects "add" signals until "finish"; cancellable while it waits."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.done = False

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.added.append(value)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.added


@reg.workflow()
class Survivor:
    """The kill -9 workload: an activity, a 4 s timer, then signals until "finish"."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.done = False

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.added.append(value)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, key: str) -> dict[str, Any]:
        result = await step.with_options(schedule_to_close_timeout=timedelta(seconds=60)).execute(
            key
        )
        await workflow.sleep(timedelta(seconds=4))
        await workflow.wait_condition(lambda: self.done)
        return {"step": result, "added": self.added}


@reg.workflow()
class Quick:
    @workflow.run
    async def run(self, key: str) -> str:
        return await step.with_options(
            schedule_to_close_timeout=timedelta(seconds=60),
            start_to_close_timeout=timedelta(seconds=2),
            retry_policy={
                "initial_interval": timedelta(seconds=1),
                "backoff_coefficient": 1.0,
                "maximum_attempts": 3,
            },
        ).execute(key)


# -- helpers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client_for(port: int) -> Client:
    """A client of the server on `port` that reconnects quickly once a server is back."""
    return Client(
        domain=DOMAIN,
        target=f"127.0.0.1:{port}",
        channel_arguments={
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.min_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 500,
        },
    )


@contextlib.asynccontextmanager
async def server_on(db: Path, port: int, clock: ManualClock | None = None) -> AsyncIterator[Server]:
    async with running_server(db, clock, port=port) as server:
        yield server


async def history(
    client: Client, execution: common_pb2.WorkflowExecution
) -> list[history_pb2.HistoryEvent]:
    events = await full_history(client, execution)
    check_history(events)
    return events


async def wait_for_types(
    client: Client, execution: common_pb2.WorkflowExecution, *types: str
) -> list[history_pb2.HistoryEvent]:
    """Wait until the history holds every one of `types`."""
    events: list[history_pb2.HistoryEvent] = []

    async def check() -> bool:
        nonlocal events
        events = await full_history(client, execution)
        got = event_types(events)
        return all(t in got for t in types)

    try:
        await eventually(check, timeout=20)
    except AssertionError:
        raise AssertionError(f"history {event_types(events)} lacks one of {types}") from None
    return events


async def describe(
    client: Client, execution: common_pb2.WorkflowExecution
) -> service_workflow_pb2.DescribeWorkflowExecutionResponse:
    resp: service_workflow_pb2.DescribeWorkflowExecutionResponse = (
        await client.workflow_stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=execution
            )
        )
    )
    return resp


async def runs_of(client: Client, workflow_id: str) -> list[str]:
    """Every run of `workflow_id` visibility knows about, open or closed."""
    stub = service_visibility_pb2_grpc.VisibilityAPIStub(client._channel)  # type: ignore[no-untyped-call]
    resp = await stub.ListWorkflowExecutions(
        service_visibility_pb2.ListWorkflowExecutionsRequest(
            domain=DOMAIN, page_size=100, query=f"WorkflowID = '{workflow_id}'"
        )
    )
    return [info.workflow_execution.run_id for info in resp.executions]


async def closed_within(
    client: Client, execution: common_pb2.WorkflowExecution, seconds: float = 20
) -> history_pb2.HistoryEvent:
    """The close event; a run that never closes fails the test instead of hanging it."""
    try:
        return await asyncio.wait_for(close_event(client, execution), seconds)
    except TimeoutError:
        events = await full_history(client, execution)
        raise AssertionError(
            f"{execution.workflow_id} did not close; history {event_types(events)}"
        ) from None


def result_of(closed: history_pb2.HistoryEvent) -> Any:
    assert closed.HasField("workflow_execution_completed_event_attributes"), closed
    return json.loads(closed.workflow_execution_completed_event_attributes.result.data)


CANONICAL_ACTIVITY_RUN = [
    "WorkflowExecutionStarted",
    "DecisionTaskScheduled",
    "DecisionTaskStarted",
    "DecisionTaskCompleted",
    "ActivityTaskScheduled",
    "ActivityTaskStarted",
    "ActivityTaskCompleted",
    "DecisionTaskScheduled",
    "DecisionTaskStarted",
    "DecisionTaskCompleted",
    "WorkflowExecutionCompleted",
]


# -- (1) in-process restarts ----------------------------------------------------------------------


async def test_activity_running_across_a_restart_completes_once(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    key = f"gated-{uuid.uuid4()}"
    client = client_for(port)
    try:
        async with worker_for(client, reg) as worker:
            async with server_on(db, port):
                await register_domain(client)
                run = await client.start_workflow(
                    "RunsGated",
                    key,
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=60),
                )
                await wait_for_types(client, run, "ActivityTaskStarted")
                assert _calls[key] == [0]
            # The server is down with the activity running; it finishes on the next server.
            async with server_on(db, port):
                _gate(key).set()
                closed = await closed_within(client, run)
                assert result_of(closed) == f"done {key}"
                events = await history(client, run)
    finally:
        await client.close()
    assert event_types(events) == CANONICAL_ACTIVITY_RUN
    assert _calls[key] == [0]  # not dispatched again by the new server


async def test_pending_timer_fires_after_a_restart(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    client = client_for(port)
    try:
        async with worker_for(client, reg) as worker:
            async with server_on(db, port, ManualClock()):
                await register_domain(client)
                run = await client.start_workflow(
                    "Sleeps",
                    30,
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=300),
                )
                started = await wait_for_types(client, run, "TimerStarted")
            clock = ManualClock()  # a fresh process's clock: same start, the timer 30 s ahead
            async with server_on(db, port, clock):
                # Not due yet: the restart alone must not fire it.
                assert "TimerFired" not in event_types(await full_history(client, run))
                clock.advance(30)
                closed = await closed_within(client, run)
                assert result_of(closed) == "woke"
                events = await history(client, run)
    finally:
        await client.close()
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "TimerStarted",
        "TimerFired",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert events[:5] == started[:5]  # what the first server wrote is kept as it was
    assert events[5].timer_fired_event_attributes.started_event_id == 5
    fired_at = events[5].event_time.ToNanoseconds()
    assert fired_at - events[4].event_time.ToNanoseconds() == 30 * 10**9


async def test_pending_activity_retry_survives_a_restart(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    key = f"flaky-{uuid.uuid4()}"
    client = client_for(port)
    try:
        async with worker_for(client, reg) as worker:
            async with server_on(db, port, ManualClock()):
                await register_domain(client)
                run = await client.start_workflow(
                    "RetriesFlaky",
                    key,
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=300),
                )

                async def retry_pending() -> bool:
                    pending = (await describe(client, run)).pending_activities
                    return len(pending) == 1 and pending[0].attempt == 1

                await eventually(retry_pending)
                assert _calls[key] == [0]
                pending = (await describe(client, run)).pending_activities[0]
                assert pending.last_failure.reason == "RuntimeError"
            clock = ManualClock()
            async with server_on(db, port, clock):
                clock.advance(5)  # the retry timer is due
                closed = await closed_within(client, run)
                assert result_of(closed) == f"recovered {key}"
                events = await history(client, run)
    finally:
        await client.close()
    assert event_types(events) == CANONICAL_ACTIVITY_RUN
    assert _calls[key] == [0, 1]
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 1
    assert started.last_failure.reason == "RuntimeError"


async def test_decision_scheduled_but_not_polled_survives_a_restart(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    client = client_for(port)
    task_list = f"tl-{uuid.uuid4()}"
    try:
        async with server_on(db, port):
            await register_domain(client)
            run = await client.start_workflow(
                "Echo",
                "still here",
                task_list=task_list,
                execution_start_to_close_timeout=timedelta(seconds=60),
            )
            assert event_types(await history(client, run)) == [
                "WorkflowExecutionStarted",
                "DecisionTaskScheduled",
            ]
        # Nobody polled before the stop: the next server must dispatch the decision again.
        async with server_on(db, port), worker_for(client, reg, task_list):
            closed = await closed_within(client, run)
            assert result_of(closed) == "still here"
            events = await history(client, run)
    finally:
        await client.close()
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_activity_scheduled_but_not_polled_survives_a_restart(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    key = f"unpolled-{uuid.uuid4()}"
    _gate(key).set()
    client = client_for(port)
    task_list = f"tl-{uuid.uuid4()}"
    try:
        async with server_on(db, port):
            await register_domain(client)
            # Only decisions are worked on: the activity task waits in matching.
            async with Worker(client, task_list, reg, disable_activity_worker=True):
                run = await client.start_workflow(
                    "RunsGated",
                    key,
                    task_list=task_list,
                    execution_start_to_close_timeout=timedelta(seconds=60),
                )
                await wait_for_types(client, run, "ActivityTaskScheduled")
        # Matching lived in the old process's memory: the new server must dispatch it again.
        async with server_on(db, port), worker_for(client, reg, task_list):
            closed = await closed_within(client, run)
            assert result_of(closed) == f"done {key}"
            events = await history(client, run)
    finally:
        await client.close()
    assert event_types(events) == CANONICAL_ACTIVITY_RUN
    assert _calls[key] == [0]


async def test_signals_and_cancel_acknowledged_before_a_restart_are_kept(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    client = client_for(port)
    task_list = f"tl-{uuid.uuid4()}"
    try:
        async with server_on(db, port):
            await register_domain(client)
            finishing = await client.start_workflow(
                "Collects",
                task_list=task_list,
                execution_start_to_close_timeout=timedelta(seconds=60),
            )
            cancelled = await client.start_workflow(
                "Collects",
                task_list=task_list,
                execution_start_to_close_timeout=timedelta(seconds=60),
            )
            for value in ("a", "b", "c"):
                await client.signal_workflow(finishing.workflow_id, finishing.run_id, "add", value)
            await client.signal_workflow(finishing.workflow_id, finishing.run_id, "finish")
            await client.signal_workflow(cancelled.workflow_id, cancelled.run_id, "add", "x")
            await client.cancel_workflow(cancelled.workflow_id, cancelled.run_id)
        async with server_on(db, port), worker_for(client, reg, task_list):
            assert result_of(await closed_within(client, finishing)) == ["a", "b", "c"]
            cancel_close = await closed_within(client, cancelled)
            finishing_events = await history(client, finishing)
            cancelled_events = await history(client, cancelled)
    finally:
        await client.close()
    assert cancel_close.HasField("workflow_execution_canceled_event_attributes")
    assert event_types(finishing_events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionSignaled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert event_types(cancelled_events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionCancelRequested",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCanceled",
    ]


# -- (2) kill -9 of a real server process ---------------------------------------------------------


class DevServer:
    """`python -m engine.cli dev` on a fixed port and SQLite file, killed the hard way."""

    def __init__(self, db: Path, port: int, log: Path) -> None:
        self.db, self.port, self.log = db, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, client: Client) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220  (returns at once)
                [
                    sys.executable, "-m", "engine.cli", "dev",
                    "--port", str(self.port), "--db", str(self.db), "--domain", DOMAIN,
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

        async def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                await client.domain_stub.DescribeDomain(
                    service_domain_pb2.DescribeDomainRequest(name=DOMAIN), timeout=0.5
                )
            except Exception:  # noqa: BLE001  (not up yet)
                return False
            return True

        await eventually(ready, timeout=20, interval=0.1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.mark.embedded_only  # runs `cadenza dev` (SQLite) itself
async def test_kill_dash_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db, port = tmp_path / "cadenza.db", free_port()
    dev = DevServer(db, port, tmp_path / "server.log")
    client = client_for(port)
    tag = uuid.uuid4().hex[:8]
    keys = [f"{tag}-{i}-{'odd' if i % 2 else 'even'}" for i in range(8)]
    late_keys = [f"{tag}-late-{i}-odd" for i in range(6)]
    acked_late: dict[str, str] = {}
    try:
        await dev.start(client)
        async with worker_for(client, reg) as worker:
            runs: dict[str, common_pb2.WorkflowExecution] = {}
            for key in keys:
                runs[key] = await client.start_workflow(
                    "Survivor",
                    key,
                    workflow_id=f"survivor-{key}",
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=120),
                    # A decision handed out just before the kill is retried after 2 s.
                    task_start_to_close_timeout=timedelta(seconds=2),
                )
            # Mid-flight: even keys sit in their activity, odd keys in their 4 s timer.
            for key in keys:
                await wait_for_types(
                    client,
                    runs[key],
                    "TimerStarted" if key.endswith("odd") else "ActivityTaskStarted",
                )
            for key in keys:
                for value in ("a", "b"):
                    await client.signal_workflow(
                        runs[key].workflow_id, runs[key].run_id, "add", f"{value}-{key}"
                    )

            async def start_late(key: str) -> None:
                # Started while the server dies: acknowledged only if the call returns (the
                # client retries the same request id into the next server).
                run = await client.start_workflow(
                    "Quick",
                    key,
                    workflow_id=f"late-{key}",
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=120),
                    task_start_to_close_timeout=timedelta(seconds=2),
                )
                acked_late[key] = run.run_id

            late = [asyncio.create_task(start_late(k)) for k in late_keys[:3]]
            await late[0]  # one acknowledged by the doomed server, two maybe in flight
            killed_at = time.time_ns()
            dev.kill()
            late += [asyncio.create_task(start_late(k)) for k in late_keys[3:]]
            for key in keys:
                _gate(key).set()  # the activities finish while no server runs
            await dev.start(client)

            await asyncio.wait_for(asyncio.gather(*late), timeout=30)
            for key in keys:
                await wait_for_types(client, runs[key], "TimerFired")
                await client.signal_workflow(runs[key].workflow_id, runs[key].run_id, "finish")
            closes = {key: await closed_within(client, runs[key]) for key in keys}
            late_closes = {
                key: await closed_within(client, common_pb2.WorkflowExecution(
                    workflow_id=f"late-{key}", run_id=run_id
                ))
                for key, run_id in acked_late.items()
            }  # fmt: skip
            histories = {key: await history(client, runs[key]) for key in keys}
            late_histories = {
                key: await history(client, common_pb2.WorkflowExecution(
                    workflow_id=f"late-{key}", run_id=run_id
                ))
                for key, run_id in acked_late.items()
            }  # fmt: skip
            all_runs = {key: await runs_of(client, runs[key].workflow_id) for key in keys}
            late_runs = {key: await runs_of(client, f"late-{key}") for key in acked_late}
    finally:
        await client.close()
        dev.stop()

    for key in keys:
        assert result_of(closes[key]) == {
            "step": f"step {key}",
            "added": [f"a-{key}", f"b-{key}"],
        }, key
        types = event_types(histories[key])
        assert types.count("WorkflowExecutionStarted") == 1
        assert types.count("ActivityTaskScheduled") == types.count("ActivityTaskCompleted") == 1
        assert types.count("TimerStarted") == types.count("TimerFired") == 1
        assert types.count("WorkflowExecutionSignaled") == 3
        assert types[-1] == "WorkflowExecutionCompleted"
        signals = [
            (e.workflow_execution_signaled_event_attributes.signal_name,
             e.workflow_execution_signaled_event_attributes.input.data)
            for e in histories[key]
            if e.HasField("workflow_execution_signaled_event_attributes")
        ]  # fmt: skip
        assert signals == [
            ("add", json.dumps(f"a-{key}").encode()),
            ("add", json.dumps(f"b-{key}").encode()),
            ("finish", b""),
        ]
        assert all_runs[key] == [runs[key].run_id]  # exactly one run: no duplicate start
        assert _calls[key] == [0], key  # each activity ran once, across the kill too
        if key.endswith("odd"):
            # The timer was pending at the kill and fired on the restarted server.
            started = next(
                e for e in histories[key] if e.HasField("timer_started_event_attributes")
            )
            fired = next(e for e in histories[key] if e.HasField("timer_fired_event_attributes"))
            assert started.event_time.ToNanoseconds() < killed_at < fired.event_time.ToNanoseconds()

    assert set(acked_late) == set(late_keys)  # every start call came back (after retries)
    for key, run_id in acked_late.items():
        assert result_of(late_closes[key]) == f"step {key}"
        # A decision in flight at the kill may time out and run again; the rest is exact.
        assert [
            t for t in event_types(late_histories[key]) if not t.startswith("DecisionTask")
        ] == [
            "WorkflowExecutionStarted",
            "ActivityTaskScheduled",
            "ActivityTaskStarted",
            "ActivityTaskCompleted",
            "WorkflowExecutionCompleted",
        ]
        assert late_runs[key] == [run_id], key
        # A task handed out just before the kill may be lost with its poll response; the
        # 2 s start-to-close timeout retries it. Completed exactly once either way.
        assert 1 <= len(_calls[key]) <= 2, key
