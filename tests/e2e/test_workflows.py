"""Workflow-level API end to end through the official client: start options (ID reuse,
retry, cron, memo, search attributes, header, delay_start), signal, signal-with-start,
cancel, terminate, workflow timeout, continue-as-new and describe."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from cadence.error import (
    CancellationAlreadyRequestedError,
    EntityNotExistsError,
    WorkflowExecutionAlreadyStartedError,
)
from google.protobuf import duration_pb2

from engine.clock import ManualClock
from engine.execution.checker import check_history
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    eventually,
    full_history,
    manual_clock_client,
    worker_for,
)

reg = Registry()

# A gate the blocking activity waits on; set by the describe test when it is done looking.
_gates: dict[str, asyncio.Event] = {}


@reg.activity()
async def block(key: str) -> str:
    gate = _gates.setdefault(key, asyncio.Event())
    await gate.wait()
    return key


@reg.workflow()
class ReturnInput:
    @workflow.run
    async def run(self, value: str) -> str:
        return value


@reg.workflow()
class AlwaysFails:
    @workflow.run
    async def run(self, value: str) -> str:
        raise RuntimeError(f"boom {value}")


@reg.workflow()
class WaitForSignals:
    def __init__(self) -> None:
        self.received: list[str] = []
        self.done = False

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.received.append(value)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.received


@reg.workflow()
class CountUp:
    @workflow.run
    async def run(self, n: int) -> int:
        if n < 2:
            workflow.continue_as_new(n + 1)
        return n


@reg.workflow()
class RunsBlockingActivity:
    @workflow.run
    async def run(self, key: str) -> str:
        return await block.with_options(schedule_to_close_timeout=timedelta(seconds=30)).execute(
            key
        )


# -- helpers -------------------------------------------------------------------------------------


def _execution(workflow_id: str, run_id: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id)


async def history(
    client: Client, workflow_id: str, run_id: str = ""
) -> list[history_pb2.HistoryEvent]:
    """The run's full history, validated by the checker."""
    events = await full_history(client, _execution(workflow_id, run_id))
    check_history(events)
    return events


def start_request(
    workflow_type: str,
    task_list: str,
    *,
    workflow_id: str | None = None,
    input: Any = None,
    execution_timeout: int = 30,
    **fields: Any,
) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    """A raw start request, for the options the client does not expose."""
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_id=workflow_id or f"wf-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name=workflow_type),
        task_list=tasklist_pb2.TaskList(name=task_list),
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=execution_timeout),
        task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
        identity="raw-starter",
        request_id=str(uuid.uuid4()),
        **fields,
    )
    if input is not None:
        req.input.CopyFrom(common_pb2.Payload(data=json.dumps(input).encode()))
    return req


async def start_raw(
    client: Client, req: service_workflow_pb2.StartWorkflowExecutionRequest
) -> common_pb2.WorkflowExecution:
    resp = await client.workflow_stub.StartWorkflowExecution(req)
    return _execution(req.workflow_id, resp.run_id)


async def describe(
    client: Client, workflow_id: str, run_id: str = ""
) -> service_workflow_pb2.DescribeWorkflowExecutionResponse:
    resp: service_workflow_pb2.DescribeWorkflowExecutionResponse
    resp = await client.workflow_stub.DescribeWorkflowExecution(
        service_workflow_pb2.DescribeWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=_execution(workflow_id, run_id)
        )
    )
    return resp


async def terminate(client: Client, workflow_id: str, run_id: str = "", **fields: Any) -> None:
    await client.workflow_stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=_execution(workflow_id, run_id), **fields
        )
    )


async def wait_for_types(
    client: Client, workflow_id: str, run_id: str, expected: list[str]
) -> list[history_pb2.HistoryEvent]:
    """Wait until the run's history has exactly the `expected` event types."""
    got: list[history_pb2.HistoryEvent] = []

    async def check() -> bool:
        nonlocal got
        got = await history(client, workflow_id, run_id)
        return event_types(got) == expected

    try:
        await eventually(check)
    except AssertionError:
        raise AssertionError(f"history is {event_types(got)}, expected {expected}") from None
    return got


async def no_new_events(client: Client, execution: common_pb2.WorkflowExecution) -> bool:
    """Long-poll for one second past the run's last event: True when nothing new arrives."""
    events = await full_history(client, execution)
    first = await client.workflow_stub.GetWorkflowExecutionHistory(
        service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
            domain=DOMAIN, workflow_execution=execution, wait_for_new_event=True
        )
    )
    assert len(first.history.events) == len(events)
    if not first.next_page_token:
        return True  # closed: the server says no event will ever follow
    resp = await client.workflow_stub.GetWorkflowExecutionHistory(
        service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
            domain=DOMAIN,
            workflow_execution=execution,
            wait_for_new_event=True,
            next_page_token=first.next_page_token,
        ),
        timeout=2,
    )
    return len(resp.history.events) == 0


COMPLETED_RUN = [
    "WorkflowExecutionStarted",
    "DecisionTaskScheduled",
    "DecisionTaskStarted",
    "DecisionTaskCompleted",
    "WorkflowExecutionCompleted",
]
FAILED_RUN = [*COMPLETED_RUN[:-1], "WorkflowExecutionFailed"]


@pytest.fixture
async def manual(tmp_path: Path) -> AsyncIterator[tuple[Client, ManualClock]]:
    """A server whose time only moves when the test advances it."""
    async with manual_clock_client(tmp_path / "manual.db") as env:
        yield env


# -- start: ID reuse policies ---------------------------------------------------------------------

ALLOW_FAILED_ONLY = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY
ALLOW = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
REJECT = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE
TERMINATE = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING

# (previous run, policy) -> does a new start succeed?
REUSE_TABLE = {
    ("running", ALLOW_FAILED_ONLY): False,
    ("running", ALLOW): False,
    ("running", REJECT): False,
    ("running", TERMINATE): True,
    ("completed", ALLOW_FAILED_ONLY): False,
    ("completed", ALLOW): True,
    ("completed", REJECT): False,
    ("completed", TERMINATE): True,
    ("failed", ALLOW_FAILED_ONLY): True,
    ("failed", ALLOW): True,
    ("failed", REJECT): False,
    ("failed", TERMINATE): True,
}


@pytest.mark.parametrize(("previous", "policy"), list(REUSE_TABLE))
async def test_workflow_id_reuse_policy(
    client: Client, previous: str, policy: workflow_pb2.WorkflowIdReusePolicy
) -> None:
    allowed = REUSE_TABLE[(previous, policy)]
    workflow_id = f"reuse-{previous}-{policy}"
    wf_type = {"running": "WaitForSignals", "completed": "ReturnInput", "failed": "AlwaysFails"}
    async with worker_for(client, reg) as worker:
        first_req = start_request(
            wf_type[previous],
            worker.task_list,
            workflow_id=workflow_id,
            input=None if previous == "running" else "x",
        )
        first = await start_raw(client, first_req)
        if previous == "running":
            await wait_for_types(client, workflow_id, first.run_id, COMPLETED_RUN[:4])
        else:
            await close_event(client, first)
        second_req = start_request(
            "ReturnInput",
            worker.task_list,
            workflow_id=workflow_id,
            input="second",
            workflow_id_reuse_policy=policy,
        )
        if not allowed:
            with pytest.raises(WorkflowExecutionAlreadyStartedError) as info:
                await client.workflow_stub.StartWorkflowExecution(second_req)
            assert info.value.run_id == first.run_id
            assert info.value.start_request_id == first_req.request_id
            # Nothing changed: the first run is still the current run.
            assert (
                await describe(client, workflow_id)
            ).workflow_execution_info.workflow_execution.run_id == first.run_id
            return
        second = await start_raw(client, second_req)
        assert second.run_id != first.run_id
        closed = await close_event(client, second)
        assert closed.workflow_execution_completed_event_attributes.result.data == b'"second"'
    first_events = await history(client, workflow_id, first.run_id)
    if previous == "running":
        # TERMINATE_IF_RUNNING terminated the running run before starting the new one.
        assert event_types(first_events) == [*COMPLETED_RUN[:4], "WorkflowExecutionTerminated"]
        reason = first_events[-1].workflow_execution_terminated_event_attributes.reason
        assert "TerminateIfRunning" in reason
    await history(client, workflow_id, second.run_id)
    current = await describe(client, workflow_id)
    assert current.workflow_execution_info.workflow_execution.run_id == second.run_id


async def test_default_policy_is_allow_duplicate_failed_only(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        done = await client.start_workflow(
            "ReturnInput",
            "v",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=10),
        )
        await close_event(client, done)
        with pytest.raises(WorkflowExecutionAlreadyStartedError) as info:
            await client.start_workflow(
                "ReturnInput",
                "v",
                task_list=worker.task_list,
                workflow_id=done.workflow_id,
                execution_start_to_close_timeout=timedelta(seconds=10),
            )
        assert info.value.run_id == done.run_id


async def test_same_request_id_returns_the_same_run(client: Client) -> None:
    req = start_request("WaitForSignals", f"tl-{uuid.uuid4()}")
    first = await client.workflow_stub.StartWorkflowExecution(req)
    again = await client.workflow_stub.StartWorkflowExecution(req)
    assert again.run_id == first.run_id
    # Even with a different reuse policy, the retried request is the same start.
    req.workflow_id_reuse_policy = TERMINATE
    third = await client.workflow_stub.StartWorkflowExecution(req)
    assert third.run_id == first.run_id
    events = await history(client, req.workflow_id, first.run_id)
    assert event_types(events) == ["WorkflowExecutionStarted", "DecisionTaskScheduled"]
    # A different request id is a different start: rejected while running.
    req.request_id = str(uuid.uuid4())
    req.workflow_id_reuse_policy = ALLOW
    with pytest.raises(WorkflowExecutionAlreadyStartedError) as info:
        await client.workflow_stub.StartWorkflowExecution(req)
    assert info.value.run_id == first.run_id


# -- start: retry policy and cron (ManualClock) ---------------------------------------------------


async def test_retry_policy_continues_as_new_until_attempts_are_exhausted(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    async with worker_for(client, reg) as worker:
        first = await client.start_workflow(
            "AlwaysFails",
            "r",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=100),
            retry_policy={
                "initial_interval": timedelta(seconds=1),
                "backoff_coefficient": 2.0,
                "maximum_attempts": 3,
            },
        )
        wf = first.workflow_id
        run_ids = [first.run_id]
        backoffs: list[int] = []
        for attempt in (1, 2):
            closed = await close_event(client, _execution(wf, run_ids[-1]))
            can = closed.workflow_execution_continued_as_new_event_attributes
            assert can.new_execution_run_id, event_types([closed])
            assert can.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_RETRY_POLICY
            assert can.failure.reason == "RuntimeError"
            assert b"boom r" in can.failure.details
            backoffs.append(can.backoff_start_interval.seconds)
            prev = await history(client, wf, run_ids[-1])
            assert event_types(prev) == [*COMPLETED_RUN[:4], "WorkflowExecutionContinuedAsNew"]
            run_ids.append(can.new_execution_run_id)
            # The next run waits out the backoff: only its started event exists.
            (started,) = await history(client, wf, run_ids[-1])
            a = started.workflow_execution_started_event_attributes
            assert a.attempt == attempt
            assert a.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_RETRY_POLICY
            assert a.continued_execution_run_id == run_ids[-2]
            assert a.first_execution_run_id == first.run_id
            assert a.continued_failure.reason == "RuntimeError"
            assert a.first_decision_task_backoff.seconds == backoffs[-1]
            assert a.retry_policy.maximum_attempts == 3
            assert json.loads(a.input.data) == "r"
            clock.advance(backoffs[-1])
        closed = await close_event(client, _execution(wf, run_ids[-1]))
    assert backoffs == [1, 2]
    # The third attempt (attempt 2) was the last one: the run fails for good.
    assert closed.workflow_execution_failed_event_attributes.failure.reason == "RuntimeError"
    last = await history(client, wf, run_ids[-1])
    assert event_types(last) == FAILED_RUN
    assert len(set(run_ids)) == 3
    info = (await describe(client, wf)).workflow_execution_info
    assert info.workflow_execution.run_id == run_ids[-1]
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED


async def test_cron_schedule_continues_as_new_with_last_completion_result(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    # The manual clock starts at 1_700_000_000 s = 22:13:20 UTC: the next minute is 40 s away.
    async with worker_for(client, reg) as worker:
        first = await client.start_workflow(
            "ReturnInput",
            "tick",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
            cron_schedule="* * * * *",
        )
        wf = first.workflow_id
        (started,) = await history(client, wf, first.run_id)
        a = started.workflow_execution_started_event_attributes
        assert a.cron_schedule == "* * * * *"
        assert a.first_decision_task_backoff.seconds == 40
        assert not (await describe(client, wf)).HasField("pending_decision")
        clock.advance(40)
        closed = await close_event(client, first)
        can = closed.workflow_execution_continued_as_new_event_attributes
        assert can.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        assert can.last_completion_result.data == b'"tick"'
        assert can.backoff_start_interval.seconds == 60
        assert event_types(await history(client, wf, first.run_id)) == [
            *COMPLETED_RUN[:4],
            "WorkflowExecutionContinuedAsNew",
        ]
        second = can.new_execution_run_id
        (started2,) = await history(client, wf, second)
        a2 = started2.workflow_execution_started_event_attributes
        assert a2.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        assert a2.last_completion_result.data == b'"tick"'
        assert a2.continued_execution_run_id == first.run_id
        assert a2.first_execution_run_id == first.run_id
        assert a2.cron_schedule == "* * * * *"
        assert a2.first_decision_task_backoff.seconds == 60
        described = await describe(client, wf)
        assert described.workflow_execution_info.workflow_execution.run_id == second
        assert described.workflow_execution_info.is_cron
        clock.advance(60)
        closed2 = await close_event(client, _execution(wf, second))
        third = closed2.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        assert third
        # Terminate ends the chain: no further run.
        await terminate(client, wf, third, reason="stop cron")
    events = await history(client, wf, third)
    assert event_types(events) == ["WorkflowExecutionStarted", "WorkflowExecutionTerminated"]
    info = (await describe(client, wf)).workflow_execution_info
    assert info.workflow_execution.run_id == third
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED


# -- start: memo, search attributes, header, delay_start -------------------------------------------


async def test_memo_search_attributes_and_header_are_recorded(client: Client) -> None:
    req = start_request(
        "WaitForSignals",
        f"tl-{uuid.uuid4()}",
        memo=common_pb2.Memo(fields={"owner": common_pb2.Payload(data=b'"team-a"')}),
        search_attributes=common_pb2.SearchAttributes(
            indexed_fields={
                "CustomKeywordField": common_pb2.Payload(data=b'"blue"'),
                "CustomIntField": common_pb2.Payload(data=b"7"),
            }
        ),
        header=common_pb2.Header(fields={"trace-id": common_pb2.Payload(data=b"abc")}),
    )
    run = await start_raw(client, req)
    started = (await history(client, run.workflow_id, run.run_id))[0]
    a = started.workflow_execution_started_event_attributes
    assert a.memo.fields["owner"].data == b'"team-a"'
    assert dict(a.search_attributes.indexed_fields.items()) == {
        "CustomKeywordField": common_pb2.Payload(data=b'"blue"'),
        "CustomIntField": common_pb2.Payload(data=b"7"),
    }
    assert a.header.fields["trace-id"].data == b"abc"
    assert a.identity == "raw-starter"
    info = (await describe(client, run.workflow_id)).workflow_execution_info
    assert info.memo.fields["owner"].data == b'"team-a"'
    assert info.search_attributes.indexed_fields["CustomKeywordField"].data == b'"blue"'
    assert json.loads(info.search_attributes.indexed_fields["CustomIntField"].data) == 7


async def test_memo_through_the_client_reaches_the_workflow(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "ReturnInput",
            "m",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=10),
            memo={"k": {"nested": [1, 2]}},
        )
        await close_event(client, run)
    started = (await history(client, run.workflow_id, run.run_id))[0]
    memo = started.workflow_execution_started_event_attributes.memo
    assert json.loads(memo.fields["k"].data) == {"nested": [1, 2]}
    info = (await describe(client, run.workflow_id)).workflow_execution_info
    assert json.loads(info.memo.fields["k"].data) == {"nested": [1, 2]}


async def test_unknown_search_attribute_is_rejected(client: Client) -> None:
    from cadence.error import CadenceRpcError

    req = start_request(
        "WaitForSignals",
        "tl",
        search_attributes=common_pb2.SearchAttributes(
            indexed_fields={"NoSuchField": common_pb2.Payload(data=b"1")}
        ),
    )
    with pytest.raises(CadenceRpcError) as info:
        await client.workflow_stub.StartWorkflowExecution(req)
    assert info.value.code.name == "INVALID_ARGUMENT"
    with pytest.raises(EntityNotExistsError):
        await describe(client, req.workflow_id)


async def test_delay_start_schedules_the_first_decision_after_the_backoff(
    manual: tuple[Client, ManualClock],
) -> None:
    client, clock = manual
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "ReturnInput",
            "late",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
            delay_start=timedelta(seconds=5),
        )
        (started,) = await history(client, run.workflow_id, run.run_id)
        a = started.workflow_execution_started_event_attributes
        assert a.first_decision_task_backoff.seconds == 5
        d = await describe(client, run.workflow_id)
        assert not d.HasField("pending_decision")
        info = d.workflow_execution_info
        assert info.execution_time.ToNanoseconds() - info.start_time.ToNanoseconds() == 5 * 10**9
        # Before the backoff has passed, no decision is scheduled.
        clock.advance(4)
        assert await no_new_events(client, run)
        clock.advance(1)
        closed = await close_event(client, run)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"late"'
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == COMPLETED_RUN
    scheduled_ns = events[1].event_time.ToNanoseconds()
    assert scheduled_ns - events[0].event_time.ToNanoseconds() == 5 * 10**9


# -- signal, signal-with-start


async def test_signals_reach_the_workflow(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "WaitForSignals",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "a")
        await client.signal_workflow(run.workflow_id, "", "add", "b")
        await client.signal_workflow(run.workflow_id, run.run_id, "finish")
        closed = await close_event(client, run)
    assert json.loads(closed.workflow_execution_completed_event_attributes.result.data) == [
        "a",
        "b",
    ]
    events = await history(client, run.workflow_id, run.run_id)
    signaled = [
        e.workflow_execution_signaled_event_attributes
        for e in events
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert [(s.signal_name, s.input.data) for s in signaled] == [
        ("add", b'"a"'),
        ("add", b'"b"'),
        ("finish", b""),
    ]
    assert all(s.identity == client.identity and s.request_id for s in signaled)


async def test_signal_is_deduplicated_by_request_id(client: Client) -> None:
    run = await start_raw(client, start_request("WaitForSignals", f"tl-{uuid.uuid4()}"))
    req = service_workflow_pb2.SignalWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_execution=run,
        identity="signaller",
        request_id=str(uuid.uuid4()),
        signal_name="add",
        signal_input=common_pb2.Payload(data=b'"once"'),
        control=b"ctl",
    )
    await client.workflow_stub.SignalWorkflowExecution(req)
    await client.workflow_stub.SignalWorkflowExecution(req)
    req.request_id = str(uuid.uuid4())
    await client.workflow_stub.SignalWorkflowExecution(req)
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionSignaled",
    ]
    first = events[2].workflow_execution_signaled_event_attributes
    assert (first.signal_name, first.input.data, first.identity) == ("add", b'"once"', "signaller")
    assert events[3].workflow_execution_signaled_event_attributes.request_id == req.request_id


async def test_signals_just_under_the_blob_limit_are_kept_whole(client: Client) -> None:
    """Payloads the API accepts are stored, also several at once in one group commit (in
    distributed mode each group commit is one Cassandra batch)."""
    run = await start_raw(client, start_request("WaitForSignals", f"tl-{uuid.uuid4()}"))
    payloads = [bytes([65 + i]) * (2 * 1024 * 1024 - 1024) for i in range(3)]
    await asyncio.gather(
        *(
            client.workflow_stub.SignalWorkflowExecution(
                service_workflow_pb2.SignalWorkflowExecutionRequest(
                    domain=DOMAIN,
                    workflow_execution=run,
                    identity="big",
                    request_id=str(uuid.uuid4()),
                    signal_name="add",
                    signal_input=common_pb2.Payload(data=data),
                ),
                timeout=60,
            )
            for data in payloads
        )
    )
    # One event a page: the client takes at most 4 MB in one message.
    events: list[history_pb2.HistoryEvent] = []
    token = b""
    while True:
        page = await client.workflow_stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=DOMAIN, workflow_execution=run, page_size=1, next_page_token=token
            )
        )
        events.extend(page.history.events)
        token = page.next_page_token
        if not token:
            break
    check_history(events)
    got = sorted(
        e.workflow_execution_signaled_event_attributes.input.data
        for e in events
        if e.HasField("workflow_execution_signaled_event_attributes")
    )
    assert got == payloads


async def test_signal_of_missing_or_closed_run_is_entity_not_exists(client: Client) -> None:
    with pytest.raises(EntityNotExistsError):
        await client.signal_workflow("no-such-workflow", "", "add", "x")
    run = await start_raw(client, start_request("WaitForSignals", "tl"))
    await terminate(client, run.workflow_id, run.run_id, reason="done")
    with pytest.raises(EntityNotExistsError) as info:
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "x")
    assert "already completed" in str(info.value)


async def test_signal_with_start_starts_when_no_run_exists(client: Client) -> None:
    workflow_id = f"sws-{uuid.uuid4()}"
    run = await client.signal_with_start_workflow(
        "WaitForSignals",
        "add",
        ["first"],
        task_list=f"tl-{uuid.uuid4()}",
        workflow_id=workflow_id,
        execution_start_to_close_timeout=timedelta(seconds=30),
    )
    events = await history(client, workflow_id, run.run_id)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    s = events[1].workflow_execution_signaled_event_attributes
    assert (s.signal_name, s.input.data) == ("add", b'"first"')
    # All three events are one batch (one history node): a one-node page holds them all.
    page = await client.workflow_stub.GetWorkflowExecutionHistory(
        service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
            domain=DOMAIN, workflow_execution=run, page_size=1
        )
    )
    assert [e.event_id for e in page.history.events] == [1, 2, 3]
    assert len({e.event_time.ToNanoseconds() for e in events}) == 1


async def test_signal_with_start_signals_the_running_run(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        options: dict[str, Any] = {
            "task_list": worker.task_list,
            "workflow_id": f"sws-{uuid.uuid4()}",
            "execution_start_to_close_timeout": timedelta(seconds=30),
        }
        first = await client.signal_with_start_workflow("WaitForSignals", "add", ["a"], **options)
        again = await client.signal_with_start_workflow("WaitForSignals", "add", ["b"], **options)
        assert again.run_id == first.run_id
        await client.signal_workflow(first.workflow_id, "", "finish")
        closed = await close_event(client, first)
        assert json.loads(closed.workflow_execution_completed_event_attributes.result.data) == [
            "a",
            "b",
        ]
        # After the run closed, signal-with-start starts a new run (ALLOW_DUPLICATE by default).
        third = await client.signal_with_start_workflow("WaitForSignals", "add", ["c"], **options)
        assert third.run_id != first.run_id
        await client.signal_workflow(third.workflow_id, third.run_id, "finish")
        closed3 = await close_event(client, third)
    assert json.loads(closed3.workflow_execution_completed_event_attributes.result.data) == ["c"]
    events = await history(client, first.workflow_id, first.run_id)
    assert event_types(events)[:3] == [
        "WorkflowExecutionStarted",
        "WorkflowExecutionSignaled",
        "DecisionTaskScheduled",
    ]
    assert event_types(events).count("WorkflowExecutionSignaled") == 3
    await history(client, third.workflow_id, third.run_id)


# -- cancel ---------------------------------------------------------------------------------------


async def test_request_cancel_is_seen_by_the_workflow(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "WaitForSignals",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await wait_for_types(client, run.workflow_id, run.run_id, COMPLETED_RUN[:4])
        await client.cancel_workflow(run.workflow_id, run.run_id)
        closed = await close_event(client, run)
    assert closed.HasField("workflow_execution_canceled_event_attributes")
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [
        *COMPLETED_RUN[:4],
        "WorkflowExecutionCancelRequested",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCanceled",
    ]
    req = events[4].workflow_execution_cancel_requested_event_attributes
    assert req.identity == client.identity
    assert req.request_id
    assert (
        events[-1].workflow_execution_canceled_event_attributes.decision_task_completed_event_id
        == 8
    )
    info = (await describe(client, run.workflow_id)).workflow_execution_info
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED


async def test_second_cancel_request_is_rejected_and_a_retry_is_a_no_op(client: Client) -> None:
    run = await start_raw(client, start_request("WaitForSignals", f"tl-{uuid.uuid4()}"))
    req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_execution=run,
        identity="canceller",
        request_id=str(uuid.uuid4()),
        cause="because",
    )
    await client.workflow_stub.RequestCancelWorkflowExecution(req)
    await client.workflow_stub.RequestCancelWorkflowExecution(req)  # same request: no-op
    req.request_id = str(uuid.uuid4())
    with pytest.raises(CancellationAlreadyRequestedError):
        await client.workflow_stub.RequestCancelWorkflowExecution(req)
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionCancelRequested",
    ]
    a = events[2].workflow_execution_cancel_requested_event_attributes
    assert (a.cause, a.identity) == ("because", "canceller")


# -- terminate, timeout ----------------------------------------------------------------------------


async def test_terminate_closes_the_run_without_a_decision(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "WaitForSignals",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await wait_for_types(client, run.workflow_id, run.run_id, COMPLETED_RUN[:4])
        await terminate(
            client,
            run.workflow_id,
            "",
            reason="operator",
            details=common_pb2.Payload(data=b"why"),
            identity="admin",
        )
        closed = await close_event(client, run)
        # A signal to the terminated run is refused: nothing is added, no decision follows.
        with pytest.raises(EntityNotExistsError):
            await client.signal_workflow(run.workflow_id, run.run_id, "finish")
        assert await no_new_events(client, run)
    t = closed.workflow_execution_terminated_event_attributes
    assert (t.reason, t.details.data, t.identity) == ("operator", b"why", "admin")
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [*COMPLETED_RUN[:4], "WorkflowExecutionTerminated"]
    d = await describe(client, run.workflow_id, run.run_id)
    assert d.workflow_execution_info.close_status == (
        workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED
    )
    assert d.workflow_execution_info.HasField("close_time")
    assert not d.HasField("pending_decision")
    with pytest.raises(EntityNotExistsError):
        await terminate(client, run.workflow_id, run.run_id, reason="again")


async def test_terminate_with_a_scheduled_decision_drops_it(client: Client) -> None:
    run = await start_raw(client, start_request("ReturnInput", f"tl-{uuid.uuid4()}", input="x"))
    await terminate(client, run.workflow_id, run.run_id, reason="early")
    async with worker_for(client, reg, run_task_list(await describe(client, run.workflow_id))):
        assert await no_new_events(client, run)
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionTerminated",
    ]


def run_task_list(d: service_workflow_pb2.DescribeWorkflowExecutionResponse) -> str:
    return d.execution_configuration.task_list.name


async def test_workflow_execution_timeout(manual: tuple[Client, ManualClock]) -> None:
    client, clock = manual
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "WaitForSignals",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=20),
        )
        await wait_for_types(client, run.workflow_id, run.run_id, COMPLETED_RUN[:4])
        clock.advance(19)
        assert await no_new_events(client, run)
        clock.advance(1)
        closed = await close_event(client, run)
    assert closed.workflow_execution_timed_out_event_attributes.timeout_type == (
        workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
    )
    events = await history(client, run.workflow_id, run.run_id)
    assert event_types(events) == [*COMPLETED_RUN[:4], "WorkflowExecutionTimedOut"]
    info = (await describe(client, run.workflow_id)).workflow_execution_info
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TIMED_OUT


# -- continue-as-new ------------------------------------------------------------------------------


async def test_continue_as_new_from_workflow_code(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        first = await client.start_workflow(
            "CountUp",
            0,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        wf = first.workflow_id
        run_ids = [first.run_id]
        while True:
            closed = await close_event(client, _execution(wf, run_ids[-1]))
            if not closed.HasField("workflow_execution_continued_as_new_event_attributes"):
                break
            can = closed.workflow_execution_continued_as_new_event_attributes
            assert can.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_DECIDER
            assert can.workflow_type.name == "CountUp"
            assert can.task_list.name == worker.task_list
            assert can.execution_start_to_close_timeout.seconds == 30
            assert json.loads(can.input.data) == len(run_ids)
            run_ids.append(can.new_execution_run_id)
    assert len(run_ids) == 3
    assert closed.workflow_execution_completed_event_attributes.result.data == b"2"
    for i, run_id in enumerate(run_ids):
        events = await history(client, wf, run_id)
        last = "WorkflowExecutionContinuedAsNew" if i < 2 else "WorkflowExecutionCompleted"
        assert event_types(events) == [*COMPLETED_RUN[:4], last]
        a = events[0].workflow_execution_started_event_attributes
        assert json.loads(a.input.data) == i
        assert a.first_execution_run_id == first.run_id
        assert a.continued_execution_run_id == (run_ids[i - 1] if i else "")
        if i:
            assert a.initiator == workflow_pb2.CONTINUE_AS_NEW_INITIATOR_DECIDER
        if i < 2:
            dtc = events[-1].workflow_execution_continued_as_new_event_attributes
            assert dtc.decision_task_completed_event_id == 4
    info = (await describe(client, wf)).workflow_execution_info
    assert info.workflow_execution.run_id == run_ids[-1]
    first_info = (await describe(client, wf, first.run_id)).workflow_execution_info
    assert first_info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CONTINUED_AS_NEW


# -- describe -------------------------------------------------------------------------------------


async def test_describe_pending_decision_and_execution_configuration(client: Client) -> None:
    task_list = f"tl-{uuid.uuid4()}"
    run = await start_raw(
        client, start_request("ReturnInput", task_list, input="d", execution_timeout=45)
    )
    d = await describe(client, run.workflow_id)
    cfg = d.execution_configuration
    assert cfg.task_list.name == task_list
    assert cfg.execution_start_to_close_timeout.seconds == 45
    assert cfg.task_start_to_close_timeout.seconds == 10
    info = d.workflow_execution_info
    assert info.workflow_execution == run
    assert info.type.name == "ReturnInput"
    assert info.history_length == 2
    assert not info.HasField("close_time")
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_INVALID
    pd = d.pending_decision
    assert pd.state == workflow_pb2.PENDING_DECISION_STATE_SCHEDULED
    assert pd.schedule_id == 2
    assert pd.attempt == 0
    assert not pd.HasField("started_time")
    assert list(d.pending_activities) == []
    async with worker_for(client, reg, task_list):
        await close_event(client, run)
    d = await describe(client, run.workflow_id, run.run_id)
    assert d.workflow_execution_info.close_status == (
        workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED
    )
    assert d.workflow_execution_info.history_length == 5
    assert d.workflow_execution_info.close_time.ToNanoseconds() >= (
        d.workflow_execution_info.start_time.ToNanoseconds()
    )
    assert not d.HasField("pending_decision")


async def test_describe_pending_activity(client: Client) -> None:
    key = f"gate-{uuid.uuid4()}"
    gate = _gates.setdefault(key, asyncio.Event())
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "RunsBlockingActivity",
            key,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        d: service_workflow_pb2.DescribeWorkflowExecutionResponse | None = None

        async def activity_started() -> bool:
            nonlocal d
            d = await describe(client, run.workflow_id)
            return any(
                a.state == workflow_pb2.PENDING_ACTIVITY_STATE_STARTED for a in d.pending_activities
            )

        await eventually(activity_started)
        assert d is not None
        (act,) = d.pending_activities
        assert act.activity_type.name == "block"
        assert act.attempt == 0
        assert act.schedule_id == 5
        assert act.started_worker_identity
        assert act.HasField("last_started_time")
        assert not d.HasField("pending_decision")
        gate.set()
        closed = await close_event(client, run)
    assert json.loads(closed.workflow_execution_completed_event_attributes.result.data) == key
    await history(client, run.workflow_id, run.run_id)
    d = await describe(client, run.workflow_id)
    assert list(d.pending_activities) == []


async def test_describe_unknown_workflow_is_entity_not_exists(client: Client) -> None:
    with pytest.raises(EntityNotExistsError):
        await describe(client, "does-not-exist")
