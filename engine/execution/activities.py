"""Activity lifecycle: schedule, start, heartbeat, complete/fail/cancel, timeouts, retries.

Retries are server-side and write no event: the attempt grows, a retry timer pushes the task
to matching again, and only the final outcome is written, after the deferred
ActivityTaskStarted (which then carries the attempt and the last failure).
"""

from __future__ import annotations

from cadence.api.v1 import common_pb2, history_pb2, workflow_pb2

from engine.errors import EntityNotExistsError
from engine.execution.mutation import RunMutation
from engine.execution.protos import NS, after_ns, last_failure, payload, retry_delay_s
from engine.model.state import (
    DEFERRED_STARTED_ID,
    EMPTY_EVENT_ID,
    ActivityInfo,
)
from engine.model.tasks import TimerKind, TimerTask, TransferKind

TIMEOUT_S2S = workflow_pb2.TIMEOUT_TYPE_SCHEDULE_TO_START
TIMEOUT_S2C = workflow_pb2.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE
TIMEOUT_START = workflow_pb2.TIMEOUT_TYPE_START_TO_CLOSE
TIMEOUT_HEARTBEAT = workflow_pb2.TIMEOUT_TYPE_HEARTBEAT

_TIMEOUT_NAMES: dict[int, str] = {
    TIMEOUT_S2S: "SCHEDULE_TO_START",
    TIMEOUT_S2C: "SCHEDULE_TO_CLOSE",
    TIMEOUT_START: "START_TO_CLOSE",
    TIMEOUT_HEARTBEAT: "HEARTBEAT",
}


def arm_schedule_timers(m: RunMutation, info: ActivityInfo, delay_s: int = 0) -> None:
    """Dispatch (after `delay_s`) and arm this attempt's schedule-to-start/close timeouts."""
    if delay_s > 0:
        m.timer_task(
            TimerKind.ACTIVITY_RETRY, delay_s, event_id=info.schedule_id, attempt=info.attempt
        )
    else:
        m.transfer_task(
            TransferKind.ACTIVITY_TASK,
            event_id=info.schedule_id,
            attempt=info.attempt,
            task_list=info.task_list,
            schedule_to_start_s=info.schedule_to_start_s,
        )
    if info.schedule_to_start_s < info.schedule_to_close_s:
        m.timer_task(
            TimerKind.ACTIVITY_TIMEOUT,
            delay_s + info.schedule_to_start_s,
            event_id=info.schedule_id,
            attempt=info.attempt,
            timeout_type=TIMEOUT_S2S,
        )
    m.timer_task(
        TimerKind.ACTIVITY_TIMEOUT,
        delay_s + info.schedule_to_close_s,
        event_id=info.schedule_id,
        attempt=info.attempt,
        timeout_type=TIMEOUT_S2C,
    )


def find_activity(m: RunMutation, schedule_id: int, attempt: int) -> ActivityInfo:
    """The started activity a token names, or EntityNotExists as Cadence answers stale ones."""
    info = m.state.activities.get(schedule_id)
    if not m.state.is_open or info is None or info.attempt != attempt or not info.is_started:
        raise EntityNotExistsError("Activity task not found.")
    return info


def record_started(
    m: RunMutation, schedule_id: int, attempt: int, request_id: str, identity: str
) -> ActivityInfo:
    st = m.state
    info = st.activities.get(schedule_id)
    if not st.is_open or info is None or info.attempt != attempt:
        raise EntityNotExistsError("Activity task not found.")
    if info.is_started:
        if info.request_id == request_id:
            return info  # the same poll retried: same answer
        raise EntityNotExistsError("Activity task already started.")
    info.request_id = request_id
    info.identity = identity
    info.last_worker_identity = identity
    info.started_ns = m.now_ns
    if info.retry is not None:
        info.started_id = DEFERRED_STARTED_ID
    else:
        info.started_id = m.add_external_event(
            "activity_task_started_event_attributes",
            history_pb2.ActivityTaskStartedEventAttributes(
                scheduled_event_id=schedule_id,
                identity=identity,
                request_id=request_id,
                attempt=attempt,
            ),
            wake=False,
        )
    if info.start_to_close_s > 0:
        m.timer_task(
            TimerKind.ACTIVITY_TIMEOUT,
            info.start_to_close_s,
            event_id=schedule_id,
            attempt=attempt,
            timeout_type=TIMEOUT_START,
        )
    if info.heartbeat_s > 0:
        m.timer_task(
            TimerKind.ACTIVITY_TIMEOUT,
            info.heartbeat_s,
            event_id=schedule_id,
            attempt=attempt,
            timeout_type=TIMEOUT_HEARTBEAT,
        )
    return info


def _started_event_id(m: RunMutation, info: ActivityInfo) -> int:
    """Write the deferred ActivityTaskStarted now (retry policy) and return its id."""
    if info.started_id != DEFERRED_STARTED_ID:
        return info.started_id
    return m.add_external_event(
        "activity_task_started_event_attributes",
        history_pb2.ActivityTaskStartedEventAttributes(
            scheduled_event_id=info.schedule_id,
            identity=info.identity,
            request_id=info.request_id,
            attempt=info.attempt,
            last_failure=last_failure(info),
        ),
        wake=False,
    )


def complete(m: RunMutation, info: ActivityInfo, result: bytes | None, identity: str) -> None:
    started = _started_event_id(m, info)
    del m.state.activities[info.schedule_id]
    m.add_external_event(
        "activity_task_completed_event_attributes",
        history_pb2.ActivityTaskCompletedEventAttributes(
            result=payload(result),
            scheduled_event_id=info.schedule_id,
            started_event_id=started,
            identity=identity,
        ),
    )


def _try_retry(m: RunMutation, info: ActivityInfo, reason: str, details: bytes | None) -> bool:
    if info.retry is None or info.cancel_requested:
        return False
    delay = retry_delay_s(info.retry, info.attempt, reason, m.now_ns, info.expiration_ns)
    if delay is None:
        return False
    info.attempt += 1
    info.started_id = EMPTY_EVENT_ID
    info.started_ns = 0
    info.request_id = ""
    info.scheduled_ns = after_ns(m.now_ns, delay)
    info.last_failure_reason = reason
    info.last_failure_details = details
    arm_schedule_timers(m, info, delay)
    return True


def fail(
    m: RunMutation,
    info: ActivityInfo,
    reason: str,
    details: bytes | None,
    identity: str,
    heartbeat_details: bytes | None = None,
) -> None:
    if heartbeat_details is not None:
        info.heartbeat_details = heartbeat_details
    if _try_retry(m, info, reason, details):
        return
    started = _started_event_id(m, info)
    del m.state.activities[info.schedule_id]
    m.add_external_event(
        "activity_task_failed_event_attributes",
        history_pb2.ActivityTaskFailedEventAttributes(
            failure=common_pb2.Failure(reason=reason, details=details or b""),
            scheduled_event_id=info.schedule_id,
            started_event_id=started,
            identity=identity,
        ),
    )


def canceled(m: RunMutation, info: ActivityInfo, details: bytes | None, identity: str) -> None:
    started = _started_event_id(m, info)
    del m.state.activities[info.schedule_id]
    m.add_external_event(
        "activity_task_canceled_event_attributes",
        history_pb2.ActivityTaskCanceledEventAttributes(
            details=payload(details),
            latest_cancel_requested_event_id=info.cancel_request_event_id,
            scheduled_event_id=info.schedule_id,
            started_event_id=started,
            identity=identity,
        ),
    )


def heartbeat(m: RunMutation, info: ActivityInfo, details: bytes | None) -> bool:
    """Store the details; the reply says whether cancellation was requested."""
    info.heartbeat_details = details
    info.last_heartbeat_ns = m.now_ns
    return info.cancel_requested


def on_timeout_timer(m: RunMutation, task: TimerTask) -> None:
    """An activity timeout timer fired: time the attempt out, or re-arm, or ignore if stale."""
    info = m.state.activities.get(task.event_id)
    if info is None or info.attempt != task.attempt or not m.state.is_open:
        return
    kind = task.timeout_type
    if kind == TIMEOUT_S2S:
        if info.is_started:
            return
    elif kind in (TIMEOUT_START, TIMEOUT_HEARTBEAT):
        if not info.is_started:
            return
        if kind == TIMEOUT_HEARTBEAT:
            deadline = max(info.started_ns, info.last_heartbeat_ns) + info.heartbeat_s * NS
            if deadline > m.now_ns:
                # A heartbeat came in since this timer was armed: wait for the new deadline.
                m.timer_task(
                    TimerKind.ACTIVITY_TIMEOUT,
                    (deadline - m.now_ns) / NS,
                    event_id=info.schedule_id,
                    attempt=info.attempt,
                    timeout_type=TIMEOUT_HEARTBEAT,
                )
                return
    reason = f"cadenceInternal:Timeout {_TIMEOUT_NAMES.get(kind, 'UNKNOWN')}"
    # A timeout has no failure details (Cadence retries it with nil details); the heartbeat
    # details stay on the activity for the next attempt.
    if _try_retry(m, info, reason, None):
        return
    started = _started_event_id(m, info) if info.is_started else EMPTY_EVENT_ID
    del m.state.activities[info.schedule_id]
    m.add_external_event(
        "activity_task_timed_out_event_attributes",
        history_pb2.ActivityTaskTimedOutEventAttributes(
            details=payload(info.heartbeat_details),
            scheduled_event_id=info.schedule_id,
            started_event_id=started,
            timeout_type=kind,  # type: ignore[arg-type]
            last_failure=last_failure(info),
        ),
    )


def on_retry_timer(m: RunMutation, task: TimerTask) -> None:
    """The retry backoff passed: push this attempt to matching."""
    info = m.state.activities.get(task.event_id)
    if info is None or info.attempt != task.attempt or info.is_started or not m.state.is_open:
        return
    m.transfer_task(
        TransferKind.ACTIVITY_TASK,
        event_id=info.schedule_id,
        attempt=info.attempt,
        task_list=info.task_list,
        schedule_to_start_s=info.schedule_to_start_s,
    )
