"""A decision that fails every time backs off instead of looping hot (issue 9, item 10).

Cadence's semantics stay (DecisionTaskFailed written once, transient retries with attempt
1, 2, ..., a new event turns the retry into a normal decision); after IMMEDIATE_RETRIES
consecutive failures the next attempt is dispatched only when a durable backoff timer fires
(engine/execution/decision_backoff.py). A hand-written decider fails the tasks through the
official client's stubs; the curve itself runs on a ManualClock server, the rate over a real
window on a real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from cadence import Client
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from google.protobuf import timestamp_pb2

from engine.clock import ManualClock
from engine.execution.decision_backoff import (
    IMMEDIATE_RETRIES,
    JITTER,
    MAX_DELAY_S,
    TIMEOUT_CAUSE,
    retry_delay_s,
)
from engine.ids import shard_for
from engine.model.state import MutableState, decode_state
from engine.server import Server
from tests.e2e.harness import (
    DOMAIN,
    RAW_IDENTITY,
    checked_history,
    close_event,
    complete_workflow,
    describe,
    event_types,
    eventually,
    full_history,
    poll_decision,
    register_domain,
    respond_decision,
    running_server,
    start_raw,
)

FIRST_DECISION = ["WorkflowExecutionStarted", "DecisionTaskScheduled", "DecisionTaskStarted"]
WORKER_FAILURE = workflow_pb2.DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
SCHEDULED = workflow_pb2.PENDING_DECISION_STATE_SCHEDULED
NS = 10**9


@contextlib.asynccontextmanager
async def _manual_server(db: Path) -> AsyncIterator[tuple[Server, Client, ManualClock]]:
    clock = ManualClock()
    async with running_server(db, clock) as server:
        client = Client(domain=DOMAIN, target=server.address)
        try:
            await register_domain(client)
            yield server, client, clock
        finally:
            await client.close()


@pytest.fixture
async def manual(tmp_path: Path) -> AsyncIterator[tuple[Server, Client, ManualClock]]:
    async with _manual_server(tmp_path / "manual.db") as env:
        yield env


async def _start(
    client: Client, *, task_timeout: int = 10
) -> tuple[common_pb2.WorkflowExecution, str]:
    tl = f"tl-{uuid.uuid4()}"
    # Long enough for the whole curve on the manual clock.
    execution = await start_raw(client, tl, execution_timeout=3600, task_timeout=task_timeout)
    return execution, tl


async def _fail(
    client: Client,
    task: service_worker_pb2.PollForDecisionTaskResponse,
    details: bytes = b"Traceback: worker bug",
) -> None:
    await client.worker_stub.RespondDecisionTaskFailed(
        service_worker_pb2.RespondDecisionTaskFailedRequest(
            task_token=task.task_token,
            cause=WORKER_FAILURE,
            details=common_pb2.Payload(data=details),
            identity=RAW_IDENTITY,
        )
    )


async def _no_decision_task(client: Client, tl: str) -> None:
    """One short long-poll (matching answers a second before its deadline) finds no task."""
    resp = await client.worker_stub.PollForDecisionTask(
        service_worker_pb2.PollForDecisionTaskRequest(
            domain=client.domain,
            task_list=tasklist_pb2.TaskList(name=tl),
            identity=RAW_IDENTITY,
        ),
        timeout=2.5,
    )
    assert not resp.task_token, f"decision attempt {resp.attempt} dispatched during its backoff"


def _ns(t: timestamp_pb2.Timestamp) -> int:
    return t.seconds * NS + t.nanos


async def _state(server: Server, execution: common_pb2.WorkflowExecution) -> MutableState:
    domain = await server.store.get_domain(name=DOMAIN)
    assert domain is not None
    shard = shard_for(execution.workflow_id, server.config.num_shards)
    snap = await server.store.get_run(shard, domain.id, execution.workflow_id, execution.run_id)
    assert snap is not None
    return decode_state(snap.state)


async def _fail_until_backoff(
    client: Client, execution: common_pb2.WorkflowExecution, tl: str
) -> workflow_pb2.PendingDecisionInfo:
    """Fail the first attempt and the immediate retries: the run's decision now backs off."""
    for attempt in range(IMMEDIATE_RETRIES + 1):
        task = await poll_decision(client, tl)
        assert task.attempt == attempt
        await _fail(client, task)
    return (await describe(client, execution)).pending_decision


def _max_attempts_within(window_s: float) -> int:
    """How many attempts the curve allows in `window_s` from the first, at its fastest (every
    delay shortened by the whole jitter)."""
    at, failures, attempts = 0.0, 0, 0
    while at <= window_s:
        attempts += 1
        failures += 1
        at += retry_delay_s(failures) * (1 - JITTER)
    return attempts


# ----------------------------------------------------------------------------------------------


async def test_a_decider_failing_every_time_is_retried_at_the_curves_pace(client: Client) -> None:
    """Real clock: over a window, attempts stay within the curve (without the backoff a
    decider that fails at once makes hundreds); once the decider is fixed, the run completes
    after the backoff in progress."""
    window_s = 6.0
    execution, tl = await _start(client)
    loop = asyncio.get_running_loop()
    attempts: list[tuple[float, int]] = []
    fixed = asyncio.Event()

    async def decider() -> None:
        while True:
            task = await poll_decision(client, tl, within=MAX_DELAY_S + 10)
            if fixed.is_set():
                await respond_decision(client, task, complete_workflow(b"fixed"))
                return
            attempts.append((loop.time(), task.attempt))
            await _fail(client, task)

    running = asyncio.create_task(decider())
    try:

        async def started() -> bool:
            return bool(attempts)

        await eventually(started)
        # The measurement is the window itself: what the decider manages in it.
        await asyncio.sleep(window_s)
        fixed.set()
        first = attempts[0][0]
        in_window = [a for t, a in attempts if t - first <= window_s]
        assert in_window == list(range(len(in_window))), "attempts are numbered 0, 1, 2, ..."
        assert len(in_window) <= _max_attempts_within(window_s), in_window
        assert len(in_window) <= 10  # instead of hundreds
        assert len(in_window) > IMMEDIATE_RETRIES  # the immediate retries did happen
        await asyncio.wait_for(running, timeout=MAX_DELAY_S + 10)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == b"fixed"
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert events[4].decision_task_scheduled_event_attributes.attempt == len(attempts)


async def test_backoff_follows_the_curve_to_its_cap_and_shows_in_describe(
    manual: tuple[Server, Client, ManualClock],
) -> None:
    server, client, clock = manual
    execution, tl = await _start(client)
    failures = IMMEDIATE_RETRIES + 8  # to the cap: 1, 2, 4, 8, 16, 32, 60, 60 s
    with structlog.testing.capture_logs() as logs:
        for n in range(1, failures + 1):
            task = await poll_decision(client, tl)
            assert task.attempt == n - 1
            await _fail(client, task, details=f"Traceback {n}".encode())
            pending = (await describe(client, execution)).pending_decision
            assert (pending.attempt, pending.state) == (n, SCHEDULED)
            # Scheduled as of the end of the backoff; original: when the failure made it.
            assert _ns(pending.original_scheduled_time) == clock.now_ns()
            delay_ns = _ns(pending.scheduled_time) - clock.now_ns()
            nominal = retry_delay_s(n)
            assert (1 - JITTER) * nominal * NS - 1 <= delay_ns <= nominal * NS, (n, delay_ns)
            st = await _state(server, execution)
            assert st.decision_failures == n
            assert st.last_decision_failure is not None
            assert st.last_decision_failure.details == f"Traceback {n}".encode()
            assert st.last_decision_failure.attempt == n - 1
            assert st.last_decision_failure.cause == workflow_pb2.DecisionTaskFailedCause.Name(
                WORKER_FAILURE
            )
            if n == IMMEDIATE_RETRIES + 1:
                await _no_decision_task(client, tl)  # not before the backoff's end
            if delay_ns:
                clock.advance(delay_ns / NS + 0.001)
    assert [retry_delay_s(n) for n in range(IMMEDIATE_RETRIES + 1, failures + 1)][-1] == (
        MAX_DELAY_S
    )
    # One warning per failure that backs off, naming the run, the cause and the next attempt.
    lines = [e for e in logs if e["event"] == "decision_backoff"]
    assert [e["attempt"] for e in lines] == list(range(IMMEDIATE_RETRIES, failures))
    assert all(e["log_level"] == "warning" for e in lines)
    assert {(e["workflow_id"], e["run_id"]) for e in lines} == {
        (execution.workflow_id, execution.run_id)
    }
    assert lines[0]["cause"] == "DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE"
    assert "next_attempt_at" in lines[0]

    # The decider is fixed: the next attempt completes; the history is Cadence's.
    task = await poll_decision(client, tl)
    assert task.attempt == failures
    await respond_decision(client, task, complete_workflow(b"ok"))
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert events[4].decision_task_scheduled_event_attributes.attempt == failures
    assert (await _state(server, execution)).decision_failures == 0


async def test_signal_and_cancel_during_a_backoff_are_taken_and_wait_for_it(
    manual: tuple[Server, Client, ManualClock],
) -> None:
    _, client, clock = manual
    execution, tl = await _start(client)
    backing_off = await _fail_until_backoff(client, execution, tl)
    due_ns = _ns(backing_off.scheduled_time)
    assert due_ns > clock.now_ns()

    await client.workflow_stub.SignalWorkflowExecution(
        service_workflow_pb2.SignalWorkflowExecutionRequest(
            domain=client.domain,
            workflow_execution=execution,
            signal_name="wake",
            identity="signaller",
            request_id=str(uuid.uuid4()),
        )
    )
    await client.workflow_stub.RequestCancelWorkflowExecution(
        service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
            domain=client.domain,
            workflow_execution=execution,
            identity="canceller",
            request_id=str(uuid.uuid4()),
        )
    )
    # As in Cadence, the new event turns the transient retry into a normal decision (attempt
    # 0, persisted); the backoff still holds its dispatch.
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
        "WorkflowExecutionCancelRequested",
    ]
    pending = (await describe(client, execution)).pending_decision
    assert (pending.schedule_id, pending.attempt, pending.state) == (6, 0, SCHEDULED)
    assert _ns(pending.scheduled_time) == due_ns
    await _no_decision_task(client, tl)

    clock.advance((due_ns - clock.now_ns()) / NS + 0.001)
    task = await poll_decision(client, tl)
    assert (task.attempt, task.started_event_id) == (0, 8)
    assert "WorkflowExecutionSignaled" in event_types(list(task.history.events))
    await respond_decision(
        client,
        task,
        decision_pb2.Decision(
            cancel_workflow_execution_decision_attributes=(
                decision_pb2.CancelWorkflowExecutionDecisionAttributes()
            )
        ),
    )
    events = await checked_history(client, execution)
    assert event_types(events)[-4:] == [
        "WorkflowExecutionCancelRequested",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCanceled",
    ]


async def test_terminate_during_a_backoff_closes_the_run(
    manual: tuple[Server, Client, ManualClock],
) -> None:
    server, client, clock = manual
    execution, tl = await _start(client)
    backing_off = await _fail_until_backoff(client, execution, tl)
    assert _ns(backing_off.scheduled_time) > clock.now_ns()
    await client.workflow_stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=client.domain,
            workflow_execution=execution,
            reason="stuck",
            identity="operator",
        )
    )
    closed = await close_event(client, execution)
    assert closed.workflow_execution_terminated_event_attributes.reason == "stuck"
    # The backoff's timer fires into a closed run: nothing is dispatched, nothing written.
    clock.advance((_ns(backing_off.scheduled_time) - clock.now_ns()) / NS + 1)
    await _no_decision_task(client, tl)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "WorkflowExecutionTerminated",
    ]
    resp = await describe(client, execution)
    assert not resp.HasField("pending_decision")
    assert (await _state(server, execution)).decision_backoff_ns == 0


async def test_timeouts_count_as_failures(manual: tuple[Server, Client, ManualClock]) -> None:
    server, client, clock = manual
    execution, tl = await _start(client, task_timeout=5)
    for attempt in range(IMMEDIATE_RETRIES):
        task = await poll_decision(client, tl)
        assert task.attempt == attempt
        await _fail(client, task)
    # The last immediate retry is never answered: its timeout is the failure that backs off.
    task = await poll_decision(client, tl)
    scheduled = task.history.events[-2].decision_task_scheduled_event_attributes
    clock.advance(scheduled.start_to_close_timeout.seconds)

    async def backing_off() -> bool:
        pending = (await describe(client, execution)).pending_decision
        return pending.attempt == IMMEDIATE_RETRIES + 1

    await eventually(backing_off)
    pending = (await describe(client, execution)).pending_decision
    assert _ns(pending.scheduled_time) > clock.now_ns()
    failure = (await _state(server, execution)).last_decision_failure
    assert failure is not None
    assert (failure.cause, failure.attempt) == (TIMEOUT_CAUSE, IMMEDIATE_RETRIES)
    await _no_decision_task(client, tl)
    assert len(await full_history(client, execution)) == 4
