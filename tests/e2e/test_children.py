"""Child workflows and external signal / cancel requests, end to end.

Children go through the official client (`execute_child_workflow`, `start_child_workflow`,
`signal_external_workflow`, cancelling a child future). A cancel request for a workflow that is
not a child has no client API, so those tests act as the decider with raw WorkerAPI calls.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_workflow_pb2,
    workflow_pb2,
)
from cadence.error import (
    ChildWorkflowExecutionCanceled,
    ChildWorkflowExecutionFailed,
    ChildWorkflowExecutionTerminated,
    ChildWorkflowExecutionTimedOut,
    SignalExternalWorkflowFailed,
    StartChildWorkflowExecutionFailed,
)

from engine.execution.checker import check_history
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    eventually,
    full_history,
    poll_decision,
    respond_decision,
    start_raw,
    worker_for,
)

reg = Registry()

CHILD_TIMEOUT = timedelta(seconds=30)


@reg.workflow()
class Child:
    """Completes, fails, or waits for a "finish" signal (or a cancel) depending on `mode`."""

    def __init__(self) -> None:
        self.finished = False

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.finished = True

    @workflow.run
    async def run(self, mode: str) -> str:
        if mode == "fail":
            raise RuntimeError("child says no")
        if mode == "wait":
            await workflow.wait_condition(lambda: self.finished)
        return f"child:{mode}"


@reg.workflow()
class Parent:
    """Runs one child and reports how it ended; `cancel` cancels the child once started."""

    @workflow.run
    async def run(self, mode: str, child_id: str, timeout_s: int, cancel: bool) -> str:
        try:
            child = await workflow.start_child_workflow(
                "Child",
                str,
                mode,
                workflow_id=child_id,
                execution_start_to_close_timeout=timedelta(seconds=timeout_s),
            )
        except StartChildWorkflowExecutionFailed as e:
            return f"start_failed:{e.cause}"
        if cancel:
            child.cancel()
        try:
            return await child
        except ChildWorkflowExecutionFailed as e:
            return f"failed:{e.failure.reason}"
        except ChildWorkflowExecutionCanceled:
            return "canceled"
        except ChildWorkflowExecutionTimedOut as e:
            return f"timed_out:{e.timeout_type}"
        except ChildWorkflowExecutionTerminated:
            return "terminated"


@reg.workflow()
class ParentOfMany:
    """Starts one waiting child per (workflow_id, parent close policy) and completes at once."""

    @workflow.run
    async def run(self, children: list[list[str]]) -> str:
        for child_id, policy in children:
            await workflow.start_child_workflow(
                "Child",
                str,
                "wait",
                workflow_id=child_id,
                execution_start_to_close_timeout=CHILD_TIMEOUT,
                parent_close_policy=policy,
            )
        return "parent done"


@reg.workflow()
class Chain:
    """Continues as new until n reaches 2."""

    @workflow.run
    async def run(self, n: int) -> int:
        if n < 2:
            workflow.continue_as_new(n + 1)
        return n


@reg.workflow()
class ParentOfChain:
    @workflow.run
    async def run(self, child_id: str) -> int:
        return await workflow.execute_child_workflow(
            "Chain", int, 0, workflow_id=child_id, execution_start_to_close_timeout=CHILD_TIMEOUT
        )


@reg.workflow()
class ParentWithGeneratedChildId:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_child_workflow(
            "Child", str, "quick", execution_start_to_close_timeout=CHILD_TIMEOUT
        )


@reg.workflow()
class Signaller:
    """Signals `target` ("add", value) and reports whether the signal was delivered."""

    @workflow.run
    async def run(self, target: str, value: str) -> str:
        try:
            await workflow.signal_external_workflow(target, "add", value)
        except SignalExternalWorkflowFailed as e:
            return f"failed:{e.cause}"
        return "signaled"


@reg.workflow()
class SelfSignaller:
    def __init__(self) -> None:
        self.values: list[str] = []

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.values.append(value)

    @workflow.run
    async def run(self) -> str:
        try:
            own_id = workflow.WorkflowContext.get().info().workflow_id
            await workflow.signal_external_workflow(own_id, "add", "me")
        except SignalExternalWorkflowFailed as e:
            return f"failed:{e.cause} got {self.values}"
        return f"signaled got {self.values}"


@reg.workflow()
class Collector:
    def __init__(self) -> None:
        self.values: list[str] = []

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.values.append(value)

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: bool(self.values))
        return self.values


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


def without_decisions(events: list[history_pb2.HistoryEvent]) -> list[str]:
    """Event types minus the DecisionTask* events, whose interleaving depends on timing."""
    return [t for t in event_types(events) if not t.startswith("DecisionTask")]


def only(events: list[history_pb2.HistoryEvent], field: str) -> history_pb2.HistoryEvent:
    found = [e for e in events if e.WhichOneof("attributes") == field]
    assert len(found) == 1, f"expected one {field}, got {len(found)}"
    return found[0]


async def run_parent(
    client: Client,
    task_list: str,
    mode: str,
    child_id: str,
    *,
    timeout_s: int = 30,
    cancel: bool = False,
) -> tuple[common_pb2.WorkflowExecution, str]:
    parent = await client.start_workflow(
        "Parent",
        mode,
        child_id,
        timeout_s,
        cancel,
        task_list=task_list,
        execution_start_to_close_timeout=timedelta(seconds=30),
    )
    closed = await close_event(client, parent)
    assert closed.HasField("workflow_execution_completed_event_attributes"), closed
    result = closed.workflow_execution_completed_event_attributes.result.data.decode()
    return parent, result


async def wait_for_event(
    client: Client, workflow_id: str, field: str, run_id: str = ""
) -> history_pb2.HistoryEvent:
    found: list[history_pb2.HistoryEvent] = []

    async def check() -> bool:
        events = await full_history(client, _execution(workflow_id, run_id))
        found[:] = [e for e in events if e.WhichOneof("attributes") == field]
        return bool(found)

    await eventually(check)
    return found[0]


async def describe(
    client: Client, workflow_id: str, run_id: str = ""
) -> service_workflow_pb2.DescribeWorkflowExecutionResponse:
    resp: service_workflow_pb2.DescribeWorkflowExecutionResponse = (
        await client.workflow_stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=_execution(workflow_id, run_id)
            )
        )
    )
    return resp


CHILD_LIFECYCLE = [
    "WorkflowExecutionStarted",
    "StartChildWorkflowExecutionInitiated",
    "ChildWorkflowExecutionStarted",
]


# -- child outcomes -------------------------------------------------------------------------------


async def test_child_completes_and_the_parent_gets_its_result(client: Client) -> None:
    child_id = f"child-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent, result = await run_parent(client, worker.task_list, "quick", child_id)
    assert result == '"child:quick"'

    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "ChildWorkflowExecutionCompleted",
        "WorkflowExecutionCompleted",
    ]
    # The decision that started the child is the first one: 1 Started, 2-4 the decision.
    assert event_types(events)[:6] == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
    ]
    initiated = events[4].start_child_workflow_execution_initiated_event_attributes
    assert initiated.domain == DOMAIN
    assert initiated.workflow_id == child_id
    assert initiated.workflow_type.name == "Child"
    assert initiated.task_list.name == worker.task_list
    assert initiated.decision_task_completed_event_id == 4
    assert initiated.execution_start_to_close_timeout.seconds == 30
    # The Python client defaults to TERMINATE, like the Go client.
    assert initiated.parent_close_policy == workflow_pb2.PARENT_CLOSE_POLICY_TERMINATE

    started = events[5].child_workflow_execution_started_event_attributes
    assert started.initiated_event_id == 5
    assert started.domain == DOMAIN
    assert started.workflow_type.name == "Child"
    assert started.workflow_execution.workflow_id == child_id
    child_run = started.workflow_execution.run_id
    assert child_run

    done_event = only(events, "child_workflow_execution_completed_event_attributes")
    done = done_event.child_workflow_execution_completed_event_attributes
    assert done.result.data == b'"child:quick"'
    assert (done.initiated_event_id, done.started_event_id) == (5, 6)
    assert done.workflow_execution == _execution(child_id, child_run)
    assert done.workflow_type.name == "Child"

    child_events = await history(client, child_id, child_run)
    assert event_types(child_events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    child_started = child_events[0].workflow_execution_started_event_attributes
    info = child_started.parent_execution_info
    assert info.domain_name == DOMAIN
    assert info.domain_id
    assert info.workflow_execution == _execution(parent.workflow_id, parent.run_id)
    assert info.initiated_id == 5
    assert child_started.task_list.name == worker.task_list
    assert child_started.execution_start_to_close_timeout.seconds == 30
    assert child_started.input.data == b'"quick"'

    desc = await describe(client, child_id, child_run)
    assert desc.workflow_execution_info.parent_execution_info.initiated_id == 5
    assert (
        desc.workflow_execution_info.parent_execution_info.workflow_execution.run_id
        == parent.run_id
    )


async def test_child_id_generated_by_the_client(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        parent = await client.start_workflow(
            "ParentWithGeneratedChildId",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, parent)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"child:quick"'
    events = await history(client, parent.workflow_id, parent.run_id)
    child = only(events, "child_workflow_execution_completed_event_attributes")
    child_exec = child.child_workflow_execution_completed_event_attributes.workflow_execution
    # The Python client names a child "<parent run id>_<sequence>".
    assert child_exec.workflow_id == f"{parent.run_id}_0"
    await history(client, child_exec.workflow_id, child_exec.run_id)


async def test_child_failure_reaches_the_parent(client: Client) -> None:
    child_id = f"child-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent, result = await run_parent(client, worker.task_list, "fail", child_id)
    assert result == '"failed:RuntimeError"'
    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "ChildWorkflowExecutionFailed",
        "WorkflowExecutionCompleted",
    ]
    failed = only(events, "child_workflow_execution_failed_event_attributes")
    attrs = failed.child_workflow_execution_failed_event_attributes
    assert attrs.failure.reason == "RuntimeError"
    assert b"child says no" in attrs.failure.details
    assert (attrs.initiated_event_id, attrs.started_event_id) == (5, 6)
    child_events = await history(client, child_id)
    assert event_types(child_events)[-1] == "WorkflowExecutionFailed"


async def test_child_canceled_by_the_parent(client: Client) -> None:
    """Cancelling a started child future sends RequestCancelExternal(child_workflow_only)."""
    child_id = f"child-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent, result = await run_parent(client, worker.task_list, "wait", child_id, cancel=True)
    assert result == '"canceled"'
    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "RequestCancelExternalWorkflowExecutionInitiated",
        "ExternalWorkflowExecutionCancelRequested",
        "ChildWorkflowExecutionCanceled",
        "WorkflowExecutionCompleted",
    ]
    req_event = only(
        events, "request_cancel_external_workflow_execution_initiated_event_attributes"
    )
    req = req_event.request_cancel_external_workflow_execution_initiated_event_attributes
    assert req.workflow_execution.workflow_id == child_id
    assert req.child_workflow_only
    asked = only(events, "external_workflow_execution_cancel_requested_event_attributes")
    asked_attrs = asked.external_workflow_execution_cancel_requested_event_attributes
    assert asked_attrs.initiated_event_id == req_event.event_id
    assert asked_attrs.workflow_execution.workflow_id == child_id
    canceled = only(events, "child_workflow_execution_canceled_event_attributes")
    c = canceled.child_workflow_execution_canceled_event_attributes
    assert (c.initiated_event_id, c.started_event_id) == (5, 6)

    child_events = await history(client, child_id)
    assert without_decisions(child_events) == [
        "WorkflowExecutionStarted",
        "WorkflowExecutionCancelRequested",
        "WorkflowExecutionCanceled",
    ]
    cancel_req = only(child_events, "workflow_execution_cancel_requested_event_attributes")
    ext = cancel_req.workflow_execution_cancel_requested_event_attributes.external_execution_info
    assert ext.workflow_execution == _execution(parent.workflow_id, parent.run_id)
    assert ext.initiated_id == req_event.event_id


async def test_child_timeout_reaches_the_parent(client: Client) -> None:
    child_id = f"child-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent, result = await run_parent(client, worker.task_list, "wait", child_id, timeout_s=1)
    assert result == f'"timed_out:{workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE}"'
    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "ChildWorkflowExecutionTimedOut",
        "WorkflowExecutionCompleted",
    ]
    timed_out = only(events, "child_workflow_execution_timed_out_event_attributes")
    attrs = timed_out.child_workflow_execution_timed_out_event_attributes
    assert attrs.timeout_type == workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
    assert (attrs.initiated_event_id, attrs.started_event_id) == (5, 6)
    child_events = await history(client, child_id)
    assert event_types(child_events)[-1] == "WorkflowExecutionTimedOut"


async def test_child_termination_reaches_the_parent(client: Client) -> None:
    child_id = f"child-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent = await client.start_workflow(
            "Parent",
            "wait",
            child_id,
            30,
            False,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await wait_for_event(
            client, parent.workflow_id, "child_workflow_execution_started_event_attributes"
        )
        await client.workflow_stub.TerminateWorkflowExecution(
            service_workflow_pb2.TerminateWorkflowExecutionRequest(
                domain=DOMAIN,
                workflow_execution=_execution(child_id),
                reason="test says stop",
                identity="test",
            )
        )
        closed = await close_event(client, parent)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"terminated"'
    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "ChildWorkflowExecutionTerminated",
        "WorkflowExecutionCompleted",
    ]
    term = only(events, "child_workflow_execution_terminated_event_attributes")
    attrs = term.child_workflow_execution_terminated_event_attributes
    assert (attrs.initiated_event_id, attrs.started_event_id) == (5, 6)
    assert attrs.workflow_execution.workflow_id == child_id
    child_events = await history(client, child_id)
    assert event_types(child_events)[-1] == "WorkflowExecutionTerminated"


async def test_child_start_with_a_running_id_fails_with_workflow_already_running(
    client: Client,
) -> None:
    busy_id = f"busy-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        busy = await client.start_workflow(
            "Child",
            "wait",
            workflow_id=busy_id,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        parent, result = await run_parent(client, worker.task_list, "quick", busy_id)
        assert result == (
            f'"start_failed:{workflow_pb2.CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_RUNNING}"'
        )
        events = await history(client, parent.workflow_id, parent.run_id)
        assert event_types(events) == [
            "WorkflowExecutionStarted",
            "DecisionTaskScheduled",
            "DecisionTaskStarted",
            "DecisionTaskCompleted",
            "StartChildWorkflowExecutionInitiated",
            "StartChildWorkflowExecutionFailed",
            "DecisionTaskScheduled",
            "DecisionTaskStarted",
            "DecisionTaskCompleted",
            "WorkflowExecutionCompleted",
        ]
        failed = events[5].start_child_workflow_execution_failed_event_attributes
        assert (
            failed.cause
            == workflow_pb2.CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_RUNNING
        )
        assert failed.initiated_event_id == 5
        assert failed.workflow_id == busy_id
        assert failed.workflow_type.name == "Child"
        assert failed.domain == DOMAIN
        # Copied from the Initiated event, as the Go server does.
        assert failed.decision_task_completed_event_id == 4

        # The running workflow was left alone: still one run, no parent, and it still works.
        desc = await describe(client, busy_id)
        assert desc.workflow_execution_info.workflow_execution.run_id == busy.run_id
        assert desc.workflow_execution_info.close_status == (
            workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_INVALID
        )
        await client.signal_workflow(busy_id, busy.run_id, "finish")
        closed = await close_event(client, busy)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"child:wait"'
    busy_events = await history(client, busy_id, busy.run_id)
    assert not busy_events[0].workflow_execution_started_event_attributes.HasField(
        "parent_execution_info"
    )


# -- parent close policies ------------------------------------------------------------------------


async def test_parent_close_policies(client: Client) -> None:
    """TERMINATE terminates the child, REQUEST_CANCEL asks it to cancel, ABANDON leaves it."""
    ids = {
        p: f"child-{p.lower()}-{uuid.uuid4()}" for p in ("TERMINATE", "REQUEST_CANCEL", "ABANDON")
    }
    async with worker_for(client, reg) as worker:
        parent = await client.start_workflow(
            "ParentOfMany",
            [[ids[p], f"PARENT_CLOSE_POLICY_{p}"] for p in ids],
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, parent)
        assert closed.HasField("workflow_execution_completed_event_attributes")

        terminated = await close_event(client, _execution(ids["TERMINATE"]))
        term = terminated.workflow_execution_terminated_event_attributes
        assert term.reason == "by parent close policy"
        assert term.identity == "cadence-history-server"

        canceled = await close_event(client, _execution(ids["REQUEST_CANCEL"]))
        assert canceled.HasField("workflow_execution_canceled_event_attributes")
        cancel_events = await history(client, ids["REQUEST_CANCEL"])
        assert without_decisions(cancel_events) == [
            "WorkflowExecutionStarted",
            "WorkflowExecutionCancelRequested",
            "WorkflowExecutionCanceled",
        ]

        # The close task applied every policy in one go, so the abandoned child was passed over:
        # it is still running and finishes normally when told to.
        desc = await describe(client, ids["ABANDON"])
        assert desc.workflow_execution_info.close_status == (
            workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_INVALID
        )
        await client.signal_workflow(ids["ABANDON"], "", "finish")
        abandoned = await close_event(client, _execution(ids["ABANDON"]))
    assert abandoned.workflow_execution_completed_event_attributes.result.data == b'"child:wait"'
    abandon_events = await history(client, ids["ABANDON"])
    assert without_decisions(abandon_events) == [
        "WorkflowExecutionStarted",
        "WorkflowExecutionSignaled",
        "WorkflowExecutionCompleted",
    ]
    term_events = await history(client, ids["TERMINATE"])
    assert without_decisions(term_events) == [
        "WorkflowExecutionStarted",
        "WorkflowExecutionTerminated",
    ]

    parent_events = await history(client, parent.workflow_id, parent.run_id)
    initiated = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in parent_events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert [(i.workflow_id, i.parent_close_policy) for i in initiated] == [
        (ids["TERMINATE"], workflow_pb2.PARENT_CLOSE_POLICY_TERMINATE),
        (ids["REQUEST_CANCEL"], workflow_pb2.PARENT_CLOSE_POLICY_REQUEST_CANCEL),
        (ids["ABANDON"], workflow_pb2.PARENT_CLOSE_POLICY_ABANDON),
    ]
    # The parent closed with its children pending: no Child* outcome events.
    assert without_decisions(parent_events) == [
        "WorkflowExecutionStarted",
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
        "StartChildWorkflowExecutionInitiated",
        "ChildWorkflowExecutionStarted",
        "WorkflowExecutionCompleted",
    ]


# -- continue-as-new child ------------------------------------------------------------------------


async def test_child_that_continues_as_new_reports_only_its_last_run(client: Client) -> None:
    child_id = f"chain-{uuid.uuid4()}"
    async with worker_for(client, reg) as worker:
        parent = await client.start_workflow(
            "ParentOfChain",
            child_id,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, parent)
    assert closed.workflow_execution_completed_event_attributes.result.data == b"2"

    events = await history(client, parent.workflow_id, parent.run_id)
    assert without_decisions(events) == [
        *CHILD_LIFECYCLE,
        "ChildWorkflowExecutionCompleted",
        "WorkflowExecutionCompleted",
    ]
    first_run = only(
        events, "child_workflow_execution_started_event_attributes"
    ).child_workflow_execution_started_event_attributes.workflow_execution.run_id
    done = only(
        events, "child_workflow_execution_completed_event_attributes"
    ).child_workflow_execution_completed_event_attributes

    # Follow the chain from the first run: 0 -> 1 -> 2.
    runs = [first_run]
    while True:
        run_events = await history(client, child_id, runs[-1])
        started = run_events[0].workflow_execution_started_event_attributes
        info = started.parent_execution_info
        assert info.workflow_execution == _execution(parent.workflow_id, parent.run_id)
        assert info.initiated_id == 5
        last = run_events[-1]
        if not last.HasField("workflow_execution_continued_as_new_event_attributes"):
            break
        runs.append(last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id)
    assert len(runs) == 3
    assert last.workflow_execution_completed_event_attributes.result.data == b"2"
    # The parent heard once, from the last run, with the last run's result.
    assert done.workflow_execution == _execution(child_id, runs[-1])
    assert done.result.data == b"2"
    assert (done.initiated_event_id, done.started_event_id) == (5, 6)


# -- signal external ------------------------------------------------------------------------------


async def test_signal_external_workflow(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        target = await client.start_workflow(
            "Collector",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        signaller = await client.start_workflow(
            "Signaller",
            target.workflow_id,
            "hello",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, signaller)
        target_closed = await close_event(client, target)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"signaled"'
    assert target_closed.workflow_execution_completed_event_attributes.result.data == b'["hello"]'

    events = await history(client, signaller.workflow_id, signaller.run_id)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "SignalExternalWorkflowExecutionInitiated",
        "ExternalWorkflowExecutionSignaled",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    init = events[4].signal_external_workflow_execution_initiated_event_attributes
    assert init.domain == DOMAIN
    assert init.workflow_execution.workflow_id == target.workflow_id
    assert init.signal_name == "add"
    assert init.input.data == b'"hello"'
    assert init.control == b"0"  # the client's id for the signal
    assert init.decision_task_completed_event_id == 4
    signaled = events[5].external_workflow_execution_signaled_event_attributes
    assert signaled.initiated_event_id == 5
    assert signaled.domain == DOMAIN
    assert signaled.workflow_execution.workflow_id == target.workflow_id
    assert signaled.control == b"0"

    target_events = await history(client, target.workflow_id, target.run_id)
    got = only(target_events, "workflow_execution_signaled_event_attributes")
    sig = got.workflow_execution_signaled_event_attributes
    assert sig.signal_name == "add"
    assert sig.input.data == b'"hello"'
    assert sig.request_id  # the source's request id, for dedupe


async def test_signal_external_unknown_workflow_fails(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        signaller = await client.start_workflow(
            "Signaller",
            f"nobody-{uuid.uuid4()}",
            "hello",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, signaller)
    cause = workflow_pb2.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION  # noqa: E501
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        f'"failed:{cause}"'.encode()
    )
    events = await history(client, signaller.workflow_id, signaller.run_id)
    assert event_types(events)[4:6] == [
        "SignalExternalWorkflowExecutionInitiated",
        "SignalExternalWorkflowExecutionFailed",
    ]
    failed = events[5].signal_external_workflow_execution_failed_event_attributes
    assert failed.cause == cause
    assert failed.initiated_event_id == 5
    # Cadence records the empty event id (-23) here, and echoes the control.
    assert failed.decision_task_completed_event_id == -23
    assert failed.control == b"0"
    assert failed.domain == DOMAIN


async def test_signal_external_closed_workflow_fails(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        target = await client.start_workflow(
            "Child",
            "quick",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await close_event(client, target)
        signaller = await client.start_workflow(
            "Signaller",
            target.workflow_id,
            "late",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, signaller)
    cause = workflow_pb2.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION  # noqa: E501
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        f'"failed:{cause}"'.encode()
    )
    target_events = await history(client, target.workflow_id, target.run_id)
    assert "WorkflowExecutionSignaled" not in event_types(target_events)


async def test_signal_external_to_itself_fails(client: Client) -> None:
    """Cadence refuses a workflow's signal to its own workflow id (any run)."""
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "SelfSignaller",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, run)
    cause = workflow_pb2.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION  # noqa: E501
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        f'"failed:{cause} got []"'.encode()
    )
    events = await history(client, run.workflow_id, run.run_id)
    assert without_decisions(events) == [
        "WorkflowExecutionStarted",
        "SignalExternalWorkflowExecutionInitiated",
        "SignalExternalWorkflowExecutionFailed",
        "WorkflowExecutionCompleted",
    ]


# -- request cancel external (raw decider) --------------------------------------------------------


def cancel_external(
    workflow_id: str, run_id: str = "", *, control: bytes = b""
) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        request_cancel_external_workflow_execution_decision_attributes=(
            decision_pb2.RequestCancelExternalWorkflowExecutionDecisionAttributes(
                domain=DOMAIN,
                workflow_execution=_execution(workflow_id, run_id),
                control=control,
            )
        )
    )


def complete() -> decision_pb2.Decision:
    return decision_pb2.Decision(
        complete_workflow_execution_decision_attributes=(
            decision_pb2.CompleteWorkflowExecutionDecisionAttributes()
        )
    )


async def raw_cancel_run(
    client: Client, target: common_pb2.WorkflowExecution
) -> tuple[common_pb2.WorkflowExecution, list[history_pb2.HistoryEvent]]:
    """A raw decider asks to cancel `target`, then completes once the result is in."""
    task_list = f"raw-{uuid.uuid4()}"
    source = await start_raw(client, task_list)
    task = await poll_decision(client, task_list)
    await respond_decision(
        client, task, cancel_external(target.workflow_id, target.run_id, control=b"ctl")
    )
    task = await poll_decision(client, task_list)
    assert event_types(list(task.history.events))[-1] == "DecisionTaskStarted"
    await respond_decision(client, task, complete())
    await close_event(client, source)
    return source, await history(client, source.workflow_id, source.run_id)


async def test_request_cancel_external_workflow(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        target = await client.start_workflow(
            "Child",
            "wait",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        source, events = await raw_cancel_run(client, target)
        target_closed = await close_event(client, target)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "RequestCancelExternalWorkflowExecutionInitiated",
        "ExternalWorkflowExecutionCancelRequested",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    init = events[4].request_cancel_external_workflow_execution_initiated_event_attributes
    assert init.domain == DOMAIN
    assert init.workflow_execution == target
    assert init.control == b"ctl"
    assert not init.child_workflow_only
    assert init.decision_task_completed_event_id == 4
    asked = events[5].external_workflow_execution_cancel_requested_event_attributes
    assert asked.initiated_event_id == 5
    assert asked.domain == DOMAIN
    assert asked.workflow_execution == target

    # The target saw the request (with the source named) and cancelled itself.
    assert target_closed.HasField("workflow_execution_canceled_event_attributes")
    target_events = await history(client, target.workflow_id, target.run_id)
    req = only(target_events, "workflow_execution_cancel_requested_event_attributes")
    ext = req.workflow_execution_cancel_requested_event_attributes.external_execution_info
    assert ext.workflow_execution == source
    assert ext.initiated_id == 5


async def test_request_cancel_external_unknown_workflow_fails(client: Client) -> None:
    missing = _execution(f"nobody-{uuid.uuid4()}")
    _, events = await raw_cancel_run(client, missing)
    assert event_types(events)[4:6] == [
        "RequestCancelExternalWorkflowExecutionInitiated",
        "RequestCancelExternalWorkflowExecutionFailed",
    ]
    failed = events[5].request_cancel_external_workflow_execution_failed_event_attributes
    assert failed.cause == (
        workflow_pb2.CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION
    )
    assert failed.initiated_event_id == 5
    assert failed.workflow_execution.workflow_id == missing.workflow_id
    assert failed.domain == DOMAIN
    assert failed.decision_task_completed_event_id == -23  # as Cadence writes it


async def test_request_cancel_external_closed_workflow_fails(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        target = await client.start_workflow(
            "Child",
            "quick",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await close_event(client, target)
    _, events = await raw_cancel_run(client, target)
    assert event_types(events)[4:6] == [
        "RequestCancelExternalWorkflowExecutionInitiated",
        "RequestCancelExternalWorkflowExecutionFailed",
    ]
    target_events = await history(client, target.workflow_id, target.run_id)
    assert "WorkflowExecutionCancelRequested" not in event_types(target_events)


async def test_request_cancel_external_of_itself_fails(client: Client) -> None:
    """Cadence refuses a run's cancel request for its own workflow id: no cancel request."""
    task_list = f"raw-{uuid.uuid4()}"
    source = await start_raw(client, task_list)
    task = await poll_decision(client, task_list)
    await respond_decision(client, task, cancel_external(source.workflow_id))
    task = await poll_decision(client, task_list)
    await respond_decision(client, task, complete())
    closed = await close_event(client, source)
    assert closed.HasField("workflow_execution_completed_event_attributes")
    events = await history(client, source.workflow_id, source.run_id)
    assert without_decisions(events) == [
        "WorkflowExecutionStarted",
        "RequestCancelExternalWorkflowExecutionInitiated",
        "RequestCancelExternalWorkflowExecutionFailed",
        "WorkflowExecutionCompleted",
    ]
    failed = events[5].request_cancel_external_workflow_execution_failed_event_attributes
    assert failed.initiated_event_id == 5
    assert failed.cause == (
        workflow_pb2.CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION
    )
