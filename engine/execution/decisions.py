"""Decision tasks: start, complete (applying each decision), fail, and time out.

RespondDecisionTaskCompleted is all-or-nothing: an invalid decision fails the whole task with
DecisionTaskFailed(cause) and none of the other decisions' events are kept.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_worker_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from google.protobuf.message import Message

from engine.errors import EntityNotExistsError, quote
from engine.execution import activities, decision_backoff
from engine.execution.checks import (
    negative_duration_problem,
    search_attributes_problem,
    workflow_options_problem,
)
from engine.execution.mutation import RunMutation
from engine.execution.protos import (
    after_ns,
    dur,
    payload,
    retry_from_proto,
    retry_policy_problem,
    secs,
    ts,
)
from engine.execution.starts import (
    CLOSE_CANCELED,
    CLOSE_COMPLETED,
    CLOSE_FAILED,
    CLOSE_TIMED_OUT,
    RunCreator,
    StartParams,
    close_run,
    continue_as_new,
    cron_backoff_s,
    params_for_next_run,
    retry_or_cron_after_failure,
)
from engine.model.state import (
    EMPTY_EVENT_ID,
    ActivityInfo,
    ChildInfo,
    DecisionInfo,
    ExternalRequestInfo,
    TimerInfo,
)
from engine.model.tasks import TimerKind, TimerTask, TransferKind

MAX_BLOB = 2 * 1024 * 1024
# ActivityMaxScheduleToStartTimeoutForRetry (dynamic-config default).
MAX_SCHEDULE_TO_START_FOR_RETRY_S = 30 * 60


class DecisionFailure(Exception):
    def __init__(self, cause: int, message: str) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message


@dataclass
class DecisionEnv:
    """What decision handling needs from outside the run."""

    runs: RunCreator
    new_run_id: Callable[[], str]
    allowed_search_attributes: frozenset[str]
    # Domains named by the task's decisions that do not exist (looked up by the caller).
    missing_domains: frozenset[str] = frozenset()


def _fail(cause: int, message: str) -> DecisionFailure:
    return DecisionFailure(cause, message)


def record_started(
    m: RunMutation, schedule_id: int, attempt: int, request_id: str, identity: str
) -> DecisionInfo:
    st = m.state
    d = st.decision
    if (
        not st.is_open
        or d is None
        or d.schedule_id != schedule_id
        or d.attempt != attempt
        or st.decision_backoff_ns != 0  # held back: a dispatch of it can only be stale
    ):
        raise EntityNotExistsError("Decision task not found.")
    if d.started_id != EMPTY_EVENT_ID:
        if d.request_id == request_id:
            return d
        raise EntityNotExistsError("Decision task already started.")
    d.request_id = request_id
    d.identity = identity
    d.started_ns = m.now_ns
    if attempt > 1:
        d.timeout_s = _retry_timeout_s(attempt)
    if attempt == 0:
        event = m.add_event(
            "decision_task_started_event_attributes",
            history_pb2.DecisionTaskStartedEventAttributes(
                scheduled_event_id=schedule_id, identity=identity, request_id=request_id
            ),
        )
        d.started_id = event.event_id
    else:
        d.started_id = schedule_id + 1
    m.timer_task(
        TimerKind.DECISION_TIMEOUT,
        d.timeout_s,
        event_id=schedule_id,
        attempt=attempt,
        timeout_type=workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE,
    )
    return d


def _retry_timeout_s(attempt: int) -> int:
    """A decision failing again and again gets more time (Cadence's getNextDecisionTimeout):
    from attempt 2 on, 1 min x 2^(attempt-2), at most 5 min, less up to 20 % jitter."""
    interval = min(60.0 * 2 ** min(attempt - 2, 16), 300.0)
    jitter = max(1, int(0.2 * interval))
    return int(interval * 0.8 + random.randrange(jitter))


def _in_flight(m: RunMutation, schedule_id: int, attempt: int) -> DecisionInfo | None:
    """The run's started decision if it is the one named by (schedule id, attempt)."""
    st = m.state
    d = st.decision
    if (
        not st.is_open
        or d is None
        or d.schedule_id != schedule_id
        or d.attempt != attempt
        or d.started_id == EMPTY_EVENT_ID
    ):
        return None
    return d


def _started_decision(m: RunMutation, schedule_id: int, attempt: int) -> DecisionInfo:
    d = _in_flight(m, schedule_id, attempt)
    if d is None:
        raise EntityNotExistsError("Decision task not found.")
    return d


def _retry_decision(
    m: RunMutation, d: DecisionInfo, cause: str, details: bytes, identity: str
) -> None:
    """After a failed or timed-out decision: a normal decision if buffered events wake the
    decider, else a transient retry with the next attempt; after repeated failures its
    dispatch waits for a backoff (engine/execution/decision_backoff.py)."""
    m.state.decision = None
    decision_backoff.record_failure(m, d, cause, details, identity)
    if m.flush_buffered():
        m.schedule_decision(0)
    else:
        m.schedule_decision(d.attempt + 1)


def _persist_transient(m: RunMutation, d: DecisionInfo) -> None:
    """A transient decision's Scheduled/Started events become real when it finishes, with
    the times the poll showed them at (Cadence keeps the scheduled and started timestamps)."""
    if d.attempt == 0:
        return
    scheduled = m.add_event(
        "decision_task_scheduled_event_attributes",
        history_pb2.DecisionTaskScheduledEventAttributes(
            task_list=tasklist_pb2.TaskList(name=d.task_list),
            start_to_close_timeout=dur(d.timeout_s),
            attempt=d.attempt,
        ),
    )
    scheduled.event_time.CopyFrom(ts(d.scheduled_ns))
    started = m.add_event(
        "decision_task_started_event_attributes",
        history_pb2.DecisionTaskStartedEventAttributes(
            scheduled_event_id=d.schedule_id, identity=d.identity, request_id=d.request_id
        ),
    )
    started.event_time.CopyFrom(ts(d.started_ns))


def _fail_decision(
    m: RunMutation, d: DecisionInfo, cause: int, details: bytes, identity: str, checksum: str = ""
) -> None:
    """DecisionTaskFailed (written for attempt 0 only), then a transient retry at once."""
    if d.attempt == 0:
        m.add_event(
            "decision_task_failed_event_attributes",
            history_pb2.DecisionTaskFailedEventAttributes(
                scheduled_event_id=d.schedule_id,
                started_event_id=d.started_id,
                cause=cause,  # type: ignore[arg-type]
                failure=common_pb2.Failure(reason="", details=details),
                identity=identity,
                binary_checksum=checksum,
            ),
        )
    _retry_decision(m, d, decision_backoff.cause_name(cause), details, identity)


def respond_failed(
    m: RunMutation,
    schedule_id: int,
    attempt: int,
    request: service_worker_pb2.RespondDecisionTaskFailedRequest,
) -> None:
    d = _started_decision(m, schedule_id, attempt)
    _fail_decision(
        m, d, request.cause, request.details.data, request.identity, request.binary_checksum
    )


def on_timeout_timer(m: RunMutation, task: TimerTask) -> None:
    d = _in_flight(m, task.event_id, task.attempt)
    if d is None:
        return
    if d.attempt == 0:
        m.add_event(
            "decision_task_timed_out_event_attributes",
            history_pb2.DecisionTaskTimedOutEventAttributes(
                scheduled_event_id=d.schedule_id,
                started_event_id=d.started_id,
                timeout_type=workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE,
                cause=workflow_pb2.DECISION_TASK_TIMED_OUT_CAUSE_TIMEOUT,
            ),
        )
    details = f"no response within the start-to-close timeout of {d.timeout_s} s"
    _retry_decision(m, d, decision_backoff.TIMEOUT_CAUSE, details.encode(), d.identity)


def respond_completed(
    m: RunMutation,
    env: DecisionEnv,
    schedule_id: int,
    attempt: int,
    request: service_worker_pb2.RespondDecisionTaskCompletedRequest,
) -> None:
    d = _started_decision(m, schedule_id, attempt)
    st = m.state
    had_buffered = bool(st.buffered)
    m.checkpoint()
    try:
        completed = _record_completed(m, d, request)
        applier = _Applier(m, env, completed.event_id, had_buffered, request.identity)
        for i, decision in enumerate(request.decisions):
            if not m.state.is_open and _is_close(decision):
                continue  # a second close decision is ignored
            if not m.state.is_open or (
                _is_close(decision) and not all(map(_is_close, request.decisions[i + 1 :]))
            ):
                # A close decision may create the next run (continue-as-new, retry, cron),
                # which the rollback below cannot take back: a list that goes on after its
                # close decision is refused before the close is applied.
                raise _fail(
                    workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
                    "decision after the workflow closed",
                )
            applier.apply(decision)
    except DecisionFailure as failure:
        m.rollback()
        _fail_decision(
            m, d, failure.cause, failure.message.encode(), request.identity, request.binary_checksum
        )
        return
    except BlobTooLarge as too_large:
        m.rollback()
        _fail_workflow_for_blob(m, d, request, str(too_large))
        return
    st = m.state
    if not st.is_open:
        return
    woke = m.flush_buffered()
    if woke or request.force_create_new_decision_task or applier.needs_decision:
        m.schedule_decision()


def _record_completed(
    m: RunMutation,
    d: DecisionInfo,
    request: service_worker_pb2.RespondDecisionTaskCompletedRequest,
) -> history_pb2.HistoryEvent:
    """Write DecisionTaskCompleted (after a transient decision's own events) and end the
    decision in mutable state."""
    _persist_transient(m, d)
    completed = m.add_event(
        "decision_task_completed_event_attributes",
        history_pb2.DecisionTaskCompletedEventAttributes(
            scheduled_event_id=d.schedule_id,
            started_event_id=d.started_id,
            identity=request.identity,
            binary_checksum=request.binary_checksum,
            execution_context=request.execution_context,
        ),
    )
    st = m.state
    st.decision = None
    st.last_processed_event = d.started_id
    st.completed_decisions += 1
    decision_backoff.reset(m)
    return completed


def _fail_workflow_for_blob(
    m: RunMutation,
    d: DecisionInfo,
    request: service_worker_pb2.RespondDecisionTaskCompletedRequest,
    message: str,
) -> None:
    """DecisionTaskCompleted, then WorkflowExecutionFailed(DECISION_BLOB_SIZE_EXCEEDS_LIMIT);
    none of the task's decisions are applied, and the failure is never retried."""
    completed = _record_completed(m, d, request)
    close_run(
        m,
        CLOSE_FAILED,
        "workflow_execution_failed_event_attributes",
        history_pb2.WorkflowExecutionFailedEventAttributes(
            failure=common_pb2.Failure(reason=BLOB_SIZE_REASON, details=message.encode()),
            decision_task_completed_event_id=completed.event_id,
        ),
    )


def _is_close(decision: decision_pb2.Decision) -> bool:
    return decision.WhichOneof("attributes") in (
        "complete_workflow_execution_decision_attributes",
        "fail_workflow_execution_decision_attributes",
        "cancel_workflow_execution_decision_attributes",
        "continue_as_new_workflow_execution_decision_attributes",
    )


def _check_durations(attrs: Message, cause: int) -> None:
    """Fail the decision if a Duration of `attrs` is negative (the frontend lets them
    through so that the decision fails with its own cause, as Cadence does)."""
    problem = negative_duration_problem(attrs)
    if problem:
        raise _fail(cause, problem)


class BlobTooLarge(Exception):
    """A decision carries a blob over the limit: Cadence fails the workflow, not the task."""


# The failure reason Cadence records when a decision's blob is over the limit; it is never
# retried (a retry would only produce the same blob again).
BLOB_SIZE_REASON = "DECISION_BLOB_SIZE_EXCEEDS_LIMIT"


def _check_blob(data: bytes, cause: int, what: str) -> None:
    if len(data) > MAX_BLOB:
        if cause == workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_SIGNAL_INPUT_SIZE:
            raise _fail(cause, f"{what} exceeds size limit")
        raise BlobTooLarge(f"{what} exceeds size limit")


class _Applier:
    """Applies one decision list in order on the run; raises DecisionFailure to fail it."""

    def __init__(
        self, m: RunMutation, env: DecisionEnv, dtc: int, had_buffered: bool, identity: str = ""
    ) -> None:
        self.m = m
        self.env = env
        self.dtc = dtc
        self.had_buffered = had_buffered
        self.identity = identity
        self.needs_decision = False

    def apply(self, decision: decision_pb2.Decision) -> None:
        field = decision.WhichOneof("attributes")
        if field is None:
            raise _fail(
                workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
                "decision has no attributes",
            )
        getattr(self, "_" + field.removesuffix("_decision_attributes"))(getattr(decision, field))

    # -- activities ----------------------------------------------------------------------

    def _schedule_activity_task(
        self, a: decision_pb2.ScheduleActivityTaskDecisionAttributes
    ) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES
        st = self.m.state
        if not a.activity_id:
            raise _fail(bad, "ActivityId is not set on decision.")
        if not a.activity_type.name:
            raise _fail(bad, "ActivityType is not set on decision.")
        if a.domain in self.env.missing_domains:
            raise _fail(bad, f"Domain {quote(a.domain)} does not exist.")
        _check_durations(a, bad)
        if st.activity_by_id(a.activity_id) is not None:
            raise _fail(
                workflow_pb2.DECISION_TASK_FAILED_CAUSE_SCHEDULE_ACTIVITY_DUPLICATE_ID,
                f"Activity with ID {a.activity_id} already pending.",
            )
        _check_blob(a.input.data, bad, "ActivityTaskInput")
        timeouts = [
            secs(a.schedule_to_close_timeout),
            secs(a.schedule_to_start_timeout),
            secs(a.start_to_close_timeout),
            secs(a.heartbeat_timeout),
        ]
        cap = st.execution_timeout_s
        s2c, s2s, st2c, hb = (min(t, cap) for t in timeouts)
        if s2c > 0:
            s2s = min(s2s, s2c) if s2s > 0 else s2c
            st2c = min(st2c, s2c) if st2c > 0 else s2c
        elif s2s > 0 and st2c > 0:
            s2c = min(s2s + st2c, cap)
        else:
            raise _fail(bad, "A valid ScheduleToCloseTimeout is not set on decision.")
        retry = None
        if a.HasField("retry_policy"):
            problem = retry_policy_problem(a.retry_policy)
            if problem:
                raise _fail(bad, problem)
            retry = retry_from_proto(a.retry_policy)
            # Retries happen inside the activity's timeouts: Cadence stretches them to the
            # expiration (or the workflow timeout), schedule-to-start at most to 30 min and
            # only when a schedule-to-start timeout may be retried.
            expiration = retry.expiration_s if 0 < retry.expiration_s <= cap else cap
            if "cadenceInternal:Timeout SCHEDULE_TO_START" not in retry.non_retryable_reasons:
                s2s = max(s2s, min(expiration, MAX_SCHEDULE_TO_START_FOR_RETRY_S))
            s2c = max(s2c, expiration)
        event = self.m.add_event(
            "activity_task_scheduled_event_attributes",
            history_pb2.ActivityTaskScheduledEventAttributes(
                activity_id=a.activity_id,
                activity_type=a.activity_type,
                domain=a.domain,
                task_list=tasklist_pb2.TaskList(name=a.task_list.name or st.task_list),
                input=a.input if a.HasField("input") else None,
                schedule_to_close_timeout=dur(s2c),
                schedule_to_start_timeout=dur(s2s),
                start_to_close_timeout=dur(st2c),
                heartbeat_timeout=dur(hb),
                decision_task_completed_event_id=self.dtc,
                retry_policy=a.retry_policy if a.HasField("retry_policy") else None,
                header=a.header if a.HasField("header") else None,
            ),
        )
        now = self.m.now_ns
        info = ActivityInfo(
            schedule_id=event.event_id,
            activity_id=a.activity_id,
            activity_type=a.activity_type.name,
            task_list=a.task_list.name or st.task_list,
            input=a.input.data if a.HasField("input") else None,
            header=a.header.SerializeToString() if a.HasField("header") else b"",
            scheduled_ns=now,
            first_scheduled_ns=now,
            schedule_to_start_s=s2s,
            schedule_to_close_s=s2c,
            start_to_close_s=st2c,
            heartbeat_s=hb,
            retry=retry,
            expiration_ns=after_ns(now, retry.expiration_s) if retry and retry.expiration_s else 0,
        )
        st.activities[info.schedule_id] = info
        activities.arm_schedule_timers(self.m, info)

    def _request_cancel_activity_task(
        self, a: decision_pb2.RequestCancelActivityTaskDecisionAttributes
    ) -> None:
        st = self.m.state
        info = st.activity_by_id(a.activity_id) if a.activity_id else None
        if info is None:
            self.m.add_event(
                "request_cancel_activity_task_failed_event_attributes",
                history_pb2.RequestCancelActivityTaskFailedEventAttributes(
                    activity_id=a.activity_id,
                    cause="ACTIVITY_ID_UNKNOWN",
                    decision_task_completed_event_id=self.dtc,
                ),
            )
            return
        event = self.m.add_event(
            "activity_task_cancel_requested_event_attributes",
            history_pb2.ActivityTaskCancelRequestedEventAttributes(
                activity_id=a.activity_id, decision_task_completed_event_id=self.dtc
            ),
        )
        info.cancel_requested = True
        info.cancel_request_event_id = event.event_id
        if not info.is_started:
            del st.activities[info.schedule_id]
            self.m.add_event(
                "activity_task_canceled_event_attributes",
                history_pb2.ActivityTaskCanceledEventAttributes(
                    details=common_pb2.Payload(data=b"ACTIVITY_ID_NOT_STARTED"),
                    latest_cancel_requested_event_id=event.event_id,
                    scheduled_event_id=info.schedule_id,
                    started_event_id=EMPTY_EVENT_ID,
                    identity=self.identity,
                ),
            )
            self.needs_decision = True

    # -- timers --------------------------------------------------------------------------

    def _start_timer(self, a: decision_pb2.StartTimerDecisionAttributes) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_START_TIMER_ATTRIBUTES
        st = self.m.state
        if not a.timer_id:
            raise _fail(bad, "TimerId is not set on decision.")
        _check_durations(a, bad)
        fire_s = secs(a.start_to_fire_timeout)
        if fire_s <= 0:
            raise _fail(bad, "A valid StartToFireTimeout is not set on decision.")
        if a.timer_id in st.timers:
            raise _fail(
                workflow_pb2.DECISION_TASK_FAILED_CAUSE_START_TIMER_DUPLICATE_ID,
                f"Timer with ID {a.timer_id} already started.",
            )
        event = self.m.add_event(
            "timer_started_event_attributes",
            history_pb2.TimerStartedEventAttributes(
                timer_id=a.timer_id,
                start_to_fire_timeout=dur(fire_s),
                decision_task_completed_event_id=self.dtc,
            ),
        )
        st.timers[a.timer_id] = TimerInfo(
            a.timer_id, event.event_id, after_ns(self.m.now_ns, fire_s)
        )
        self.m.timer_task(
            TimerKind.USER_TIMER, fire_s, timer_id=a.timer_id, event_id=event.event_id
        )

    def _cancel_timer(self, a: decision_pb2.CancelTimerDecisionAttributes) -> None:
        st = self.m.state
        info = st.timers.pop(a.timer_id, None)
        if info is None:
            self.m.add_event(
                "cancel_timer_failed_event_attributes",
                history_pb2.CancelTimerFailedEventAttributes(
                    timer_id=a.timer_id,
                    cause="TIMER_ID_UNKNOWN",
                    decision_task_completed_event_id=self.dtc,
                    identity=self.identity,
                ),
            )
            return
        self.m.add_event(
            "timer_canceled_event_attributes",
            history_pb2.TimerCanceledEventAttributes(
                timer_id=a.timer_id,
                started_event_id=info.started_id,
                decision_task_completed_event_id=self.dtc,
                identity=self.identity,
            ),
        )

    # -- closing -------------------------------------------------------------------------

    def _check_unhandled(self, what: str = "complete workflow") -> None:
        if self.had_buffered:
            raise _fail(
                workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
                f"cannot {what}, new pending decisions were scheduled while this decision was "
                "processing",
            )

    def _complete_workflow_execution(
        self, a: decision_pb2.CompleteWorkflowExecutionDecisionAttributes
    ) -> None:
        self._check_unhandled()
        _check_blob(
            a.result.data,
            workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_COMPLETE_WORKFLOW_EXECUTION_ATTRIBUTES,
            "CompleteWorkflowExecutionDecisionAttributes.Result",
        )
        st = self.m.state
        if st.cron_schedule:
            st.last_completion_result = a.result.data if a.HasField("result") else None
            params = params_for_next_run(st)
            params.first_backoff_s = cron_backoff_s(st.cron_schedule, self.m.now_ns)
            params.last_completion_result = st.last_completion_result
            continue_as_new(
                self.env.runs,
                self.m,
                params,
                new_run_id=self.env.new_run_id(),
                initiator=workflow_pb2.CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE,
                dtc_event_id=self.dtc,
            )
            return
        close_run(
            self.m,
            CLOSE_COMPLETED,
            "workflow_execution_completed_event_attributes",
            history_pb2.WorkflowExecutionCompletedEventAttributes(
                result=a.result if a.HasField("result") else None,
                decision_task_completed_event_id=self.dtc,
            ),
        )

    def _fail_workflow_execution(
        self, a: decision_pb2.FailWorkflowExecutionDecisionAttributes
    ) -> None:
        self._check_unhandled()
        st = self.m.state
        if st.cancel_requested:
            self._close_canceled(a.failure.details)
            return
        if retry_or_cron_after_failure(
            self.env.runs, self.m, a.failure.reason, a.failure, self.env.new_run_id(), self.dtc
        ):
            return
        close_run(
            self.m,
            CLOSE_FAILED,
            "workflow_execution_failed_event_attributes",
            history_pb2.WorkflowExecutionFailedEventAttributes(
                failure=a.failure, decision_task_completed_event_id=self.dtc
            ),
        )

    def _cancel_workflow_execution(
        self, a: decision_pb2.CancelWorkflowExecutionDecisionAttributes
    ) -> None:
        self._check_unhandled("process cancellation")
        self._close_canceled(a.details.data if a.HasField("details") else None)

    def _close_canceled(self, details: bytes | None) -> None:
        close_run(
            self.m,
            CLOSE_CANCELED,
            "workflow_execution_canceled_event_attributes",
            history_pb2.WorkflowExecutionCanceledEventAttributes(
                decision_task_completed_event_id=self.dtc, details=payload(details)
            ),
        )

    def _continue_as_new_workflow_execution(
        self, a: decision_pb2.ContinueAsNewWorkflowExecutionDecisionAttributes
    ) -> None:
        self._check_unhandled()
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_CONTINUE_AS_NEW_ATTRIBUTES
        st = self.m.state
        _check_blob(a.input.data, bad, "ContinueAsNew input")
        _check_durations(a, bad)
        problem = workflow_options_problem(a, self.env.allowed_search_attributes)
        if problem:
            raise _fail(bad, problem)
        exec_s = secs(a.execution_start_to_close_timeout) or st.execution_timeout_s
        task_s = secs(a.task_start_to_close_timeout) or st.task_timeout_s
        retry = retry_from_proto(a.retry_policy) if a.HasField("retry_policy") else st.retry
        params = StartParams(
            domain_id=st.domain_id,
            domain_name=st.domain_name,
            workflow_id=st.workflow_id,
            workflow_type=a.workflow_type.name or st.workflow_type,
            task_list=a.task_list.name or st.task_list,
            execution_timeout_s=exec_s,
            task_timeout_s=min(task_s, exec_s, 240),
            request_id=st.create_request_id,
            input=a.input.data if a.HasField("input") else None,
            retry=retry,
            cron_schedule=a.cron_schedule or st.cron_schedule,
            memo=a.memo.SerializeToString() if a.HasField("memo") else st.memo,
            search_attributes=(
                {k: v.data for k, v in a.search_attributes.indexed_fields.items()}
                if a.HasField("search_attributes")
                else dict(st.search_attributes)
            ),
            header=a.header.SerializeToString() if a.HasField("header") else st.header,
            first_backoff_s=secs(a.backoff_start_interval),
            last_completion_result=(
                a.last_completion_result.data if a.HasField("last_completion_result") else None
            ),
        )
        continue_as_new(
            self.env.runs,
            self.m,
            params,
            new_run_id=self.env.new_run_id(),
            initiator=workflow_pb2.CONTINUE_AS_NEW_INITIATOR_DECIDER,
            dtc_event_id=self.dtc,
        )

    # -- markers, search attributes -------------------------------------------------------

    def _record_marker(self, a: decision_pb2.RecordMarkerDecisionAttributes) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_RECORD_MARKER_ATTRIBUTES
        if not a.marker_name:
            raise _fail(bad, "MarkerName is not set on decision.")
        _check_blob(a.details.data, bad, "Marker details")
        self.m.add_event(
            "marker_recorded_event_attributes",
            history_pb2.MarkerRecordedEventAttributes(
                marker_name=a.marker_name,
                details=a.details if a.HasField("details") else None,
                decision_task_completed_event_id=self.dtc,
                header=a.header if a.HasField("header") else None,
            ),
        )

    def _upsert_workflow_search_attributes(
        self, a: decision_pb2.UpsertWorkflowSearchAttributesDecisionAttributes
    ) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES
        fields = a.search_attributes.indexed_fields
        if not fields:
            raise _fail(bad, "SearchAttributes is not set on decision.")
        for key, value in fields.items():
            _check_blob(value.data, bad, f"Search attribute {key}")
        problem = search_attributes_problem(fields, self.env.allowed_search_attributes)
        if problem:
            raise _fail(bad, problem)
        st = self.m.state
        for key, value in fields.items():
            st.search_attributes[key] = value.data
        self.m.add_event(
            "upsert_workflow_search_attributes_event_attributes",
            history_pb2.UpsertWorkflowSearchAttributesEventAttributes(
                decision_task_completed_event_id=self.dtc, search_attributes=a.search_attributes
            ),
        )
        self.m.visibility_changed = True

    # -- other workflows ----------------------------------------------------------------

    def _start_child_workflow_execution(
        self, a: decision_pb2.StartChildWorkflowExecutionDecisionAttributes
    ) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES
        st = self.m.state
        if not a.workflow_id:
            raise _fail(bad, "Required field WorkflowID is not set on decision.")
        if not a.workflow_type.name:
            raise _fail(bad, "Required field WorkflowType is not set on decision.")
        _check_blob(a.input.data, bad, "Child workflow input")
        _check_durations(a, bad)
        problem = workflow_options_problem(a, self.env.allowed_search_attributes)
        if problem:
            raise _fail(bad, problem)
        exec_s = secs(a.execution_start_to_close_timeout) or st.execution_timeout_s
        task_s = secs(a.task_start_to_close_timeout) or st.task_timeout_s
        if exec_s <= 0 or task_s <= 0:
            raise _fail(bad, "A valid timeout is not set on decision.")
        attrs = history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes(
            domain=a.domain or st.domain_name,
            workflow_id=a.workflow_id,
            workflow_type=a.workflow_type,
            task_list=tasklist_pb2.TaskList(name=a.task_list.name or st.task_list),
            input=a.input if a.HasField("input") else None,
            execution_start_to_close_timeout=dur(exec_s),
            task_start_to_close_timeout=dur(min(task_s, exec_s, 240)),
            parent_close_policy=a.parent_close_policy,
            control=a.control,
            decision_task_completed_event_id=self.dtc,
            workflow_id_reuse_policy=a.workflow_id_reuse_policy,
            retry_policy=a.retry_policy if a.HasField("retry_policy") else None,
            cron_schedule=a.cron_schedule,
            header=a.header if a.HasField("header") else None,
            memo=a.memo if a.HasField("memo") else None,
            search_attributes=a.search_attributes if a.HasField("search_attributes") else None,
            cron_overlap_policy=a.cron_overlap_policy,
        )
        event = self.m.add_event("start_child_workflow_execution_initiated_event_attributes", attrs)
        st.children[event.event_id] = ChildInfo(
            initiated_id=event.event_id,
            domain_name=attrs.domain,
            workflow_id=a.workflow_id,
            workflow_type=a.workflow_type.name,
            create_request_id=f"{st.run_id}:{event.event_id}",
            parent_close_policy=a.parent_close_policy or workflow_pb2.PARENT_CLOSE_POLICY_ABANDON,
            initiated=attrs.SerializeToString(),
        )
        self.m.transfer_task(TransferKind.START_CHILD, event_id=event.event_id)

    def _signal_external_workflow_execution(
        self, a: decision_pb2.SignalExternalWorkflowExecutionDecisionAttributes
    ) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_SIGNAL_WORKFLOW_EXECUTION_ATTRIBUTES
        st = self.m.state
        if not a.workflow_execution.workflow_id:
            raise _fail(bad, "WorkflowId is not set on decision.")
        if not a.signal_name:
            raise _fail(bad, "SignalName is not set on decision.")
        _check_blob(
            a.input.data,
            workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_SIGNAL_INPUT_SIZE,
            "Signal input",
        )
        event = self.m.add_event(
            "signal_external_workflow_execution_initiated_event_attributes",
            history_pb2.SignalExternalWorkflowExecutionInitiatedEventAttributes(
                decision_task_completed_event_id=self.dtc,
                domain=a.domain or st.domain_name,
                workflow_execution=a.workflow_execution,
                signal_name=a.signal_name,
                input=a.input if a.HasField("input") else None,
                control=a.control,
                child_workflow_only=a.child_workflow_only,
            ),
        )
        st.signals_out[event.event_id] = ExternalRequestInfo(
            initiated_id=event.event_id,
            domain_name=a.domain or st.domain_name,
            workflow_id=a.workflow_execution.workflow_id,
            run_id=a.workflow_execution.run_id,
            request_id=f"{st.run_id}:{event.event_id}",
            child_workflow_only=a.child_workflow_only,
            signal_name=a.signal_name,
            input=a.input.data if a.HasField("input") else None,
            control=a.control,
        )
        self.m.transfer_task(TransferKind.SIGNAL_EXECUTION, event_id=event.event_id)

    def _request_cancel_external_workflow_execution(
        self, a: decision_pb2.RequestCancelExternalWorkflowExecutionDecisionAttributes
    ) -> None:
        bad = workflow_pb2.DECISION_TASK_FAILED_CAUSE_BAD_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_ATTRIBUTES  # noqa: E501
        st = self.m.state
        if not a.workflow_execution.workflow_id:
            raise _fail(bad, "WorkflowId is not set on decision.")
        event = self.m.add_event(
            "request_cancel_external_workflow_execution_initiated_event_attributes",
            history_pb2.RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(
                decision_task_completed_event_id=self.dtc,
                domain=a.domain or st.domain_name,
                workflow_execution=a.workflow_execution,
                control=a.control,
                child_workflow_only=a.child_workflow_only,
            ),
        )
        st.request_cancels[event.event_id] = ExternalRequestInfo(
            initiated_id=event.event_id,
            domain_name=a.domain or st.domain_name,
            workflow_id=a.workflow_execution.workflow_id,
            run_id=a.workflow_execution.run_id,
            request_id=f"{st.run_id}:{event.event_id}",
            child_workflow_only=a.child_workflow_only,
        )
        self.m.transfer_task(TransferKind.CANCEL_EXECUTION, event_id=event.event_id)


def on_workflow_timeout(m: RunMutation, runs: RunCreator, new_run_id: str) -> None:
    st = m.state
    if not st.is_open:
        return
    if retry_or_cron_after_failure(
        runs, m, "cadenceInternal:Timeout START_TO_CLOSE", None, new_run_id
    ):
        return
    close_run(
        m,
        CLOSE_TIMED_OUT,
        "workflow_execution_timed_out_event_attributes",
        history_pb2.WorkflowExecutionTimedOutEventAttributes(
            timeout_type=workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
        ),
    )
