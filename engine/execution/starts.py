"""Creating runs (start, signal-with-start, child, continue-as-new, retry, cron) and closing
them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from croniter import croniter
from google.protobuf.message import Message

from engine.execution.mutation import RunMutation
from engine.execution.protos import (
    MAX_DURATION_SECONDS,
    NS,
    after_ns,
    dur,
    parent_execution_info,
    payload,
    retry_delay_s,
    retry_from_proto,
    retry_to_proto,
    secs,
    ts,
    ts_ns,
)
from engine.model.state import MutableState, ParentInfo, RetryPolicyState
from engine.model.tasks import TimerKind, TransferKind

CLOSE_COMPLETED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED
CLOSE_FAILED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED
CLOSE_CANCELED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED
CLOSE_TERMINATED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED
CLOSE_CONTINUED_AS_NEW = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CONTINUED_AS_NEW
CLOSE_TIMED_OUT = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TIMED_OUT
# Cadence's IdentityHistoryService: the identity of events the server writes on its own.
HISTORY_SERVICE_IDENTITY = "history-service"


@dataclass
class StartParams:
    domain_id: str
    domain_name: str
    workflow_id: str
    workflow_type: str
    task_list: str
    execution_timeout_s: int
    task_timeout_s: int
    request_id: str
    input: bytes | None = None
    identity: str = ""
    retry: RetryPolicyState | None = None
    cron_schedule: str = ""
    cron_overlap: int = 0
    memo: bytes = b""
    search_attributes: dict[str, bytes] = field(default_factory=dict)
    header: bytes = b""
    first_backoff_s: int = 0
    parent: ParentInfo | None = None
    attempt: int = 0
    expiration_ns: int = 0
    continued_run_id: str = ""
    first_execution_run_id: str = ""
    initiator: int = 0
    continued_failure: common_pb2.Failure | None = None
    last_completion_result: bytes | None = None
    # Extra first-batch events (signal-with-start puts its signal here).
    signal: tuple[str, bytes | None, str, str] | None = None


class RunCreator(Protocol):
    def create_run(self, params: StartParams, run_id: str) -> RunMutation:
        """Create a run in this shard and make it the current run of its workflow id."""
        ...


def cron_backoff_s(cron_schedule: str, now_ns: int) -> int:
    """Seconds from now to the schedule's next fire time, rounded up (at least 1)."""
    base = datetime.fromtimestamp(now_ns / NS, tz=UTC)
    nxt: datetime = croniter(cron_schedule, base).get_next(datetime)
    return max(1, math.ceil(nxt.timestamp() - now_ns / NS))


def new_run(
    params: StartParams, run_id: str, now_ns: int, next_task_id: Callable[[], int]
) -> RunMutation:
    """A new run's mutable state and first batch: Started [, Signaled], DecisionTaskScheduled."""
    exec_ns = after_ns(now_ns, params.first_backoff_s)
    state = MutableState(
        domain_id=params.domain_id,
        domain_name=params.domain_name,
        workflow_id=params.workflow_id,
        run_id=run_id,
        first_execution_run_id=params.first_execution_run_id or run_id,
        workflow_type=params.workflow_type,
        task_list=params.task_list,
        execution_timeout_s=params.execution_timeout_s,
        task_timeout_s=params.task_timeout_s,
        create_request_id=params.request_id,
        start_ns=now_ns,
        execution_ns=exec_ns,
        input=params.input,
        header=params.header,
        memo=params.memo,
        search_attributes=dict(params.search_attributes),
        parent=params.parent,
        attempt=params.attempt,
        retry=params.retry,
        expiration_ns=params.expiration_ns,
        cron_schedule=params.cron_schedule,
        cron_overlap=params.cron_overlap,
        last_completion_result=params.last_completion_result,
        awaiting_backoff=params.first_backoff_s > 0,
    )
    m = RunMutation(state, now_ns, next_task_id)
    attrs = history_pb2.WorkflowExecutionStartedEventAttributes(
        workflow_type=common_pb2.WorkflowType(name=params.workflow_type),
        task_list=tasklist_pb2.TaskList(name=params.task_list),
        input=payload(params.input),
        execution_start_to_close_timeout=dur(params.execution_timeout_s),
        task_start_to_close_timeout=dur(params.task_timeout_s),
        continued_execution_run_id=params.continued_run_id,
        initiator=params.initiator,  # type: ignore[arg-type]  # proto enum is an int
        continued_failure=params.continued_failure,
        last_completion_result=payload(params.last_completion_result),
        original_execution_run_id=run_id,
        identity=params.identity,
        first_execution_run_id=state.first_execution_run_id,
        attempt=params.attempt,
        cron_schedule=params.cron_schedule,
        first_decision_task_backoff=dur(params.first_backoff_s),
        memo=common_pb2.Memo.FromString(params.memo) if params.memo else None,
        search_attributes=search_attributes_proto(params.search_attributes),
        header=common_pb2.Header.FromString(params.header) if params.header else None,
        request_id=params.request_id,
        cron_overlap_policy=params.cron_overlap,  # type: ignore[arg-type]
    )
    if params.retry is not None:
        attrs.retry_policy.CopyFrom(retry_to_proto(params.retry))
        if params.expiration_ns:
            attrs.expiration_time.CopyFrom(ts(params.expiration_ns))
    if params.parent is not None:
        attrs.parent_execution_info.CopyFrom(parent_execution_info(params.parent))
    m.add_event("workflow_execution_started_event_attributes", attrs)
    if params.signal is not None:
        name, data, identity, request_id = params.signal
        m.add_event(
            "workflow_execution_signaled_event_attributes",
            history_pb2.WorkflowExecutionSignaledEventAttributes(
                signal_name=name, input=payload(data), identity=identity, request_id=request_id
            ),
        )
        state.signal_count += 1
        if request_id:
            state.signal_request_ids.append(request_id)
    if params.first_backoff_s > 0:
        m.timer_task(TimerKind.WORKFLOW_BACKOFF, params.first_backoff_s)
    else:
        m.schedule_decision()
    m.timer_task(TimerKind.WORKFLOW_TIMEOUT, params.first_backoff_s + params.execution_timeout_s)
    m.visibility_changed = True
    return m


def search_attributes_proto(values: dict[str, bytes]) -> common_pb2.SearchAttributes | None:
    if not values:
        return None
    return common_pb2.SearchAttributes(
        indexed_fields={k: common_pb2.Payload(data=v) for k, v in values.items()}
    )


def close_run(m: RunMutation, status: int, field: str, attrs: Message) -> history_pb2.HistoryEvent:
    """Append the close event and close the run: no decision, tasks go stale, parent told."""
    st = m.state
    _force_close_decision(m)
    event = m.add_event(field, attrs)
    st.close_status = status
    st.close_ns = m.now_ns
    st.close_event_id = event.event_id
    st.close_event = event.SerializeToString()
    st.decision = None
    st.decision_backoff_ns = 0
    st.buffered = []
    m.transfer_task(TransferKind.CLOSE_EXECUTION)
    m.visibility_changed = True
    return event


def _force_close_decision(m: RunMutation) -> None:
    """A run closed from outside (terminate, timeout) while a decision is in flight: as in
    Cadence's FailDecision, fail the decision first (FORCE_CLOSE_DECISION, written for attempt 0
    only) and flush the buffered events. Nothing foreign lands between DecisionTaskStarted and
    its end, and events already accepted (signals, activity results) are not lost."""
    d = m.state.decision
    if d is None or not m.decision_in_flight():
        return
    if d.attempt == 0:
        m.add_event(
            "decision_task_failed_event_attributes",
            history_pb2.DecisionTaskFailedEventAttributes(
                scheduled_event_id=d.schedule_id,
                started_event_id=d.started_id,
                cause=workflow_pb2.DECISION_TASK_FAILED_CAUSE_FORCE_CLOSE_DECISION,
                identity=HISTORY_SERVICE_IDENTITY,
            ),
        )
    m.state.decision = None
    m.flush_buffered()


def params_for_next_run(st: MutableState) -> StartParams:
    """The start parameters a retry or cron run inherits from `st`."""
    return StartParams(
        domain_id=st.domain_id,
        domain_name=st.domain_name,
        workflow_id=st.workflow_id,
        workflow_type=st.workflow_type,
        task_list=st.task_list,
        execution_timeout_s=st.execution_timeout_s,
        task_timeout_s=st.task_timeout_s,
        request_id=st.create_request_id,
        input=st.input,
        retry=st.retry,
        cron_schedule=st.cron_schedule,
        cron_overlap=st.cron_overlap,
        memo=st.memo,
        search_attributes=dict(st.search_attributes),
        header=st.header,
        parent=st.parent,
        attempt=0,
        expiration_ns=0,
        continued_run_id=st.run_id,
        first_execution_run_id=st.first_execution_run_id,
    )


def continue_as_new(
    runs: RunCreator,
    m: RunMutation,
    params: StartParams,
    *,
    new_run_id: str,
    initiator: int,
    dtc_event_id: int = 0,
    failure: common_pb2.Failure | None = None,
) -> None:
    """Close `m` with ContinuedAsNew and create the next run (same shard: same workflow id)."""
    st = m.state
    attrs = history_pb2.WorkflowExecutionContinuedAsNewEventAttributes(
        new_execution_run_id=new_run_id,
        workflow_type=common_pb2.WorkflowType(name=params.workflow_type),
        task_list=tasklist_pb2.TaskList(name=params.task_list),
        input=payload(params.input),
        execution_start_to_close_timeout=dur(params.execution_timeout_s),
        task_start_to_close_timeout=dur(params.task_timeout_s),
        decision_task_completed_event_id=dtc_event_id,
        backoff_start_interval=dur(params.first_backoff_s),
        initiator=initiator,  # type: ignore[arg-type]
        failure=failure,
        last_completion_result=payload(params.last_completion_result),
        header=common_pb2.Header.FromString(params.header) if params.header else None,
        memo=common_pb2.Memo.FromString(params.memo) if params.memo else None,
        search_attributes=search_attributes_proto(params.search_attributes),
    )
    close_run(
        m, CLOSE_CONTINUED_AS_NEW, "workflow_execution_continued_as_new_event_attributes", attrs
    )
    st.continued_run_id = new_run_id
    params = replace(
        params,
        continued_run_id=st.run_id,
        first_execution_run_id=st.first_execution_run_id,
        parent=st.parent,
        initiator=initiator,
        continued_failure=failure,
    )
    runs.create_run(params, new_run_id)


def retry_or_cron_after_failure(
    runs: RunCreator,
    m: RunMutation,
    reason: str,
    failure: common_pb2.Failure | None,
    new_run_id: str,
    dtc_event_id: int = 0,
) -> bool:
    """On failure or timeout: continue as new by retry policy, else by cron. False: neither."""
    st = m.state
    if st.retry is not None:
        delay = retry_delay_s(st.retry, st.attempt, reason, m.now_ns, st.expiration_ns)
        if delay is not None:
            params = params_for_next_run(st)
            params.attempt = st.attempt + 1
            params.expiration_ns = st.expiration_ns
            params.first_backoff_s = delay
            params.last_completion_result = st.last_completion_result
            continue_as_new(
                runs,
                m,
                params,
                new_run_id=new_run_id,
                initiator=workflow_pb2.CONTINUE_AS_NEW_INITIATOR_RETRY_POLICY,
                dtc_event_id=dtc_event_id,
                failure=failure,
            )
            return True
    if st.cron_schedule:
        params = params_for_next_run(st)
        params.first_backoff_s = cron_backoff_s(st.cron_schedule, m.now_ns)
        params.last_completion_result = st.last_completion_result
        continue_as_new(
            runs,
            m,
            params,
            new_run_id=new_run_id,
            initiator=workflow_pb2.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE,
            dtc_event_id=dtc_event_id,
            failure=failure,
        )
        return True
    return False


def params_from_request(
    req: service_workflow_pb2.StartWorkflowExecutionRequest
    | history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes,
    domain_id: str,
    domain_name: str,
    now_ns: int,
    *,
    request_id: str | None = None,
) -> StartParams:
    """StartParams from a (validated) StartWorkflowExecutionRequest or the initiated attributes
    of a child; computes the first decision backoff of delay_start, first_run_at and cron."""

    if request_id is None:
        # Only a client's start carries its request id; a child's is given by its parent.
        assert isinstance(req, service_workflow_pb2.StartWorkflowExecutionRequest)
        request_id = req.request_id
    exec_s = secs(req.execution_start_to_close_timeout)
    task_s = min(secs(req.task_start_to_close_timeout) or 10, exec_s, 240)
    backoff = secs(req.delay_start) if req.HasField("delay_start") else 0
    if req.HasField("jitter_start") and secs(req.jitter_start) > 0:
        backoff += random.randint(0, secs(req.jitter_start))
    if req.HasField("first_run_at"):
        at = ts_ns(req.first_run_at)
        if at > now_ns:
            backoff = max(backoff, min(math.ceil((at - now_ns) / NS), MAX_DURATION_SECONDS))
    elif req.cron_schedule:
        backoff = max(backoff, cron_backoff_s(req.cron_schedule, now_ns))
    retry = retry_from_proto(req.retry_policy) if req.HasField("retry_policy") else None
    expiration = 0
    if retry is not None and retry.expiration_s > 0:
        expiration = after_ns(now_ns, retry.expiration_s + backoff)
    return StartParams(
        domain_id=domain_id,
        domain_name=domain_name,
        workflow_id=req.workflow_id,
        workflow_type=req.workflow_type.name,
        task_list=req.task_list.name,
        execution_timeout_s=exec_s,
        task_timeout_s=task_s,
        request_id=request_id,
        input=req.input.data if req.HasField("input") else None,
        identity=getattr(req, "identity", ""),
        retry=retry,
        cron_schedule=req.cron_schedule,
        cron_overlap=req.cron_overlap_policy,
        memo=req.memo.SerializeToString() if req.HasField("memo") else b"",
        search_attributes={k: v.data for k, v in req.search_attributes.indexed_fields.items()},
        header=req.header.SerializeToString() if req.HasField("header") else b"",
        first_backoff_s=backoff,
        expiration_ns=expiration,
    )
