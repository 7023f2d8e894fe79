"""Activity tasks end to end: outcomes, cancellation, heartbeats, timeouts, server-side retries,
ByID calls and stale tokens.

Workflows and activities run in the official worker where it can produce the situation; the
rest is driven by hand through the client's stubs (tests/e2e/harness.py: a raw decider that
sends exact decisions, a raw activity worker that abandons or fails tasks). Timeouts and retry
backoffs run on a ManualClock server, so nothing here waits for real seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from cadence import Client, Registry, activity, workflow
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    workflow_pb2,
)
from cadence.error import ActivityFailure, EntityNotExistsError
from google.protobuf import timestamp_pb2

from engine.clock import ManualClock
from tests.e2e.harness import (
    RAW_IDENTITY,
    checked_history,
    close_event,
    complete_workflow,
    describe,
    event_types,
    eventually,
    full_history,
    manual_clock_client,
    poll_activity,
    poll_decision,
    respond_decision,
    schedule_activity,
    start_raw,
    worker_for,
)

EMPTY_EVENT_ID = -23

# ----------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture
async def manual(tmp_path: Path) -> AsyncIterator[tuple[Client, ManualClock]]:
    async with manual_clock_client(tmp_path / "manual.db") as env:
        yield env


def _tl() -> str:
    return f"tl-{uuid.uuid4()}"


async def _raw_run(
    client: Client,
    *decisions: decision_pb2.Decision,
    task_list: str | None = None,
    force_new: bool = False,
) -> tuple[common_pb2.WorkflowExecution, str]:
    """Start a run and answer its first decision with `decisions` (built for the task list)."""
    tl = task_list or _tl()
    execution = await start_raw(client, tl)
    task = await poll_decision(client, tl)
    await respond_decision(client, task, *decisions, force_new=force_new)
    return execution, tl


async def _history_until(
    client: Client, execution: common_pb2.WorkflowExecution, n: int
) -> list[history_pb2.HistoryEvent]:
    """The history once it has at least `n` events (checked)."""
    events: list[history_pb2.HistoryEvent] = []

    async def grown() -> bool:
        nonlocal events
        events = await full_history(client, execution)
        return len(events) >= n

    await eventually(grown)
    return await checked_history(client, execution)


async def _pending_activity(
    client: Client, execution: common_pb2.WorkflowExecution
) -> workflow_pb2.PendingActivityInfo:
    resp = await describe(client, execution)
    assert len(resp.pending_activities) == 1
    return resp.pending_activities[0]


def _ts(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // 10**9, nanos=ns % 10**9)


def _retry(
    *, maximum_attempts: int, coefficient: float = 2.0, non_retryable: tuple[str, ...] = ()
) -> common_pb2.RetryPolicy:
    policy = common_pb2.RetryPolicy(
        backoff_coefficient=coefficient,
        maximum_attempts=maximum_attempts,
        non_retryable_error_reasons=list(non_retryable),
    )
    policy.initial_interval.FromSeconds(1)
    policy.maximum_interval.FromSeconds(10)
    return policy


SCHEDULED_THEN_STARTED = [
    "WorkflowExecutionStarted",
    "DecisionTaskScheduled",
    "DecisionTaskStarted",
    "DecisionTaskCompleted",
    "ActivityTaskScheduled",
]


# ----------------------------------------------------------------------------------------------
# Official worker: workflows and activities from a Registry

reg = Registry()


@reg.activity()
async def greet(name: str) -> str:
    return f"hello {name}"


@reg.activity()
async def explode(message: str) -> str:
    raise ValueError(message)


class FatalError(Exception):
    pass


NON_RETRYABLE_CALLS: list[int] = []


@reg.activity()
async def fatal() -> str:
    NON_RETRYABLE_CALLS.append(activity.info().attempt)
    raise FatalError("do not retry me")


ALWAYS_FAILING_CALLS: list[int] = []


@reg.activity()
async def always_failing() -> str:
    attempt = activity.info().attempt
    ALWAYS_FAILING_CALLS.append(attempt)
    raise RuntimeError(f"attempt {attempt} failed")


@reg.activity()
async def resumable() -> str:
    if activity.info().attempt == 0:
        activity.heartbeat("halfway")
        raise RuntimeError("crashed after the first half")
    (progress,) = activity.heartbeat_details(str)
    return f"resumed from {progress} on attempt {activity.info().attempt}"


@reg.workflow()
class GreetWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return await greet.with_options(schedule_to_close_timeout=timedelta(seconds=10)).execute(
            name
        )


@reg.workflow()
class FailingActivityWorkflow:
    @workflow.run
    async def run(self, message: str) -> str:
        try:
            await explode.with_options(schedule_to_close_timeout=timedelta(seconds=10)).execute(
                message
            )
        except ActivityFailure as failure:
            return f"caught {str(failure).splitlines()[0]}"
        return "not failed"


@reg.workflow()
class NonRetryableWorkflow:
    @workflow.run
    async def run(self) -> str:
        try:
            await fatal.with_options(
                schedule_to_close_timeout=timedelta(seconds=10),
                retry_policy={
                    "initial_interval": timedelta(seconds=1),
                    "backoff_coefficient": 1.0,
                    "maximum_attempts": 5,
                    "non_retryable_error_reasons": ["FatalError"],
                },
            ).execute()
        except ActivityFailure as failure:
            return f"caught {str(failure).splitlines()[0]}"
        return "not failed"


@reg.workflow()
class MaxAttemptsWorkflow:
    @workflow.run
    async def run(self) -> str:
        try:
            await always_failing.with_options(
                schedule_to_close_timeout=timedelta(seconds=10),
                retry_policy={
                    "initial_interval": timedelta(seconds=1),
                    "backoff_coefficient": 1.0,
                    "maximum_attempts": 3,
                },
            ).execute()
        except ActivityFailure as failure:
            return f"caught {str(failure).splitlines()[0]}"
        return "not failed"


@reg.workflow()
class ResumableWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await resumable.with_options(
            schedule_to_close_timeout=timedelta(seconds=10),
            retry_policy={
                "initial_interval": timedelta(seconds=1),
                "backoff_coefficient": 1.0,
                "maximum_attempts": 2,
            },
        ).execute()


@reg.workflow()
class UnservedActivityWorkflow:
    """Schedules an activity on a task list no worker polls."""

    @workflow.run
    async def run(self, task_list: str) -> str:
        try:
            await greet.with_options(
                task_list=task_list,
                schedule_to_start_timeout=timedelta(seconds=2),
                start_to_close_timeout=timedelta(seconds=5),
            ).execute("nobody")
        except ActivityFailure as failure:
            return f"caught {str(failure).splitlines()[0]}"
        return "not timed out"


@reg.activity()
async def patient() -> str:
    """Heartbeats until the server asks it to stop (the client then cancels this coroutine)."""
    for beat in range(400):
        activity.heartbeat(beat)
        await asyncio.sleep(0.05)
    return "never asked to stop"


@reg.workflow()
class CancelActivityWorkflow:
    def __init__(self) -> None:
        self.stop = False

    @workflow.signal(name="stop")
    def on_stop(self) -> None:
        self.stop = True

    @workflow.run
    async def run(self) -> str:
        task = asyncio.ensure_future(
            patient.with_options(schedule_to_close_timeout=timedelta(seconds=30)).execute()
        )
        await workflow.wait_condition(lambda: self.stop)
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return "activity canceled"


async def _run_official(
    client: Client, workflow_type: str, *args: object
) -> tuple[common_pb2.WorkflowExecution, history_pb2.HistoryEvent, list[history_pb2.HistoryEvent]]:
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            workflow_type,
            *args,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, execution)
    return execution, closed, await checked_history(client, execution)


CANONICAL = [
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


async def test_activity_completes_with_exact_events(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "GreetWorkflow",
            "ada",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, execution)
    events = await checked_history(client, execution)
    assert event_types(events) == CANONICAL
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"hello ada"'

    scheduled = events[4].activity_task_scheduled_event_attributes
    assert scheduled.activity_type.name == "greet"
    assert scheduled.task_list.name == worker.task_list
    assert scheduled.input.data == b'"ada"'
    assert scheduled.schedule_to_close_timeout.seconds == 10
    assert scheduled.schedule_to_start_timeout.seconds == 10
    assert scheduled.start_to_close_timeout.seconds == 10
    assert scheduled.decision_task_completed_event_id == 4
    assert not scheduled.HasField("retry_policy")

    started = events[5].activity_task_started_event_attributes
    assert started.scheduled_event_id == 5
    assert started.attempt == 0
    assert started.request_id
    assert worker.task_list in started.identity  # the worker's default identity names it

    completed = events[6].activity_task_completed_event_attributes
    assert (completed.scheduled_event_id, completed.started_event_id) == (5, 6)
    assert completed.result.data == b'"hello ada"'
    assert completed.identity == started.identity


async def test_activity_failure_records_reason_and_details(client: Client) -> None:
    _, closed, events = await _run_official(client, "FailingActivityWorkflow", "kaboom")
    assert event_types(events) == [
        *CANONICAL[:6],
        "ActivityTaskFailed",
        *CANONICAL[7:],
    ]
    failed = events[6].activity_task_failed_event_attributes
    assert (failed.scheduled_event_id, failed.started_event_id) == (5, 6)
    assert failed.failure.reason == "ValueError"
    assert b"ValueError: kaboom" in failed.failure.details
    assert failed.identity == events[5].activity_task_started_event_attributes.identity
    # The decider saw the failure in its history.
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"caught ValueError"'
    )


async def test_non_retryable_reason_stops_retries(client: Client) -> None:
    NON_RETRYABLE_CALLS.clear()
    _, closed, events = await _run_official(client, "NonRetryableWorkflow")
    assert NON_RETRYABLE_CALLS == [0]
    assert event_types(events) == [
        *CANONICAL[:6],
        "ActivityTaskFailed",
        *CANONICAL[7:],
    ]
    scheduled = events[4].activity_task_scheduled_event_attributes
    assert list(scheduled.retry_policy.non_retryable_error_reasons) == ["FatalError"]
    assert scheduled.retry_policy.maximum_attempts == 5
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 0
    assert not started.HasField("last_failure")
    assert events[6].activity_task_failed_event_attributes.failure.reason == "FatalError"
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"caught FatalError"'
    )


async def test_maximum_attempts_are_honoured_and_only_the_last_attempt_is_written(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    ALWAYS_FAILING_CALLS.clear()
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "MaxAttemptsWorkflow",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=60),
        )
        for attempt in (1, 2):
            # Attempt n-1 failed: the retry waits for its backoff (1 s) with no event written.
            async def retry_pending(attempt: int = attempt) -> bool:
                pending = (await describe(client, execution)).pending_activities
                return (
                    len(pending) == 1
                    and pending[0].attempt == attempt
                    and pending[0].state == workflow_pb2.PENDING_ACTIVITY_STATE_SCHEDULED
                )

            await eventually(retry_pending)
            assert event_types(await full_history(client, execution)) == SCHEDULED_THEN_STARTED
            pending = await _pending_activity(client, execution)
            assert pending.last_failure.reason == "RuntimeError"
            assert f"attempt {attempt - 1} failed".encode() in pending.last_failure.details
            assert pending.maximum_attempts == 3
            clock.advance(1)
        closed = await close_event(client, execution)
    assert ALWAYS_FAILING_CALLS == [0, 1, 2]
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *CANONICAL[:6],
        "ActivityTaskFailed",
        *CANONICAL[7:],
    ]
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 2
    assert started.last_failure.reason == "RuntimeError"
    assert b"attempt 1 failed" in started.last_failure.details
    failed = events[6].activity_task_failed_event_attributes
    assert failed.failure.reason == "RuntimeError"
    assert b"attempt 2 failed" in failed.failure.details
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"caught RuntimeError"'
    )


async def test_heartbeat_details_are_handed_to_the_retry(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "ResumableWorkflow",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=60),
        )

        async def retry_pending() -> bool:
            pending = (await describe(client, execution)).pending_activities
            return len(pending) == 1 and pending[0].attempt == 1

        await eventually(retry_pending)
        pending = await _pending_activity(client, execution)
        assert pending.heartbeat_details.data == b'"halfway"'
        clock.advance(1)
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"resumed from halfway on attempt 1"'
    )
    events = await checked_history(client, execution)
    assert event_types(events) == CANONICAL
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 1
    assert started.last_failure.reason == "RuntimeError"


async def test_schedule_to_start_timeout_reaches_the_workflow(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    unserved = _tl()
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "UnservedActivityWorkflow",
            unserved,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=60),
        )
        await _history_until(client, execution, 5)
        clock.advance(2)
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"caught TIMEOUT_TYPE_SCHEDULE_TO_START"'
    )
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *SCHEDULED_THEN_STARTED,
        "ActivityTaskTimedOut",
        *CANONICAL[7:],
    ]
    scheduled = events[4].activity_task_scheduled_event_attributes
    assert scheduled.task_list.name == unserved
    assert scheduled.schedule_to_start_timeout.seconds == 2
    # The client's default schedule-to-close (1 h) is capped at the workflow timeout.
    assert scheduled.schedule_to_close_timeout.seconds == 60
    timed_out = events[5].activity_task_timed_out_event_attributes
    assert timed_out.timeout_type == workflow_pb2.TIMEOUT_TYPE_SCHEDULE_TO_START
    assert (timed_out.scheduled_event_id, timed_out.started_event_id) == (5, EMPTY_EVENT_ID)


# ----------------------------------------------------------------------------------------------
# Raw worker: exact outcomes, timeouts, retries, ByID calls, stale tokens


async def test_started_activity_is_canceled_through_heartbeat(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl, force_new=True
    )
    task = await poll_activity(client, tl)
    hb = await client.worker_stub.RecordActivityTaskHeartbeat(
        service_worker_pb2.RecordActivityTaskHeartbeatRequest(
            task_token=task.task_token, identity=RAW_IDENTITY
        )
    )
    assert hb.cancel_requested is False

    decision = await poll_decision(client, tl)
    await respond_decision(
        client,
        decision,
        decision_pb2.Decision(
            request_cancel_activity_task_decision_attributes=(
                decision_pb2.RequestCancelActivityTaskDecisionAttributes(activity_id="a1")
            )
        ),
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "DecisionTaskScheduled",
        "ActivityTaskStarted",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskCancelRequested",
    ]
    requested = events[9].activity_task_cancel_requested_event_attributes
    assert requested.activity_id == "a1"
    assert requested.decision_task_completed_event_id == 9
    pending = await _pending_activity(client, execution)
    assert pending.state == workflow_pb2.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED

    hb = await client.worker_stub.RecordActivityTaskHeartbeat(
        service_worker_pb2.RecordActivityTaskHeartbeatRequest(
            task_token=task.task_token, identity=RAW_IDENTITY
        )
    )
    assert hb.cancel_requested is True
    await client.worker_stub.RespondActivityTaskCanceled(
        service_worker_pb2.RespondActivityTaskCanceledRequest(
            task_token=task.task_token,
            details=common_pb2.Payload(data=b"cleaned up"),
            identity="canceller",
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events)[10:] == ["ActivityTaskCanceled", "DecisionTaskScheduled"]
    canceled = events[10].activity_task_canceled_event_attributes
    assert canceled.details.data == b"cleaned up"
    assert canceled.latest_cancel_requested_event_id == 10
    assert (canceled.scheduled_event_id, canceled.started_event_id) == (5, 7)
    assert canceled.identity == "canceller"
    assert not (await describe(client, execution)).pending_activities

    decision = await poll_decision(client, tl)
    await respond_decision(client, decision, complete_workflow(b"done"))
    events = await checked_history(client, execution)
    assert event_types(events)[-2:] == ["DecisionTaskCompleted", "WorkflowExecutionCompleted"]


async def test_activity_started_while_a_decision_is_in_flight_is_buffered(
    client: Client,
) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl, force_new=True
    )
    decision = await poll_decision(client, tl)  # decision 6 is now in flight
    task = await poll_activity(client, tl)
    assert event_types(await full_history(client, execution))[-1] == "DecisionTaskStarted"
    await client.worker_stub.RespondActivityTaskCompleted(
        service_worker_pb2.RespondActivityTaskCompletedRequest(
            task_token=task.task_token, result=common_pb2.Payload(data=b"r"), identity="w"
        )
    )
    assert event_types(await checked_history(client, execution))[-1] == "DecisionTaskStarted"
    await respond_decision(client, decision)
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
    ]
    completed = events[9].activity_task_completed_event_attributes
    assert (completed.scheduled_event_id, completed.started_event_id) == (5, 9)
    assert completed.result.data == b"r"


async def test_poll_response_carries_the_task(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client,
        schedule_activity(
            "a1",
            tl,
            activity_type="resize",
            input=b"image-1",
            schedule_to_close=30,
            start_to_close=20,
            heartbeat=5,
        ),
        task_list=tl,
    )
    task = await poll_activity(client, tl)
    assert task.activity_id == "a1"
    assert task.activity_type.name == "resize"
    assert task.input.data == b"image-1"
    assert task.workflow_execution == execution
    assert task.workflow_type.name == "RawWorkflow"
    assert task.workflow_domain == client.domain
    assert task.attempt == 0
    assert task.schedule_to_close_timeout.seconds == 30
    assert task.start_to_close_timeout.seconds == 20
    assert task.heartbeat_timeout.seconds == 5
    assert task.scheduled_time == task.scheduled_time_of_this_attempt
    assert not task.HasField("heartbeat_details")
    events = await checked_history(client, execution)
    assert task.scheduled_time == events[4].event_time
    assert task.started_time == events[5].event_time


async def test_start_to_close_timeout(manual: tuple[Client, ManualClock]) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=10, start_to_close=2), task_list=tl
    )
    task = await poll_activity(client, tl)
    await _history_until(client, execution, 6)
    clock.advance(2)
    events = await _history_until(client, execution, 8)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskTimedOut",
        "DecisionTaskScheduled",
    ]
    timed_out = events[6].activity_task_timed_out_event_attributes
    assert timed_out.timeout_type == workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
    assert (timed_out.scheduled_event_id, timed_out.started_event_id) == (5, 6)
    assert not timed_out.HasField("details")
    # The worker finishing late holds a stale token.
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompleted(
            service_worker_pb2.RespondActivityTaskCompletedRequest(
                task_token=task.task_token, identity=RAW_IDENTITY
            )
        )
    assert len(await checked_history(client, execution)) == 8


async def test_schedule_to_close_timeout_covers_the_wait_and_the_run(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=4), task_list=tl
    )
    events = await checked_history(client, execution)
    scheduled = events[4].activity_task_scheduled_event_attributes
    # A missing schedule-to-start and start-to-close default to schedule-to-close.
    assert scheduled.schedule_to_start_timeout.seconds == 4
    assert scheduled.start_to_close_timeout.seconds == 4
    clock.advance(2)
    await poll_activity(client, tl)
    await _history_until(client, execution, 6)
    clock.advance(2)  # 4 s after scheduling, 2 s after starting
    events = await _history_until(client, execution, 8)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskTimedOut",
        "DecisionTaskScheduled",
    ]
    timed_out = events[6].activity_task_timed_out_event_attributes
    assert timed_out.timeout_type == workflow_pb2.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE
    assert (timed_out.scheduled_event_id, timed_out.started_event_id) == (5, 6)


async def test_heartbeats_extend_the_heartbeat_timeout(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30, heartbeat=2), task_list=tl
    )
    task = await poll_activity(client, tl)
    for step in range(4):  # 6 s of work, never 2 s without a heartbeat
        clock.advance(1.5)
        resp = await client.worker_stub.RecordActivityTaskHeartbeat(
            service_worker_pb2.RecordActivityTaskHeartbeatRequest(
                task_token=task.task_token,
                details=common_pb2.Payload(data=f"step {step}".encode()),
                identity=RAW_IDENTITY,
            )
        )
        assert resp.cancel_requested is False
    pending = await _pending_activity(client, execution)
    assert pending.heartbeat_details.data == b"step 3"
    assert pending.last_heartbeat_time == _ts(clock.now_ns())
    assert pending.state == workflow_pb2.PENDING_ACTIVITY_STATE_STARTED
    assert len(await full_history(client, execution)) == 6

    clock.advance(2)
    events = await _history_until(client, execution, 8)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskTimedOut",
        "DecisionTaskScheduled",
    ]
    timed_out = events[6].activity_task_timed_out_event_attributes
    assert timed_out.timeout_type == workflow_pb2.TIMEOUT_TYPE_HEARTBEAT
    assert timed_out.details.data == b"step 3"
    assert (timed_out.scheduled_event_id, timed_out.started_event_id) == (5, 6)


async def test_retries_count_attempts_from_zero_and_write_only_the_outcome(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client,
        schedule_activity("a1", tl, schedule_to_close=30, retry=_retry(maximum_attempts=5)),
        task_list=tl,
    )
    scheduled = (await checked_history(client, execution))[4]
    policy = scheduled.activity_task_scheduled_event_attributes.retry_policy
    assert (policy.maximum_attempts, policy.backoff_coefficient) == (5, 2.0)
    tokens = []
    for attempt, backoff in ((0, 1), (1, 2)):
        task = await poll_activity(client, tl)
        assert task.attempt == attempt
        tokens.append(task.task_token)
        await client.worker_stub.RespondActivityTaskFailed(
            service_worker_pb2.RespondActivityTaskFailedRequest(
                task_token=task.task_token,
                failure=common_pb2.Failure(reason=f"boom-{attempt}", details=b"why"),
                identity=RAW_IDENTITY,
            )
        )
        # The retry writes nothing; mutable state shows the next attempt and its schedule.
        assert event_types(await checked_history(client, execution)) == SCHEDULED_THEN_STARTED
        pending = await _pending_activity(client, execution)
        assert pending.attempt == attempt + 1
        assert pending.state == workflow_pb2.PENDING_ACTIVITY_STATE_SCHEDULED
        assert pending.last_failure == common_pb2.Failure(reason=f"boom-{attempt}", details=b"why")
        assert pending.scheduled_time == _ts(clock.now_ns() + backoff * 10**9)
        clock.advance(backoff)

    task = await poll_activity(client, tl)
    assert task.attempt == 2
    assert task.scheduled_time_of_this_attempt == _ts(clock.now_ns())
    assert task.scheduled_time.ToNanoseconds() < task.scheduled_time_of_this_attempt.ToNanoseconds()
    # Tokens of earlier attempts are stale.
    for stale in tokens:
        with pytest.raises(EntityNotExistsError):
            await client.worker_stub.RecordActivityTaskHeartbeat(
                service_worker_pb2.RecordActivityTaskHeartbeatRequest(
                    task_token=stale, identity=RAW_IDENTITY
                )
            )
    await client.worker_stub.RespondActivityTaskCompleted(
        service_worker_pb2.RespondActivityTaskCompletedRequest(
            task_token=task.task_token, result=common_pb2.Payload(data=b"ok"), identity="w2"
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *SCHEDULED_THEN_STARTED,
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
    ]
    started = events[5].activity_task_started_event_attributes
    assert started.scheduled_event_id == 5
    assert started.attempt == 2
    assert started.identity == RAW_IDENTITY
    assert started.last_failure == common_pb2.Failure(reason="boom-1", details=b"why")
    completed = events[6].activity_task_completed_event_attributes
    assert (completed.scheduled_event_id, completed.started_event_id) == (5, 6)
    assert completed.result.data == b"ok"


async def test_retry_after_heartbeat_timeout_keeps_heartbeat_details(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client,
        schedule_activity(
            "a1", tl, schedule_to_close=30, heartbeat=2, retry=_retry(maximum_attempts=3)
        ),
        task_list=tl,
    )
    task = await poll_activity(client, tl)
    await client.worker_stub.RecordActivityTaskHeartbeat(
        service_worker_pb2.RecordActivityTaskHeartbeatRequest(
            task_token=task.task_token,
            details=common_pb2.Payload(data=b"page 7"),
            identity=RAW_IDENTITY,
        )
    )
    clock.advance(2)  # no heartbeat for 2 s: attempt 0 times out and is retried

    async def retried() -> bool:
        return (await _pending_activity(client, execution)).attempt == 1

    await eventually(retried)
    pending = await _pending_activity(client, execution)
    assert pending.last_failure == common_pb2.Failure(reason="cadenceInternal:Timeout HEARTBEAT")
    assert pending.heartbeat_details.data == b"page 7"
    assert event_types(await checked_history(client, execution)) == SCHEDULED_THEN_STARTED

    clock.advance(1)
    task = await poll_activity(client, tl)
    assert task.attempt == 1
    assert task.heartbeat_details.data == b"page 7"
    await client.worker_stub.RespondActivityTaskCompleted(
        service_worker_pb2.RespondActivityTaskCompletedRequest(
            task_token=task.task_token, identity=RAW_IDENTITY
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
    ]
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 1
    assert started.last_failure == common_pb2.Failure(reason="cadenceInternal:Timeout HEARTBEAT")


async def test_retry_after_start_to_close_timeout_then_final_timeout(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    tl = _tl()
    execution, _ = await _raw_run(
        client,
        schedule_activity(
            "a1", tl, schedule_to_close=30, start_to_close=2, retry=_retry(maximum_attempts=2)
        ),
        task_list=tl,
    )
    first = await poll_activity(client, tl)
    assert first.attempt == 0
    clock.advance(2)

    async def retried() -> bool:
        return (await _pending_activity(client, execution)).attempt == 1

    await eventually(retried)
    clock.advance(1)
    second = await poll_activity(client, tl)
    assert second.attempt == 1
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompleted(
            service_worker_pb2.RespondActivityTaskCompletedRequest(
                task_token=first.task_token, identity=RAW_IDENTITY
            )
        )
    await _history_until(client, execution, 5)
    clock.advance(2)  # the last attempt times out too: no retry left
    events = await _history_until(client, execution, 8)
    assert event_types(events) == [
        *SCHEDULED_THEN_STARTED,
        "ActivityTaskStarted",
        "ActivityTaskTimedOut",
        "DecisionTaskScheduled",
    ]
    started = events[5].activity_task_started_event_attributes
    assert started.attempt == 1
    assert started.last_failure == common_pb2.Failure(
        reason="cadenceInternal:Timeout START_TO_CLOSE"
    )
    timed_out = events[6].activity_task_timed_out_event_attributes
    assert timed_out.timeout_type == workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
    assert (timed_out.scheduled_event_id, timed_out.started_event_id) == (5, 6)
    assert timed_out.last_failure.reason == "cadenceInternal:Timeout START_TO_CLOSE"


async def test_by_id_heartbeat_and_completion(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl
    )
    # Not started yet: nothing to complete by id.
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompletedByID(
            service_worker_pb2.RespondActivityTaskCompletedByIDRequest(
                domain=client.domain, workflow_execution=execution, activity_id="a1"
            )
        )
    task = await poll_activity(client, tl)
    # An empty run id means the current run.
    current = common_pb2.WorkflowExecution(workflow_id=execution.workflow_id)
    hb = await client.worker_stub.RecordActivityTaskHeartbeatByID(
        service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest(
            domain=client.domain,
            workflow_execution=current,
            activity_id="a1",
            details=common_pb2.Payload(data=b"50%"),
            identity="by-id",
        )
    )
    assert hb.cancel_requested is False
    pending = await _pending_activity(client, execution)
    assert pending.heartbeat_details.data == b"50%"
    assert pending.HasField("last_heartbeat_time")
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RecordActivityTaskHeartbeatByID(
            service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest(
                domain=client.domain, workflow_execution=execution, activity_id="nope"
            )
        )
    await client.worker_stub.RespondActivityTaskCompletedByID(
        service_worker_pb2.RespondActivityTaskCompletedByIDRequest(
            domain=client.domain,
            workflow_execution=execution,
            activity_id="a1",
            result=common_pb2.Payload(data=b"done by id"),
            identity="by-id",
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
    ]
    completed = events[6].activity_task_completed_event_attributes
    assert completed.result.data == b"done by id"
    assert completed.identity == "by-id"
    assert (completed.scheduled_event_id, completed.started_event_id) == (5, 6)
    # The worker's own token is stale now, and so is a second ByID call.
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompleted(
            service_worker_pb2.RespondActivityTaskCompletedRequest(
                task_token=task.task_token, identity=RAW_IDENTITY
            )
        )
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompletedByID(
            service_worker_pb2.RespondActivityTaskCompletedByIDRequest(
                domain=client.domain, workflow_execution=execution, activity_id="a1"
            )
        )
    assert len(await checked_history(client, execution)) == 8


async def test_by_id_failure(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl
    )
    await poll_activity(client, tl)
    await client.worker_stub.RespondActivityTaskFailedByID(
        service_worker_pb2.RespondActivityTaskFailedByIDRequest(
            domain=client.domain,
            workflow_execution=execution,
            activity_id="a1",
            failure=common_pb2.Failure(reason="disk full", details=b"\x00\x01"),
            identity="by-id",
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskFailed",
        "DecisionTaskScheduled",
    ]
    failed = events[6].activity_task_failed_event_attributes
    assert failed.failure == common_pb2.Failure(reason="disk full", details=b"\x00\x01")
    assert failed.identity == "by-id"
    assert (failed.scheduled_event_id, failed.started_event_id) == (5, 6)


async def test_by_id_cancellation(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl, force_new=True
    )
    await poll_activity(client, tl)
    decision = await poll_decision(client, tl)
    await respond_decision(
        client,
        decision,
        decision_pb2.Decision(
            request_cancel_activity_task_decision_attributes=(
                decision_pb2.RequestCancelActivityTaskDecisionAttributes(activity_id="a1")
            )
        ),
    )
    hb = await client.worker_stub.RecordActivityTaskHeartbeatByID(
        service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest(
            domain=client.domain, workflow_execution=execution, activity_id="a1"
        )
    )
    assert hb.cancel_requested is True
    await client.worker_stub.RespondActivityTaskCanceledByID(
        service_worker_pb2.RespondActivityTaskCanceledByIDRequest(
            domain=client.domain,
            workflow_execution=execution,
            activity_id="a1",
            details=common_pb2.Payload(data=b"stopped"),
            identity="by-id",
        )
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "DecisionTaskScheduled",
        "ActivityTaskStarted",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskCancelRequested",
        "ActivityTaskCanceled",
        "DecisionTaskScheduled",
    ]
    canceled = events[10].activity_task_canceled_event_attributes
    assert canceled.details.data == b"stopped"
    assert canceled.identity == "by-id"
    assert canceled.latest_cancel_requested_event_id == 10
    assert (canceled.scheduled_event_id, canceled.started_event_id) == (5, 7)


async def test_duplicate_completion_is_entity_not_exists(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl
    )
    task = await poll_activity(client, tl)
    request = service_worker_pb2.RespondActivityTaskCompletedRequest(
        task_token=task.task_token, result=common_pb2.Payload(data=b"once"), identity="w"
    )
    await client.worker_stub.RespondActivityTaskCompleted(request)
    before = await checked_history(client, execution)
    for call in (
        client.worker_stub.RespondActivityTaskCompleted(request),
        client.worker_stub.RespondActivityTaskFailed(
            service_worker_pb2.RespondActivityTaskFailedRequest(
                task_token=task.task_token, failure=common_pb2.Failure(reason="late")
            )
        ),
        client.worker_stub.RespondActivityTaskCanceled(
            service_worker_pb2.RespondActivityTaskCanceledRequest(task_token=task.task_token)
        ),
        client.worker_stub.RecordActivityTaskHeartbeat(
            service_worker_pb2.RecordActivityTaskHeartbeatRequest(task_token=task.task_token)
        ),
    ):
        with pytest.raises(EntityNotExistsError):
            await call
    assert await checked_history(client, execution) == before
    assert event_types(before)[5:] == [
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
    ]


async def test_token_of_a_closed_run_is_entity_not_exists(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client, schedule_activity("a1", tl, schedule_to_close=30), task_list=tl
    )
    task = await poll_activity(client, tl)
    await client.workflow_stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=client.domain, workflow_execution=execution, reason="stop"
        )
    )
    with pytest.raises(EntityNotExistsError):
        await client.worker_stub.RespondActivityTaskCompleted(
            service_worker_pb2.RespondActivityTaskCompletedRequest(
                task_token=task.task_token, identity=RAW_IDENTITY
            )
        )
    events = await checked_history(client, execution)
    assert event_types(events)[-1] == "WorkflowExecutionTerminated"


async def test_unstarted_activity_is_canceled_at_once(client: Client) -> None:
    tl = _tl()
    execution, _ = await _raw_run(
        client,
        schedule_activity("a1", f"unserved-{tl}", schedule_to_close=30),
        task_list=tl,
        force_new=True,
    )
    decision = await poll_decision(client, tl)
    await respond_decision(
        client,
        decision,
        decision_pb2.Decision(
            request_cancel_activity_task_decision_attributes=(
                decision_pb2.RequestCancelActivityTaskDecisionAttributes(activity_id="a1")
            )
        ),
        identity="decider-2",
    )
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskCancelRequested",
        "ActivityTaskCanceled",
        "DecisionTaskScheduled",
    ]
    requested = events[8].activity_task_cancel_requested_event_attributes
    assert (requested.activity_id, requested.decision_task_completed_event_id) == ("a1", 8)
    canceled = events[9].activity_task_canceled_event_attributes
    assert canceled.scheduled_event_id == 5
    assert canceled.started_event_id == EMPTY_EVENT_ID
    assert canceled.latest_cancel_requested_event_id == 9
    assert canceled.details.data == b"ACTIVITY_ID_NOT_STARTED"
    assert canceled.identity == "decider-2"
    assert not (await describe(client, execution)).pending_activities


async def test_retry_policy_stretches_the_scheduled_timeouts(client: Client) -> None:
    """With a retry policy the attempts share the timeouts: schedule-to-close grows to the
    expiration (else the workflow timeout), and so does schedule-to-start unless its timeout
    is non-retryable."""
    tl = _tl()

    def policy(expiration: int, non_retryable: tuple[str, ...] = ()) -> common_pb2.RetryPolicy:
        p = _retry(maximum_attempts=3, non_retryable=non_retryable)
        p.expiration_interval.FromSeconds(expiration)
        return p

    execution, _ = await _raw_run(
        client,
        schedule_activity("plain", tl, schedule_to_close=10),
        schedule_activity("retry", tl, schedule_to_close=10, retry=policy(0)),
        schedule_activity("expiring", tl, schedule_to_close=10, retry=policy(20)),
        schedule_activity(
            "no-s2s-retry",
            tl,
            schedule_to_close=10,
            schedule_to_start=5,
            retry=policy(20, ("cadenceInternal:Timeout SCHEDULE_TO_START",)),
        ),
        schedule_activity("long", tl, schedule_to_close=40, retry=policy(90)),
        task_list=tl,
    )
    events = await checked_history(client, execution)
    assert event_types(events)[4:] == ["ActivityTaskScheduled"] * 5
    timeouts = {
        a.activity_id: (
            a.schedule_to_start_timeout.seconds,
            a.start_to_close_timeout.seconds,
            a.schedule_to_close_timeout.seconds,
        )
        for a in (e.activity_task_scheduled_event_attributes for e in events[4:])
    }
    # The workflow timeout is 60 s (start_raw).
    assert timeouts == {
        "plain": (10, 10, 10),
        "retry": (60, 10, 60),
        "expiring": (20, 10, 20),
        "no-s2s-retry": (5, 10, 20),
        "long": (60, 40, 60),
    }


async def test_official_workflow_cancels_a_running_activity(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "CancelActivityWorkflow",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )

        async def heartbeating() -> bool:
            pending = (await describe(client, execution)).pending_activities
            return len(pending) == 1 and pending[0].HasField("heartbeat_details")

        await eventually(heartbeating)
        await client.signal_workflow(execution.workflow_id, execution.run_id, "stop")
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        b'"activity canceled"'
    )
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *CANONICAL[:6],
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskCancelRequested",
        "ActivityTaskCanceled",
        *CANONICAL[7:],
    ]
    assert events[10].activity_task_cancel_requested_event_attributes.activity_id == (
        events[4].activity_task_scheduled_event_attributes.activity_id
    )
    canceled = events[11].activity_task_canceled_event_attributes
    assert (canceled.scheduled_event_id, canceled.started_event_id) == (5, 6)
    assert canceled.latest_cancel_requested_event_id == 11
