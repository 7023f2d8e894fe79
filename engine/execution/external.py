"""Events caused from outside the decider: signals, cancel requests, termination, user timers,
workflow backoff, and the results of children and of external signal/cancel requests."""

from __future__ import annotations

from typing import Any

from cadence.api.v1 import common_pb2, history_pb2, workflow_pb2

from engine.errors import (
    CancellationAlreadyRequestedError,
    EntityNotExistsError,
    LimitExceededError,
)
from engine.execution.mutation import RunMutation
from engine.execution.protos import payload
from engine.execution.starts import (
    CLOSE_CANCELED,
    CLOSE_COMPLETED,
    CLOSE_FAILED,
    CLOSE_TERMINATED,
    CLOSE_TIMED_OUT,
    close_run,
)
from engine.model.state import EMPTY_EVENT_ID, ChildInfo
from engine.model.tasks import TimerTask

MAX_SIGNALS = 10_000
# Request ids kept for dedupe; older ones fall off (a retry comes within seconds).
MAX_SIGNAL_REQUEST_IDS = 1_000


def require_open(m: RunMutation) -> None:
    if not m.state.is_open:
        raise EntityNotExistsError("Workflow execution already completed.")


def signal(
    m: RunMutation, name: str, data: bytes | None, identity: str, request_id: str, control: bytes
) -> None:
    require_open(m)
    st = m.state
    if request_id and request_id in st.signal_request_ids:
        return  # a retried request: applied already
    if st.signal_count >= MAX_SIGNALS:
        raise LimitExceededError("Signal count exceeds limit.")
    st.signal_count += 1
    if request_id:
        st.signal_request_ids.append(request_id)
        del st.signal_request_ids[:-MAX_SIGNAL_REQUEST_IDS]
    m.add_external_event(
        "workflow_execution_signaled_event_attributes",
        history_pb2.WorkflowExecutionSignaledEventAttributes(
            signal_name=name, input=payload(data), identity=identity, request_id=request_id
        ),
    )


def request_cancel(
    m: RunMutation,
    identity: str,
    request_id: str,
    cause: str,
    external: workflow_pb2.ExternalExecutionInfo | None = None,
) -> None:
    require_open(m)
    st = m.state
    if st.cancel_requested:
        if request_id and request_id == st.cancel_request_id:
            return
        raise CancellationAlreadyRequestedError("Cancellation already requested for this workflow.")
    st.cancel_requested = True
    st.cancel_request_id = request_id
    m.add_external_event(
        "workflow_execution_cancel_requested_event_attributes",
        history_pb2.WorkflowExecutionCancelRequestedEventAttributes(
            cause=cause, identity=identity, external_execution_info=external, request_id=request_id
        ),
    )


def terminate(m: RunMutation, reason: str, details: bytes | None, identity: str) -> None:
    require_open(m)
    close_run(
        m,
        CLOSE_TERMINATED,
        "workflow_execution_terminated_event_attributes",
        history_pb2.WorkflowExecutionTerminatedEventAttributes(
            reason=reason, details=payload(details), identity=identity
        ),
    )


def on_user_timer(m: RunMutation, task: TimerTask) -> None:
    st = m.state
    info = st.timers.get(task.timer_id)
    if not st.is_open or info is None or info.started_id != task.event_id:
        return
    del st.timers[task.timer_id]
    m.add_external_event(
        "timer_fired_event_attributes",
        history_pb2.TimerFiredEventAttributes(
            timer_id=info.timer_id, started_event_id=info.started_id
        ),
    )


def on_backoff_timer(m: RunMutation) -> None:
    st = m.state
    if not st.is_open or not st.awaiting_backoff:
        return
    st.awaiting_backoff = False
    m.schedule_decision()


# -- children ------------------------------------------------------------------------------


def _child_execution(info: ChildInfo) -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id)


def child_started(m: RunMutation, initiated_id: int, run_id: str) -> bool:
    """Record ChildWorkflowExecutionStarted; False if the child is no longer pending."""
    st = m.state
    info = st.children.get(initiated_id)
    if not st.is_open or info is None or info.run_id:
        return False
    info.run_id = run_id
    info.started_id = m.add_external_event(
        "child_workflow_execution_started_event_attributes",
        history_pb2.ChildWorkflowExecutionStartedEventAttributes(
            domain=info.domain_name,
            workflow_execution=_child_execution(info),
            workflow_type=common_pb2.WorkflowType(name=info.workflow_type),
            initiated_event_id=initiated_id,
        ),
    )
    return True


def child_start_failed(m: RunMutation, initiated_id: int, cause: int) -> None:
    st = m.state
    info = st.children.get(initiated_id)
    if not st.is_open or info is None or info.run_id:
        return
    del st.children[initiated_id]
    # Control and the decision id are copied from the Initiated event, as Cadence does.
    initiated = history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes.FromString(
        info.initiated
    )
    m.add_external_event(
        "start_child_workflow_execution_failed_event_attributes",
        history_pb2.StartChildWorkflowExecutionFailedEventAttributes(
            domain=info.domain_name,
            workflow_id=info.workflow_id,
            workflow_type=common_pb2.WorkflowType(name=info.workflow_type),
            cause=cause,  # type: ignore[arg-type]
            control=initiated.control,
            initiated_event_id=initiated_id,
            decision_task_completed_event_id=initiated.decision_task_completed_event_id,
        ),
    )


# Any: five attribute classes, each built by keyword and given its own outcome field below.
_CHILD_OUTCOME_FIELD: dict[int, tuple[str, Any]] = {
    workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED: (
        "child_workflow_execution_completed_event_attributes",
        history_pb2.ChildWorkflowExecutionCompletedEventAttributes,
    ),
    workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED: (
        "child_workflow_execution_failed_event_attributes",
        history_pb2.ChildWorkflowExecutionFailedEventAttributes,
    ),
    workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED: (
        "child_workflow_execution_canceled_event_attributes",
        history_pb2.ChildWorkflowExecutionCanceledEventAttributes,
    ),
    workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TIMED_OUT: (
        "child_workflow_execution_timed_out_event_attributes",
        history_pb2.ChildWorkflowExecutionTimedOutEventAttributes,
    ),
    workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED: (
        "child_workflow_execution_terminated_event_attributes",
        history_pb2.ChildWorkflowExecutionTerminatedEventAttributes,
    ),
}


_STATUS_BY_CLOSE_FIELD: dict[str, int] = {
    "workflow_execution_completed_event_attributes": CLOSE_COMPLETED,
    "workflow_execution_failed_event_attributes": CLOSE_FAILED,
    "workflow_execution_canceled_event_attributes": CLOSE_CANCELED,
    "workflow_execution_timed_out_event_attributes": CLOSE_TIMED_OUT,
    "workflow_execution_terminated_event_attributes": CLOSE_TERMINATED,
}


def child_completed(m: RunMutation, initiated_id: int, run_id: str, close_event: bytes) -> None:
    """The child's chain closed: append the matching Child* event (close_event is the child's
    serialized close HistoryEvent)."""
    st = m.state
    info = st.children.get(initiated_id)
    if not st.is_open or info is None:
        return
    if not info.run_id:
        # The completion overtook the started notice; record both, in order.
        child_started(m, initiated_id, run_id)
        info = st.children[initiated_id]
    event = history_pb2.HistoryEvent.FromString(close_event)
    field = event.WhichOneof("attributes")
    status = _STATUS_BY_CLOSE_FIELD.get(field or "")
    if status is None:
        return
    out_field, cls = _CHILD_OUTCOME_FIELD[status]
    attrs = cls(
        domain=info.domain_name,
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=info.workflow_id, run_id=run_id
        ),
        workflow_type=common_pb2.WorkflowType(name=info.workflow_type),
        initiated_event_id=initiated_id,
        started_event_id=info.started_id,
    )
    src = getattr(event, field or "")
    if status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED and src.HasField("result"):
        attrs.result.CopyFrom(src.result)
    elif status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED:
        attrs.failure.CopyFrom(src.failure)
    elif status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED and src.HasField(
        "details"
    ):
        attrs.details.CopyFrom(src.details)
    elif status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TIMED_OUT:
        attrs.timeout_type = src.timeout_type
    del st.children[initiated_id]
    m.add_external_event(out_field, attrs)


# -- external signal / cancel results ---------------------------------------------------------


def external_signal_result(m: RunMutation, initiated_id: int, failed_cause: int | None) -> None:
    st = m.state
    info = st.signals_out.pop(initiated_id, None)
    if not st.is_open or info is None:
        return
    execution = common_pb2.WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id)
    if failed_cause is None:
        m.add_external_event(
            "external_workflow_execution_signaled_event_attributes",
            history_pb2.ExternalWorkflowExecutionSignaledEventAttributes(
                initiated_event_id=initiated_id,
                domain=info.domain_name,
                workflow_execution=execution,
                control=info.control,
            ),
        )
    else:
        m.add_external_event(
            "signal_external_workflow_execution_failed_event_attributes",
            history_pb2.SignalExternalWorkflowExecutionFailedEventAttributes(
                cause=failed_cause,  # type: ignore[arg-type]
                # Cadence writes the empty event id here, not the initiating decision's.
                decision_task_completed_event_id=EMPTY_EVENT_ID,
                domain=info.domain_name,
                workflow_execution=execution,
                initiated_event_id=initiated_id,
                control=info.control,
            ),
        )


def external_cancel_result(m: RunMutation, initiated_id: int, failed_cause: int | None) -> None:
    st = m.state
    info = st.request_cancels.pop(initiated_id, None)
    if not st.is_open or info is None:
        return
    execution = common_pb2.WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id)
    if failed_cause is None:
        m.add_external_event(
            "external_workflow_execution_cancel_requested_event_attributes",
            history_pb2.ExternalWorkflowExecutionCancelRequestedEventAttributes(
                initiated_event_id=initiated_id,
                domain=info.domain_name,
                workflow_execution=execution,
            ),
        )
    else:
        m.add_external_event(
            "request_cancel_external_workflow_execution_failed_event_attributes",
            history_pb2.RequestCancelExternalWorkflowExecutionFailedEventAttributes(
                cause=failed_cause,  # type: ignore[arg-type]
                decision_task_completed_event_id=EMPTY_EVENT_ID,
                domain=info.domain_name,
                workflow_execution=execution,
                initiated_event_id=initiated_id,
            ),
        )
