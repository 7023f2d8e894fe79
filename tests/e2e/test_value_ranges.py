"""Values at and past the edges of what the engine can hold, through the official client.

Each case once did real harm (issue 9): a deadline past int64 nanoseconds stalled its shard
and wedged its run, a NaN retry coefficient lost a timer, unknown enum values, wrong-typed
search attributes and activities in missing domains were stored. Now a value is either
clamped (a Duration longer than ~68 years: "practically never"), refused with BadRequest
naming the field, or, inside a decision, fails the decision task with the decision's cause as
Cadence does; and the run stays usable (signal, terminate) whatever it was asked.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
import pytest_asyncio
from cadence import Client
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_domain_pb2,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    visibility_pb2,
    workflow_pb2,
)
from cadence.error import CadenceRpcError, EntityNotExistsError
from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2
from google.protobuf.message import Message

from engine.execution.protos import MAX_DURATION_SECONDS
from engine.server import Server
from tests.e2e.harness import (
    DOMAIN,
    checked_history,
    complete_workflow,
    event_types,
    poll_decision,
    register_domain,
    respond_decision,
    schedule_activity,
    start_raw,
    started_server,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALL_TIMEOUT = 5.0
YEAR = 365 * 86_400
CAUSE = workflow_pb2.DecisionTaskFailedCause
OTHER_DOMAIN = "value-ranges-other"


@dataclass
class Env:
    server: Server
    client: Client
    visibility: Any


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def e(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    db: Path = tmp_path_factory.mktemp("value-ranges") / "cadenza.db"
    server = await started_server(db)
    client = Client(domain=DOMAIN, target=server.address)
    try:
        await register_domain(client)
        await register_domain(client, OTHER_DOMAIN)
        vis = service_visibility_pb2_grpc.VisibilityAPIStub(client._channel)  # type: ignore[no-untyped-call]
        yield Env(server, client, vis)
    finally:
        await client.close()
        await server.stop()


def _dur(seconds: int, nanos: int = 0) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=seconds, nanos=nanos)


M = TypeVar("M", bound=Message)


def _set(msg: M, **fields: Any) -> M:
    for name, value in fields.items():
        target = getattr(msg, name)
        if hasattr(target, "CopyFrom"):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


def _start(**fields: Any) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_id=f"ranges-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="RawWorkflow"),
        task_list=tasklist_pb2.TaskList(name=f"tl-{uuid.uuid4()}"),
        execution_start_to_close_timeout=_dur(60),
        task_start_to_close_timeout=_dur(10),
        request_id=str(uuid.uuid4()),
    )
    return _set(req, **fields)


async def _started(
    e: Env, req: service_workflow_pb2.StartWorkflowExecutionRequest
) -> common_pb2.WorkflowExecution:
    resp = await e.client.workflow_stub.StartWorkflowExecution(req, timeout=CALL_TIMEOUT)
    return common_pb2.WorkflowExecution(workflow_id=req.workflow_id, run_id=resp.run_id)


async def _bad_request(call: Any, request: Any, *fragments: str) -> str:
    with pytest.raises(CadenceRpcError) as info:
        await call(request, timeout=CALL_TIMEOUT)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


async def _still_usable(e: Env, execution: common_pb2.WorkflowExecution) -> None:
    """A signal and a terminate are applied at once, and the history is valid."""
    stub = e.client.workflow_stub
    await stub.SignalWorkflowExecution(
        service_workflow_pb2.SignalWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=execution, signal_name="still-there"
        ),
        timeout=CALL_TIMEOUT,
    )
    await stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=execution, reason="test over"
        ),
        timeout=CALL_TIMEOUT,
    )
    events = await checked_history(e.client, execution)
    types = event_types(events)
    assert "WorkflowExecutionSignaled" in types
    assert types[-1] == "WorkflowExecutionTerminated"


def _started_attrs(
    events: list[history_pb2.HistoryEvent],
) -> history_pb2.WorkflowExecutionStartedEventAttributes:
    return events[0].workflow_execution_started_event_attributes


# -- durations too long to keep: clamped ---------------------------------------------------


async def test_a_thousand_year_execution_timeout_is_clamped_and_the_run_works(e: Env) -> None:
    execution = await _started(e, _start(execution_start_to_close_timeout=_dur(1000 * YEAR)))
    events = await checked_history(e.client, execution)
    started = _started_attrs(events)
    assert started.execution_start_to_close_timeout.seconds == MAX_DURATION_SECONDS
    await _still_usable(e, execution)


async def test_a_thousand_year_delay_start_is_clamped(e: Env) -> None:
    execution = await _started(e, _start(delay_start=_dur(1000 * YEAR)))
    started = _started_attrs(await checked_history(e.client, execution))
    assert started.first_decision_task_backoff.seconds == MAX_DURATION_SECONDS
    await _still_usable(e, execution)


async def test_a_first_run_in_year_9999_waits_at_most_the_longest_duration(e: Env) -> None:
    year_9999 = timestamp_pb2.Timestamp(seconds=253_402_300_000)
    execution = await _started(e, _start(first_run_at=year_9999, cron_schedule="0 0 1 1 *"))
    started = _started_attrs(await checked_history(e.client, execution))
    assert 0 < started.first_decision_task_backoff.seconds <= MAX_DURATION_SECONDS
    await _still_usable(e, execution)


async def test_a_thousand_year_timer_is_clamped_and_its_run_stays_usable(e: Env) -> None:
    tl = f"tl-{uuid.uuid4()}"
    execution = await start_raw(e.client, tl)
    task = await poll_decision(e.client, tl)
    timer = decision_pb2.StartTimerDecisionAttributes(
        timer_id="forever", start_to_fire_timeout=_dur(1000 * YEAR)
    )
    await respond_decision(
        e.client, task, decision_pb2.Decision(start_timer_decision_attributes=timer)
    )
    events = await checked_history(e.client, execution)
    started = [ev for ev in events if ev.HasField("timer_started_event_attributes")]
    assert started[0].timer_started_event_attributes.start_to_fire_timeout.seconds == (
        MAX_DURATION_SECONDS
    )
    await _still_usable(e, execution)


# -- values no request may hold: refused, naming the field -----------------------------------


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"delay_start": _dur(0, -5)}, "delay_start cannot be negative"),
        ({"jitter_start": _dur(0, -1)}, "jitter_start cannot be negative"),
        ({"delay_start": _dur(1, -5)}, "delay_start is not a valid duration"),
        ({"delay_start": _dur(400_000_000_000)}, "delay_start is not a valid duration"),
        (
            {"first_run_at": timestamp_pb2.Timestamp(seconds=253_402_300_800)},
            "first_run_at is not a valid timestamp",
        ),
        (
            {"first_run_at": timestamp_pb2.Timestamp(seconds=0, nanos=-1)},
            "first_run_at is not a valid timestamp",
        ),
        (
            {
                "retry_policy": common_pb2.RetryPolicy(
                    initial_interval=_dur(1), backoff_coefficient=math.nan, maximum_attempts=3
                )
            },
            "BackoffCoefficient",
        ),
        (
            {
                "retry_policy": common_pb2.RetryPolicy(
                    initial_interval=_dur(1), backoff_coefficient=math.inf, maximum_attempts=3
                )
            },
            "BackoffCoefficient must be a finite number",
        ),
        ({"cron_schedule": "0 0 30 2 *"}, "never fires"),
        (
            {
                "search_attributes": common_pb2.SearchAttributes(
                    indexed_fields={"CustomIntField": common_pb2.Payload(data=b'"abc"')}
                )
            },
            "CustomIntField is of type INT",
        ),
        (
            {
                "search_attributes": common_pb2.SearchAttributes(
                    indexed_fields={"CustomDoubleField": common_pb2.Payload(data=b"NaN")}
                )
            },
            "CustomDoubleField value is not valid JSON",
        ),
        (
            {
                "search_attributes": common_pb2.SearchAttributes(
                    indexed_fields={
                        "CustomDatetimeField": common_pb2.Payload(data=b'"2026-13-01T00:00:00Z"')
                    }
                )
            },
            "CustomDatetimeField is of type DATETIME",
        ),
    ],
    ids=[
        "negative-nanos",
        "negative-jitter-nanos",
        "mixed-signs",
        "beyond-duration-range",
        "year-10000",
        "negative-timestamp-nanos",
        "nan-coefficient",
        "infinite-coefficient",
        "cron-never-fires",
        "search-attribute-wrong-type",
        "search-attribute-nan",
        "search-attribute-bad-date",
    ],
)
async def test_a_start_with_an_impossible_value_is_refused(
    e: Env, fields: dict[str, Any], says: str
) -> None:
    req = _start(**fields)
    await _bad_request(e.client.workflow_stub.StartWorkflowExecution, req, says)
    with pytest.raises(EntityNotExistsError):
        await e.client.workflow_stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN,
                workflow_execution=common_pb2.WorkflowExecution(workflow_id=req.workflow_id),
            ),
            timeout=CALL_TIMEOUT,
        )


@pytest.mark.parametrize(
    ("rate", "says"),
    [(math.nan, "must be a finite number"), (-1.0, "cannot be negative")],
    ids=["nan", "negative"],
)
async def test_a_poll_with_an_impossible_rate_is_refused(e: Env, rate: float, says: str) -> None:
    req = service_worker_pb2.PollForActivityTaskRequest(
        domain=DOMAIN,
        task_list=tasklist_pb2.TaskList(name="rate-tl"),
        task_list_metadata=tasklist_pb2.TaskListMetadata(
            max_tasks_per_second=wrappers_pb2.DoubleValue(value=rate)
        ),
    )
    await _bad_request(
        e.client.worker_stub.PollForActivityTask, req, "task_list_metadata.max_tasks_per_second"
    )


async def test_an_unknown_enum_value_inside_a_decision_is_refused(e: Env) -> None:
    tl = f"tl-{uuid.uuid4()}"
    execution = await start_raw(e.client, tl)
    task = await poll_decision(e.client, tl)
    child = decision_pb2.StartChildWorkflowExecutionDecisionAttributes(
        workflow_id=f"child-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="x"),
        parent_close_policy=99,  # type: ignore[arg-type]
    )
    req = service_worker_pb2.RespondDecisionTaskCompletedRequest(
        task_token=task.task_token,
        decisions=[decision_pb2.Decision(start_child_workflow_execution_decision_attributes=child)],
    )
    await _bad_request(
        e.client.worker_stub.RespondDecisionTaskCompleted,
        req,
        "decisions[0].start_child_workflow_execution_decision_attributes.parent_close_policy",
        "99",
    )
    # Nothing of the decision was recorded; the task is still the worker's to complete.
    await respond_decision(e.client, task, complete_workflow(b"done"))
    assert event_types(await checked_history(e.client, execution))[-1] == (
        "WorkflowExecutionCompleted"
    )


async def test_list_open_with_extreme_times_answers(e: Env) -> None:
    execution = await _started(e, _start())
    filt = visibility_pb2.StartTimeFilter(
        earliest_time=timestamp_pb2.Timestamp(seconds=-62_135_596_800),
        latest_time=timestamp_pb2.Timestamp(seconds=253_402_300_799),
    )
    resp = await e.visibility.ListOpenWorkflowExecutions(
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=filt, page_size=1000
        ),
        timeout=CALL_TIMEOUT,
    )
    assert execution.run_id in {x.workflow_execution.run_id for x in resp.executions}
    beyond = visibility_pb2.StartTimeFilter(
        earliest_time=timestamp_pb2.Timestamp(seconds=0),
        latest_time=timestamp_pb2.Timestamp(seconds=10**15),
    )
    await _bad_request(
        e.visibility.ListOpenWorkflowExecutions,
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=beyond
        ),
        "start_time_filter.latest_time is not a valid timestamp",
    )


async def test_a_failover_with_a_negative_timeout_is_refused(e: Env) -> None:
    await _bad_request(
        e.client.domain_stub.FailoverDomain,
        service_domain_pb2.FailoverDomainRequest(
            domain_name=DOMAIN, failover_timeout=_dur(-1), domain_active_cluster_name="cadenza"
        ),
        "failover_timeout cannot be negative",
    )


# -- bad decision attributes: the decision task fails with the decision's cause -----------------


async def _decide(e: Env, *decisions: decision_pb2.Decision) -> list[history_pb2.HistoryEvent]:
    """Start a run, answer its first decision with `decisions`, return the history."""
    tl = f"tl-{uuid.uuid4()}"
    execution = await start_raw(e.client, tl)
    task = await poll_decision(e.client, tl)
    await respond_decision(e.client, task, *decisions)
    events = await checked_history(e.client, execution)
    await _still_usable(e, execution)
    return events


def _failed(
    events: list[history_pb2.HistoryEvent],
) -> history_pb2.DecisionTaskFailedEventAttributes:
    failed = [ev for ev in events if ev.HasField("decision_task_failed_event_attributes")]
    assert failed, event_types(events)
    return failed[0].decision_task_failed_event_attributes


async def test_an_activity_in_a_domain_that_does_not_exist_fails_the_decision(e: Env) -> None:
    attrs = decision_pb2.ScheduleActivityTaskDecisionAttributes(
        activity_id="a",
        activity_type=common_pb2.ActivityType(name="t"),
        domain="no-such-domain",
        schedule_to_close_timeout=_dur(10),
    )
    events = await _decide(
        e, decision_pb2.Decision(schedule_activity_task_decision_attributes=attrs)
    )
    failed = _failed(events)
    assert failed.cause == CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES
    assert b"no-such-domain" in failed.failure.details
    assert "ActivityTaskScheduled" not in event_types(events)


async def test_an_activity_in_another_existing_domain_is_scheduled(e: Env) -> None:
    attrs = decision_pb2.ScheduleActivityTaskDecisionAttributes(
        activity_id="a",
        activity_type=common_pb2.ActivityType(name="t"),
        domain=OTHER_DOMAIN,
        schedule_to_close_timeout=_dur(10),
    )
    events = await _decide(
        e, decision_pb2.Decision(schedule_activity_task_decision_attributes=attrs)
    )
    assert "ActivityTaskScheduled" in event_types(events)


def _upsert(key: str, raw: bytes) -> decision_pb2.Decision:
    attrs = decision_pb2.UpsertWorkflowSearchAttributesDecisionAttributes(
        search_attributes=common_pb2.SearchAttributes(
            indexed_fields={key: common_pb2.Payload(data=raw)}
        )
    )
    return decision_pb2.Decision(upsert_workflow_search_attributes_decision_attributes=attrs)


def _child(**fields: Any) -> decision_pb2.Decision:
    attrs = decision_pb2.StartChildWorkflowExecutionDecisionAttributes(
        workflow_id=f"child-{uuid.uuid4()}", workflow_type=common_pb2.WorkflowType(name="x")
    )
    _set(attrs, **fields)
    return decision_pb2.Decision(start_child_workflow_execution_decision_attributes=attrs)


def _continue_as_new(**fields: Any) -> decision_pb2.Decision:
    attrs = decision_pb2.ContinueAsNewWorkflowExecutionDecisionAttributes(
        workflow_type=common_pb2.WorkflowType(name="RawWorkflow")
    )
    _set(attrs, **fields)
    return decision_pb2.Decision(continue_as_new_workflow_execution_decision_attributes=attrs)


_BAD_RETRY = common_pb2.RetryPolicy(initial_interval=_dur(1), backoff_coefficient=0.5)


@pytest.mark.parametrize(
    ("decision", "cause", "says"),
    [
        (
            _upsert("CustomIntField", b'"not a number"'),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES,
            "CustomIntField is of type INT",
        ),
        (
            _upsert("CustomBoolField", b"1"),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES,
            "CustomBoolField is of type BOOL",
        ),
        (
            _child(retry_policy=_BAD_RETRY),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES,
            "BackoffCoefficient",
        ),
        (
            _child(cron_schedule="not a cron"),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES,
            "CronSchedule",
        ),
        (
            _child(
                search_attributes=common_pb2.SearchAttributes(
                    indexed_fields={"CustomIntField": common_pb2.Payload(data=b"1.5")}
                )
            ),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES,
            "CustomIntField is of type INT",
        ),
        (
            _child(execution_start_to_close_timeout=_dur(0, -1)),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES,
            "ExecutionStartToCloseTimeout cannot be negative",
        ),
        (
            _continue_as_new(retry_policy=_BAD_RETRY),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_CONTINUE_AS_NEW_ATTRIBUTES,
            "BackoffCoefficient",
        ),
        (
            _continue_as_new(backoff_start_interval=_dur(0, -1)),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_CONTINUE_AS_NEW_ATTRIBUTES,
            "BackoffStartInterval cannot be negative",
        ),
        (
            schedule_activity(
                "a",
                "tl",
                schedule_to_close=10,
                retry=common_pb2.RetryPolicy(
                    initial_interval=_dur(1), backoff_coefficient=2, maximum_interval=_dur(0, -9)
                ),
            ),
            CAUSE.DECISION_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES,
            "MaximumInterval cannot be negative",
        ),
    ],
    ids=[
        "upsert-int-as-string",
        "upsert-bool-as-number",
        "child-retry-policy",
        "child-cron",
        "child-search-attribute",
        "child-negative-timeout",
        "continue-as-new-retry-policy",
        "continue-as-new-negative-backoff",
        "activity-negative-retry-interval",
    ],
)
async def test_bad_decision_attributes_fail_the_decision_with_its_cause(
    e: Env, decision: decision_pb2.Decision, cause: int, says: str
) -> None:
    events = await _decide(e, decision)
    failed = _failed(events)
    assert failed.cause == cause
    assert says.encode() in failed.failure.details, failed.failure.details


async def test_a_second_close_decision_is_ignored_as_in_cadence(e: Env) -> None:
    """Cadence (and Temporal) keep the first close decision of a task and ignore later ones
    (their "multiple completion decisions" counter); the history closes once."""
    tl = f"tl-{uuid.uuid4()}"
    execution = await start_raw(e.client, tl)
    task = await poll_decision(e.client, tl)
    await respond_decision(e.client, task, complete_workflow(b"first"), complete_workflow(b"2nd"))
    events = await checked_history(e.client, execution)
    closes = [ev for ev in events if ev.HasField("workflow_execution_completed_event_attributes")]
    assert len(closes) == 1
    assert closes[0].workflow_execution_completed_event_attributes.result.data == b"first"


async def test_a_long_timeout_with_an_activity_still_runs_to_completion(e: Env) -> None:
    """The clamp changes nothing for a run that completes: timeouts far away never fire."""
    tl = f"tl-{uuid.uuid4()}"
    execution = await _started(
        e,
        _start(
            task_list=tasklist_pb2.TaskList(name=tl),
            execution_start_to_close_timeout=_dur(1000 * YEAR),
        ),
    )
    task = await poll_decision(e.client, tl)
    activity = schedule_activity("a", tl, schedule_to_close=1000 * YEAR)
    await respond_decision(e.client, task, activity)
    events = await checked_history(e.client, execution)
    scheduled = [ev for ev in events if ev.HasField("activity_task_scheduled_event_attributes")]
    timeout = scheduled[0].activity_task_scheduled_event_attributes.schedule_to_close_timeout
    assert timeout.seconds == MAX_DURATION_SECONDS
    assert timedelta(seconds=timeout.seconds) > timedelta(days=365 * 60)
    await _still_usable(e, execution)
