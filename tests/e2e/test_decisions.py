"""Decision tasks end to end: failures and transient retries, timeouts, invalid decisions,
unhandled events, forced decisions, and the events each decision type produces.

Most tests are a hand-written decider (tests/e2e/harness.py) because the official worker
cannot send chosen decisions or fail/abandon a task on purpose; the official worker checks
that its own decisions and a transient decision's synthetic events interoperate. Timeouts run
on a ManualClock server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    workflow_pb2,
)
from cadence.error import EntityNotExistsError

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
    poll_decision,
    respond_decision,
    schedule_activity,
    start_raw,
    worker_for,
)

EMPTY_EVENT_ID = -23
CAUSE = workflow_pb2.DecisionTaskFailedCause
FIRST_DECISION = ["WorkflowExecutionStarted", "DecisionTaskScheduled", "DecisionTaskStarted"]


@pytest.fixture
async def manual(tmp_path: Path) -> AsyncIterator[tuple[Client, ManualClock]]:
    async with manual_clock_client(tmp_path / "manual.db") as env:
        yield env


def _tl() -> str:
    return f"tl-{uuid.uuid4()}"


async def _fail(
    client: Client,
    task: service_worker_pb2.PollForDecisionTaskResponse,
    cause: workflow_pb2.DecisionTaskFailedCause = (
        workflow_pb2.DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
    ),
    details: bytes = b"worker bug",
    identity: str = RAW_IDENTITY,
) -> None:
    await client.worker_stub.RespondDecisionTaskFailed(
        service_worker_pb2.RespondDecisionTaskFailedRequest(
            task_token=task.task_token,
            cause=cause,
            details=common_pb2.Payload(data=details),
            identity=identity,
            binary_checksum="bin-1",
        )
    )


async def _signal(client: Client, execution: common_pb2.WorkflowExecution, name: str) -> None:
    await client.workflow_stub.SignalWorkflowExecution(
        service_workflow_pb2.SignalWorkflowExecutionRequest(
            domain=client.domain,
            workflow_execution=execution,
            signal_name=name,
            identity="signaller",
            request_id=str(uuid.uuid4()),
        )
    )


async def _request_cancel(client: Client, execution: common_pb2.WorkflowExecution) -> None:
    await client.workflow_stub.RequestCancelWorkflowExecution(
        service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
            domain=client.domain,
            workflow_execution=execution,
            identity="canceller",
            request_id=str(uuid.uuid4()),
            cause="user asked",
        )
    )


def _pending_decision(
    resp: service_workflow_pb2.DescribeWorkflowExecutionResponse,
) -> tuple[int, int, int]:
    d = resp.pending_decision
    return d.schedule_id, d.attempt, d.state


def _marker(name: str, details: bytes = b"") -> decision_pb2.Decision:
    return decision_pb2.Decision(
        record_marker_decision_attributes=decision_pb2.RecordMarkerDecisionAttributes(
            marker_name=name, details=common_pb2.Payload(data=details)
        )
    )


def _timer(timer_id: str, seconds: int) -> decision_pb2.Decision:
    attrs = decision_pb2.StartTimerDecisionAttributes(timer_id=timer_id)
    if seconds:
        attrs.start_to_fire_timeout.FromSeconds(seconds)
    return decision_pb2.Decision(start_timer_decision_attributes=attrs)


def _cancel_timer(timer_id: str) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        cancel_timer_decision_attributes=decision_pb2.CancelTimerDecisionAttributes(
            timer_id=timer_id
        )
    )


def _fail_workflow(reason: str, details: bytes) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        fail_workflow_execution_decision_attributes=(
            decision_pb2.FailWorkflowExecutionDecisionAttributes(
                failure=common_pb2.Failure(reason=reason, details=details)
            )
        )
    )


def _cancel_workflow(details: bytes) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        cancel_workflow_execution_decision_attributes=(
            decision_pb2.CancelWorkflowExecutionDecisionAttributes(
                details=common_pb2.Payload(data=details)
            )
        )
    )


def _continue_as_new() -> decision_pb2.Decision:
    return decision_pb2.Decision(
        continue_as_new_workflow_execution_decision_attributes=(
            decision_pb2.ContinueAsNewWorkflowExecutionDecisionAttributes()
        )
    )


def _upsert(**fields: bytes) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        upsert_workflow_search_attributes_decision_attributes=(
            decision_pb2.UpsertWorkflowSearchAttributesDecisionAttributes(
                search_attributes=common_pb2.SearchAttributes(
                    indexed_fields={k: common_pb2.Payload(data=v) for k, v in fields.items()}
                )
            )
        )
    )


async def _start(
    client: Client, *, execution_timeout: int = 60, task_timeout: int = 10
) -> tuple[common_pb2.WorkflowExecution, str]:
    tl = _tl()
    execution = await start_raw(
        client, tl, execution_timeout=execution_timeout, task_timeout=task_timeout
    )
    return execution, tl


# ----------------------------------------------------------------------------------------------
# Failed decisions and transient retries


async def test_failed_decision_is_written_once_then_retried_transiently(client: Client) -> None:
    execution, tl = await _start(client)
    first = await poll_decision(client, tl)
    assert (first.attempt, first.started_event_id) == (0, 3)
    await _fail(client, first, identity="decider-1")

    events = await checked_history(client, execution)
    assert event_types(events) == [*FIRST_DECISION, "DecisionTaskFailed"]
    failed = events[3].decision_task_failed_event_attributes
    assert (failed.scheduled_event_id, failed.started_event_id) == (2, 3)
    assert failed.cause == workflow_pb2.DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
    assert failed.failure == common_pb2.Failure(reason="", details=b"worker bug")
    assert failed.identity == "decider-1"
    assert failed.binary_checksum == "bin-1"
    assert _pending_decision(await describe(client, execution)) == (
        5,
        1,
        workflow_pb2.PENDING_DECISION_STATE_SCHEDULED,
    )

    tokens = [first.task_token]
    for attempt in (1, 2):
        task = await poll_decision(client, tl, identity=f"decider-{attempt + 1}")
        tokens.append(task.task_token)
        assert task.attempt == attempt
        assert task.started_event_id == 6
        assert task.next_event_id == 7
        assert task.previous_started_event_id.value == EMPTY_EVENT_ID
        # The persisted events, then the synthetic Scheduled/Started pair of this attempt.
        shown = list(task.history.events)
        assert [e.event_id for e in shown] == [1, 2, 3, 4, 5, 6]
        assert event_types(shown)[4:] == ["DecisionTaskScheduled", "DecisionTaskStarted"]
        scheduled = shown[4].decision_task_scheduled_event_attributes
        assert scheduled.attempt == attempt
        assert scheduled.task_list.name == tl
        # Attempt 1 keeps the task timeout; later ones get longer (see below).
        if attempt == 1:
            assert scheduled.start_to_close_timeout.seconds == 10
        else:
            assert 48 <= scheduled.start_to_close_timeout.seconds < 60
        started = shown[5].decision_task_started_event_attributes
        assert started.scheduled_event_id == 5
        assert started.identity == f"decider-{attempt + 1}"
        assert started.request_id
        # Nothing about the retry is persisted.
        assert len(await checked_history(client, execution)) == 4
        if attempt == 1:
            await _fail(client, task, details=b"still broken")
            assert len(await checked_history(client, execution)) == 4

    for stale in tokens[:-1]:
        with pytest.raises(EntityNotExistsError):
            await respond_decision(client, _as_task(stale), complete_workflow(b"stale"))
        with pytest.raises(EntityNotExistsError):
            await _fail(client, _as_task(stale))

    await respond_decision(client, task, complete_workflow(b"ok"), identity="decider-3")
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    # The successful attempt's Scheduled/Started are persisted as the poll showed them.
    for persisted, synthetic in zip(events[4:6], shown[4:6], strict=True):
        assert persisted.event_id == synthetic.event_id
        assert persisted.event_time == synthetic.event_time
        field = persisted.WhichOneof("attributes")
        assert field == synthetic.WhichOneof("attributes")
        assert getattr(persisted, field) == getattr(synthetic, field)
    assert events[4].decision_task_scheduled_event_attributes.attempt == 2
    completed = events[6].decision_task_completed_event_attributes
    assert (completed.scheduled_event_id, completed.started_event_id) == (5, 6)
    assert (
        events[7].workflow_execution_completed_event_attributes.decision_task_completed_event_id
        == 7
    )
    # A token used after the run closed is stale as well.
    with pytest.raises(EntityNotExistsError):
        await respond_decision(client, task, complete_workflow(b"again"))


def _as_task(token: bytes) -> service_worker_pb2.PollForDecisionTaskResponse:
    return service_worker_pb2.PollForDecisionTaskResponse(task_token=token)


async def test_transient_events_come_after_the_last_history_page(client: Client) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    # 1000 markers make the next decision's history longer than one page.
    await respond_decision(client, task, *(_marker(f"m{i}") for i in range(1000)), force_new=True)
    await _fail(client, await poll_decision(client, tl))
    persisted = await checked_history(client, execution)
    assert len(persisted) == 1007
    assert event_types(persisted)[-3:] == [
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskFailed",
    ]

    task = await poll_decision(client, tl)
    assert task.attempt == 1
    assert task.started_event_id == 1009
    assert task.next_page_token
    events = list(task.history.events)
    token = task.next_page_token
    while token:
        page = await client.workflow_stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=client.domain, workflow_execution=execution, next_page_token=token
            )
        )
        events.extend(page.history.events)
        token = page.next_page_token
    assert [e.event_id for e in events] == list(range(1, 1010))
    assert events[:1007] == persisted
    assert event_types(events[-2:]) == ["DecisionTaskScheduled", "DecisionTaskStarted"]
    assert events[-2].decision_task_scheduled_event_attributes.attempt == 1
    assert events[-1].decision_task_started_event_attributes.scheduled_event_id == 1008
    # A plain history read never shows them.
    assert len(await checked_history(client, execution)) == 1007

    await respond_decision(client, task, complete_workflow())
    events = await checked_history(client, execution)
    assert [e.event_id for e in events] == list(range(1, 1012))
    assert event_types(events)[-4:] == [
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_new_event_turns_a_pending_transient_decision_into_a_normal_one(
    client: Client,
) -> None:
    execution, tl = await _start(client)
    await _fail(client, await poll_decision(client, tl))
    assert _pending_decision(await describe(client, execution))[1] == 1

    await _signal(client, execution, "wake-up")
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    assert events[5].decision_task_scheduled_event_attributes.attempt == 0
    assert _pending_decision(await describe(client, execution)) == (
        6,
        0,
        workflow_pb2.PENDING_DECISION_STATE_SCHEDULED,
    )
    task = await poll_decision(client, tl)
    assert (task.attempt, task.started_event_id) == (0, 7)
    assert [e.event_id for e in task.history.events] == list(range(1, 8))
    assert event_types(list(task.history.events))[-1] == "DecisionTaskStarted"
    await respond_decision(client, task, complete_workflow())
    assert event_types(await checked_history(client, execution))[-2:] == [
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_event_during_an_in_flight_transient_decision_is_buffered(client: Client) -> None:
    execution, tl = await _start(client)
    await _fail(client, await poll_decision(client, tl))
    task = await poll_decision(client, tl)
    assert task.attempt == 1
    await _signal(client, execution, "meanwhile")
    assert len(await checked_history(client, execution)) == 4  # buffered, not written

    await respond_decision(client, task, _timer("t", 60))
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "TimerStarted",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    assert events[4].decision_task_scheduled_event_attributes.attempt == 1
    assert events[9].decision_task_scheduled_event_attributes.attempt == 0
    assert events[8].workflow_execution_signaled_event_attributes.signal_name == "meanwhile"


async def test_failing_a_transient_decision_flushes_buffered_events_into_a_normal_one(
    client: Client,
) -> None:
    execution, tl = await _start(client)
    await _fail(client, await poll_decision(client, tl))
    task = await poll_decision(client, tl)
    await _signal(client, execution, "meanwhile")
    await _fail(client, task)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    assert events[5].decision_task_scheduled_event_attributes.attempt == 0
    task = await poll_decision(client, tl)
    assert (task.attempt, task.started_event_id) == (0, 7)


async def test_retried_decisions_get_longer_timeouts(client: Client) -> None:
    execution, tl = await _start(client)
    for _ in range(2):
        await _fail(client, await poll_decision(client, tl))
    task = await poll_decision(client, tl)
    assert task.attempt == 2
    # From attempt 2: 1 min x 2^(attempt-2), less up to 20 % jitter.
    timeout = task.history.events[-2].decision_task_scheduled_event_attributes
    assert 48 <= timeout.start_to_close_timeout.seconds < 60
    await respond_decision(client, task)
    events = await checked_history(client, execution)
    assert events[4].decision_task_scheduled_event_attributes.start_to_close_timeout == (
        timeout.start_to_close_timeout
    )


reg = Registry()


@reg.workflow()
class SimpleWorkflow:
    @workflow.run
    async def run(self, name: str) -> str:
        return f"done {name}"


async def test_official_worker_fails_an_unknown_workflow_type(client: Client) -> None:
    async with worker_for(client, Registry()) as worker:
        execution = await client.start_workflow(
            "SimpleWorkflow",
            "x",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )

        async def retried() -> bool:
            return (await describe(client, execution)).pending_decision.attempt >= 3

        await eventually(retried)
    events = await checked_history(client, execution)
    # Every attempt failed; only the first failure is in the history.
    assert event_types(events) == [*FIRST_DECISION, "DecisionTaskFailed"]
    failed = events[3].decision_task_failed_event_attributes
    assert failed.cause == workflow_pb2.DECISION_TASK_FAILED_CAUSE_WORKFLOW_WORKER_UNHANDLED_FAILURE
    assert b"Workflow type 'SimpleWorkflow' not found" in failed.failure.details


async def test_official_worker_completes_a_transient_decision(client: Client) -> None:
    tl = _tl()
    execution = await client.start_workflow(
        "SimpleWorkflow",
        "y",
        task_list=tl,
        execution_start_to_close_timeout=timedelta(seconds=30),
    )
    await _fail(client, await poll_decision(client, tl))
    async with worker_for(client, reg, tl):
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"done y"'
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert events[4].decision_task_scheduled_event_attributes.attempt == 1


# ----------------------------------------------------------------------------------------------
# Decision timeouts


async def test_decision_start_to_close_timeout(manual: tuple[Client, ManualClock]) -> None:
    client, clock = manual
    execution, tl = await _start(client, task_timeout=2)
    first = await poll_decision(client, tl)
    clock.advance(2)

    async def timed_out() -> bool:
        return len(await full_history(client, execution)) == 4

    await eventually(timed_out)
    events = await checked_history(client, execution)
    assert event_types(events) == [*FIRST_DECISION, "DecisionTaskTimedOut"]
    attrs = events[3].decision_task_timed_out_event_attributes
    assert (attrs.scheduled_event_id, attrs.started_event_id) == (2, 3)
    assert attrs.timeout_type == workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
    assert attrs.cause == workflow_pb2.DECISION_TASK_TIMED_OUT_CAUSE_TIMEOUT
    with pytest.raises(EntityNotExistsError):
        await respond_decision(client, first, complete_workflow(b"too late"))

    second = await poll_decision(client, tl)
    assert (second.attempt, second.started_event_id) == (1, 6)
    assert event_types(list(second.history.events))[-2:] == [
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
    ]
    clock.advance(2)  # the transient attempt times out too: no event, attempt 2

    async def third_attempt() -> bool:
        return (await describe(client, execution)).pending_decision.attempt == 2

    await eventually(third_attempt)
    assert len(await checked_history(client, execution)) == 4
    third = await poll_decision(client, tl)
    assert third.attempt == 2
    await respond_decision(client, third, complete_workflow(b"finally"))
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskTimedOut",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    assert events[4].decision_task_scheduled_event_attributes.attempt == 2


# ----------------------------------------------------------------------------------------------
# Invalid decisions fail the whole task


INVALID = {
    "no-activity-id": (
        schedule_activity("", "tl", schedule_to_close=10),
        CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES,
        b"ActivityId is not set on decision.",
    ),
    "no-schedule-to-close": (
        schedule_activity("a2", "tl", start_to_close=10),
        CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES,
        b"A valid ScheduleToCloseTimeout is not set on decision.",
    ),
    "duplicate-activity-id": (
        schedule_activity("a1", "tl", schedule_to_close=10),
        CAUSE.DECISION_TASK_FAILED_CAUSE_SCHEDULE_ACTIVITY_DUPLICATE_ID,
        None,
    ),
    "duplicate-timer-id": (
        _timer("t1", 5),
        CAUSE.DECISION_TASK_FAILED_CAUSE_START_TIMER_DUPLICATE_ID,
        None,
    ),
    "timer-without-timeout": (
        _timer("t2", 0),
        CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_START_TIMER_ATTRIBUTES,
        None,
    ),
    "marker-without-name": (
        _marker(""),
        CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_RECORD_MARKER_ATTRIBUTES,
        None,
    ),
    "unknown-search-attribute": (
        _upsert(NoSuchAttribute=b'"x"'),
        CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES,
        None,
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
async def test_invalid_decision_fails_the_whole_task(client: Client, case: str) -> None:
    bad, cause, message = INVALID[case]
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    valid = [
        _marker("before"),
        schedule_activity("a1", tl, schedule_to_close=10),
        _timer("t1", 5),
    ]
    await respond_decision(client, task, *valid, bad, _marker("after"), identity="bad-decider")

    events = await checked_history(client, execution)
    assert event_types(events) == [*FIRST_DECISION, "DecisionTaskFailed"]
    failed = events[3].decision_task_failed_event_attributes
    assert failed.cause == cause
    assert (failed.scheduled_event_id, failed.started_event_id) == (2, 3)
    assert failed.identity == "bad-decider"
    assert failed.failure.reason == ""
    if message is not None:
        assert failed.failure.details == message
    # None of the task's decisions took effect; a transient retry is pending.
    state = await describe(client, execution)
    assert not state.pending_activities
    assert _pending_decision(state) == (5, 1, workflow_pb2.PENDING_DECISION_STATE_SCHEDULED)

    retry = await poll_decision(client, tl)
    assert retry.attempt == 1
    await respond_decision(client, retry, *valid)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "MarkerRecorded",
        "ActivityTaskScheduled",
        "TimerStarted",
    ]


# ----------------------------------------------------------------------------------------------
# Buffered events and close decisions

CLOSE_DECISIONS = {
    "complete": complete_workflow(b"r"),
    "fail": _fail_workflow("bad", b"d"),
    "continue-as-new": _continue_as_new(),
}


@pytest.mark.parametrize("close", list(CLOSE_DECISIONS))
async def test_close_decision_with_unhandled_events_fails(client: Client, close: str) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    await _signal(client, execution, "late")  # arrives while the decision is in flight
    await respond_decision(client, task, _marker("m"), CLOSE_DECISIONS[close])

    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskFailed",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    failed = events[3].decision_task_failed_event_attributes
    assert failed.cause == workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION
    assert failed.failure.details == (
        b"cannot complete workflow, new pending decisions were scheduled while this decision "
        b"was processing"
    )
    # The flushed signal makes the retry a normal decision that sees it.
    assert events[5].decision_task_scheduled_event_attributes.attempt == 0
    retry = await poll_decision(client, tl)
    assert (retry.attempt, retry.started_event_id) == (0, 7)
    assert event_types(list(retry.history.events))[4] == "WorkflowExecutionSignaled"
    await respond_decision(client, retry, complete_workflow(b"handled"))
    events = await checked_history(client, execution)
    assert event_types(events)[-2:] == ["DecisionTaskCompleted", "WorkflowExecutionCompleted"]


async def test_cancel_decision_with_unhandled_events_fails(client: Client) -> None:
    execution, tl = await _start(client)
    await respond_decision(client, await poll_decision(client, tl), _timer("wait", 60))
    await _request_cancel(client, execution)
    task = await poll_decision(client, tl)
    await _signal(client, execution, "late")
    await respond_decision(client, task, _cancel_workflow(b"bye"))
    events = await checked_history(client, execution)
    assert event_types(events)[5:] == [
        "WorkflowExecutionCancelRequested",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskFailed",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    failed = events[8].decision_task_failed_event_attributes
    assert failed.cause == workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION
    assert failed.failure.details == (
        b"cannot process cancellation, new pending decisions were scheduled while this "
        b"decision was processing"
    )
    assert (await describe(client, execution)).workflow_execution_info.close_status == 0


async def test_non_close_decisions_with_unhandled_events_complete(client: Client) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    await _signal(client, execution, "late")
    await respond_decision(client, task, _timer("t", 30))
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "TimerStarted",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    assert events[5].workflow_execution_signaled_event_attributes.identity == "signaller"


async def test_force_create_new_decision_task(client: Client) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    await respond_decision(client, task, force_new=True)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "DecisionTaskScheduled",
    ]
    task = await poll_decision(client, tl)
    assert (task.attempt, task.started_event_id) == (0, 6)
    assert task.previous_started_event_id.value == 3
    # Without force and with nothing new, no decision follows.
    await respond_decision(client, task)
    events = await checked_history(client, execution)
    assert event_types(events)[-1] == "DecisionTaskCompleted"
    assert not (await describe(client, execution)).HasField("pending_decision")


# ----------------------------------------------------------------------------------------------
# Each decision type and its events


async def test_timer_decisions(manual: tuple[Client, ManualClock]) -> None:
    client, clock = manual
    execution, tl = await _start(client, execution_timeout=300)
    task = await poll_decision(client, tl)
    await respond_decision(client, task, _timer("short", 3), _timer("long", 100), force_new=True)
    task = await poll_decision(client, tl)
    await respond_decision(
        client, task, _cancel_timer("long"), _cancel_timer("never-started"), identity="d2"
    )
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "TimerStarted",
        "TimerStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "TimerCanceled",
        "CancelTimerFailed",
    ]
    short = events[4].timer_started_event_attributes
    assert (short.timer_id, short.start_to_fire_timeout.seconds) == ("short", 3)
    assert short.decision_task_completed_event_id == 4
    canceled = events[9].timer_canceled_event_attributes
    assert (canceled.timer_id, canceled.started_event_id) == ("long", 6)
    assert (canceled.decision_task_completed_event_id, canceled.identity) == (9, "d2")
    failed = events[10].cancel_timer_failed_event_attributes
    assert (failed.timer_id, failed.cause) == ("never-started", "TIMER_ID_UNKNOWN")
    assert (failed.decision_task_completed_event_id, failed.identity) == (9, "d2")

    clock.advance(3)
    events = []

    async def fired() -> bool:
        nonlocal events
        events = await full_history(client, execution)
        return len(events) == 13

    await eventually(fired)
    events = await checked_history(client, execution)
    assert event_types(events)[11:] == ["TimerFired", "DecisionTaskScheduled"]
    fired_attrs = events[11].timer_fired_event_attributes
    assert (fired_attrs.timer_id, fired_attrs.started_event_id) == ("short", 5)
    clock.advance(100)  # the canceled timer never fires
    task = await poll_decision(client, tl)
    await respond_decision(client, task, complete_workflow())
    assert event_types(await checked_history(client, execution))[11:] == [
        "TimerFired",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]


async def test_marker_upsert_and_unknown_activity_cancel(client: Client) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    marker = _marker("version", b"v2")
    marker.record_marker_decision_attributes.header.fields["k"].data = b"h"
    await respond_decision(
        client,
        task,
        marker,
        _upsert(CustomKeywordField=b'"blue"', CustomIntField=b"7"),
        decision_pb2.Decision(
            request_cancel_activity_task_decision_attributes=(
                decision_pb2.RequestCancelActivityTaskDecisionAttributes(activity_id="ghost")
            )
        ),
        complete_workflow(b"all done"),
    )
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "MarkerRecorded",
        "UpsertWorkflowSearchAttributes",
        "RequestCancelActivityTaskFailed",
        "WorkflowExecutionCompleted",
    ]
    recorded = events[4].marker_recorded_event_attributes
    assert (recorded.marker_name, recorded.details.data) == ("version", b"v2")
    assert recorded.header.fields["k"].data == b"h"
    assert recorded.decision_task_completed_event_id == 4
    upsert = events[5].upsert_workflow_search_attributes_event_attributes
    assert upsert.decision_task_completed_event_id == 4
    assert {k: v.data for k, v in upsert.search_attributes.indexed_fields.items()} == {
        "CustomKeywordField": b'"blue"',
        "CustomIntField": b"7",
    }
    cancel_failed = events[6].request_cancel_activity_task_failed_event_attributes
    assert (cancel_failed.activity_id, cancel_failed.cause) == ("ghost", "ACTIVITY_ID_UNKNOWN")
    assert cancel_failed.decision_task_completed_event_id == 4
    completed = events[7].workflow_execution_completed_event_attributes
    assert (completed.result.data, completed.decision_task_completed_event_id) == (b"all done", 4)
    info = (await describe(client, execution)).workflow_execution_info
    assert info.search_attributes.indexed_fields["CustomKeywordField"].data == b'"blue"'
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED


async def test_fail_workflow_decision(client: Client) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    await respond_decision(client, task, _fail_workflow("it broke", b"\x01\x02"))
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "WorkflowExecutionFailed",
    ]
    failed = events[4].workflow_execution_failed_event_attributes
    assert failed.failure == common_pb2.Failure(reason="it broke", details=b"\x01\x02")
    assert failed.decision_task_completed_event_id == 4
    info = (await describe(client, execution)).workflow_execution_info
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED


@pytest.mark.parametrize("close", ["cancel", "fail"])
async def test_cancel_request_then_close_decision_cancels_the_run(
    client: Client, close: str
) -> None:
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    await respond_decision(client, task, _timer("wait", 60))
    await _request_cancel(client, execution)
    task = await poll_decision(client, tl)
    assert event_types(list(task.history.events))[-3:] == [
        "WorkflowExecutionCancelRequested",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
    ]
    decision = _cancel_workflow(b"bye") if close == "cancel" else _fail_workflow("ignored", b"bye")
    await respond_decision(client, task, decision)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "TimerStarted",
        "WorkflowExecutionCancelRequested",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCanceled",
    ]
    requested = events[5].workflow_execution_cancel_requested_event_attributes
    assert (requested.cause, requested.identity) == ("user asked", "canceller")
    canceled = events[9].workflow_execution_canceled_event_attributes
    assert (canceled.details.data, canceled.decision_task_completed_event_id) == (b"bye", 9)
    info = (await describe(client, execution)).workflow_execution_info
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED


@reg.workflow()
class DecisionsWorkflow:
    @workflow.run
    async def run(self) -> str:
        workflow.upsert_search_attributes({"CustomKeywordField": "green"})
        drawn = workflow.side_effect(lambda: "drawn once", str)
        await workflow.sleep(timedelta(seconds=3))
        return drawn


async def test_official_workflow_decisions_produce_their_events(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "DecisionsWorkflow",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=60),
        )

        async def timer_started() -> bool:
            types = event_types(await full_history(client, execution))
            return "TimerStarted" in types

        await eventually(timer_started)
        clock.advance(3)
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"drawn once"'
    events = await checked_history(client, execution)
    types = event_types(events)
    assert types[:4] == [*FIRST_DECISION, "DecisionTaskCompleted"]
    assert sorted(types[4:7]) == [
        "MarkerRecorded",
        "TimerStarted",
        "UpsertWorkflowSearchAttributes",
    ]
    assert types[7:] == [
        "TimerFired",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    by_type = dict(zip(types, events, strict=True))
    assert by_type["TimerStarted"].timer_started_event_attributes.start_to_fire_timeout.seconds == 3
    fired = events[7].timer_fired_event_attributes
    assert fired.started_event_id == by_type["TimerStarted"].event_id
    upsert = by_type["UpsertWorkflowSearchAttributes"]
    fields = upsert.upsert_workflow_search_attributes_event_attributes.search_attributes
    assert fields.indexed_fields["CustomKeywordField"].data == b'"green"'


async def test_decision_blob_over_the_limit_fails_the_workflow(client: Client) -> None:
    """A 3 MB result fails the run (not the task), none of the task's decisions apply, and
    a retry policy does not retry it."""
    execution, tl = await _start(client)
    task = await poll_decision(client, tl)
    big = complete_workflow(b"x" * (3 * 1024 * 1024))
    await respond_decision(client, task, schedule_activity("a1", tl, schedule_to_close=10), big)
    events = await checked_history(client, execution)
    assert event_types(events) == [
        *FIRST_DECISION,
        "DecisionTaskCompleted",
        "WorkflowExecutionFailed",
    ]
    failed = events[4].workflow_execution_failed_event_attributes
    assert failed.failure.reason == "DECISION_BLOB_SIZE_EXCEEDS_LIMIT"
    assert b"exceeds size limit" in failed.failure.details
    assert failed.decision_task_completed_event_id == 4
