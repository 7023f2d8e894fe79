"""DescribeWorkflowExecution's response, built from mutable state."""

from __future__ import annotations

from cadence.api.v1 import (
    common_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from cadence.api.v1 import (
    service_workflow_pb2 as pb,
)

from engine.execution.protos import dur, last_failure, parent_execution_info, payload, ts
from engine.execution.starts import search_attributes_proto
from engine.model.state import EMPTY_EVENT_ID, MutableState


def execution_info(st: MutableState) -> workflow_pb2.WorkflowExecutionInfo:
    info = workflow_pb2.WorkflowExecutionInfo(
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=st.workflow_id, run_id=st.run_id
        ),
        type=common_pb2.WorkflowType(name=st.workflow_type),
        start_time=ts(st.start_ns),
        history_length=st.next_event_id - 1,
        execution_time=ts(st.execution_ns),
        task_list=st.task_list,
        task_list_info=tasklist_pb2.TaskList(name=st.task_list),
        is_cron=bool(st.cron_schedule),
        cron_schedule=st.cron_schedule,
        memo=common_pb2.Memo.FromString(st.memo) if st.memo else None,
        search_attributes=search_attributes_proto(st.search_attributes),
    )
    if not st.is_open:
        info.close_time.CopyFrom(ts(st.close_ns))
        info.close_status = st.close_status  # type: ignore[assignment]
    if st.parent is not None:
        info.parent_execution_info.CopyFrom(parent_execution_info(st.parent))
    return info


def describe_response(st: MutableState) -> pb.DescribeWorkflowExecutionResponse:
    resp = pb.DescribeWorkflowExecutionResponse(
        execution_configuration=workflow_pb2.WorkflowExecutionConfiguration(
            task_list=tasklist_pb2.TaskList(name=st.task_list),
            execution_start_to_close_timeout=dur(st.execution_timeout_s),
            task_start_to_close_timeout=dur(st.task_timeout_s),
        ),
        workflow_execution_info=execution_info(st),
    )
    if not st.is_open:
        return resp
    for a in st.activities.values():
        if a.cancel_requested:
            state = workflow_pb2.PENDING_ACTIVITY_STATE_CANCEL_REQUESTED
        elif a.is_started:
            state = workflow_pb2.PENDING_ACTIVITY_STATE_STARTED
        else:
            state = workflow_pb2.PENDING_ACTIVITY_STATE_SCHEDULED
        p = workflow_pb2.PendingActivityInfo(
            activity_id=a.activity_id,
            activity_type=common_pb2.ActivityType(name=a.activity_type),
            state=state,
            heartbeat_details=payload(a.heartbeat_details),
            attempt=a.attempt,
            maximum_attempts=a.retry.maximum_attempts if a.retry else 0,
            scheduled_time=ts(a.scheduled_ns),
            last_worker_identity=a.last_worker_identity,
            started_worker_identity=a.identity,
            schedule_id=a.schedule_id,
        )
        if a.last_heartbeat_ns:
            p.last_heartbeat_time.CopyFrom(ts(a.last_heartbeat_ns))
        if a.started_ns:
            p.last_started_time.CopyFrom(ts(a.started_ns))
        if a.expiration_ns:
            p.expiration_time.CopyFrom(ts(a.expiration_ns))
        failure = last_failure(a)
        if failure is not None:
            p.last_failure.CopyFrom(failure)
        resp.pending_activities.append(p)
    for c in st.children.values():
        resp.pending_children.append(
            workflow_pb2.PendingChildExecutionInfo(
                workflow_execution=common_pb2.WorkflowExecution(
                    workflow_id=c.workflow_id, run_id=c.run_id
                ),
                workflow_type_name=c.workflow_type,
                initiated_id=c.initiated_id,
                parent_close_policy=c.parent_close_policy,  # type: ignore[arg-type]
                domain=c.domain_name,
            )
        )
    d = st.decision
    if d is not None:
        started = d.started_id != EMPTY_EVENT_ID
        pd = workflow_pb2.PendingDecisionInfo(
            state=workflow_pb2.PENDING_DECISION_STATE_STARTED
            if started
            else workflow_pb2.PENDING_DECISION_STATE_SCHEDULED,
            scheduled_time=ts(d.scheduled_ns),
            attempt=d.attempt,
            original_scheduled_time=ts(d.original_scheduled_ns),
            schedule_id=d.schedule_id,
        )
        if started:
            pd.started_time.CopyFrom(ts(d.started_ns))
        resp.pending_decision.CopyFrom(pd)
    return resp
