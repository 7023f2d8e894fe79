"""History checker: validates that a run's history is a legal Cadence event sequence.

Used by tests (unit, property, end-to-end) and by load runs. It checks the invariants the
engine promises: event ids contiguous from 1, the first event is WorkflowExecutionStarted, at
most one close event and nothing after it, decisions follow Scheduled → Started →
Completed/Failed/TimedOut with nothing foreign in flight, and every activity, timer and child
event refers to something scheduled and ends at most once.
"""

from __future__ import annotations

from collections.abc import Sequence

from cadence.api.v1 import history_pb2

CLOSE_FIELDS = frozenset(
    {
        "workflow_execution_completed_event_attributes",
        "workflow_execution_failed_event_attributes",
        "workflow_execution_timed_out_event_attributes",
        "workflow_execution_canceled_event_attributes",
        "workflow_execution_terminated_event_attributes",
        "workflow_execution_continued_as_new_event_attributes",
    }
)
# Events a decision produces, or that may land while a decision is in flight.
_DECIDER_FIELDS = frozenset(
    {
        "decision_task_completed_event_attributes",
        "decision_task_failed_event_attributes",
        "decision_task_timed_out_event_attributes",
        "workflow_execution_terminated_event_attributes",
        "workflow_execution_timed_out_event_attributes",
    }
)
_ACTIVITY_END = frozenset(
    {
        "activity_task_completed_event_attributes",
        "activity_task_failed_event_attributes",
        "activity_task_timed_out_event_attributes",
        "activity_task_canceled_event_attributes",
    }
)
_DECISION_END = frozenset(
    {
        "decision_task_completed_event_attributes",
        "decision_task_failed_event_attributes",
        "decision_task_timed_out_event_attributes",
    }
)


class HistoryViolation(AssertionError):
    """The history breaks an invariant; the message names the event and the rule."""


def check_history(events: Sequence[history_pb2.HistoryEvent]) -> None:
    """Raise HistoryViolation unless `events` is a legal history (complete, from event 1)."""
    if not events:
        raise HistoryViolation("history is empty")
    scheduled_decision: int | None = None
    started_decision: int | None = None
    activities: dict[int, str] = {}  # scheduled id -> "scheduled" | "started" | "closed"
    timers: dict[str, int] = {}
    closed_at: int | None = None
    for index, event in enumerate(events, start=1):
        field = event.WhichOneof("attributes")
        where = f"event {event.event_id} ({field})"
        if event.event_id != index:
            raise HistoryViolation(f"{where}: expected event id {index} (ids must be contiguous)")
        if field is None:
            raise HistoryViolation(f"{where}: no attributes")
        if index == 1 and field != "workflow_execution_started_event_attributes":
            raise HistoryViolation(f"{where}: the first event must be WorkflowExecutionStarted")
        if index > 1 and field == "workflow_execution_started_event_attributes":
            raise HistoryViolation(f"{where}: WorkflowExecutionStarted twice")
        if closed_at is not None:
            raise HistoryViolation(f"{where}: event after the close event {closed_at}")
        if started_decision is not None and field not in _DECIDER_FIELDS:
            raise HistoryViolation(
                f"{where}: foreign event while decision {started_decision} is in flight"
            )
        attrs = getattr(event, field)
        if field == "decision_task_scheduled_event_attributes":
            if scheduled_decision is not None:
                raise HistoryViolation(
                    f"{where}: a decision is already scheduled ({scheduled_decision})"
                )
            scheduled_decision = event.event_id
        elif field == "decision_task_started_event_attributes":
            if attrs.scheduled_event_id != scheduled_decision:
                raise HistoryViolation(
                    f"{where}: starts decision {attrs.scheduled_event_id}, "
                    f"scheduled is {scheduled_decision}"
                )
            started_decision = event.event_id
        elif field in _DECISION_END:
            if attrs.scheduled_event_id != scheduled_decision or (
                attrs.started_event_id != started_decision
            ):
                raise HistoryViolation(f"{where}: ends a decision that is not in flight")
            scheduled_decision = started_decision = None
        elif field == "activity_task_scheduled_event_attributes":
            activities[event.event_id] = "scheduled"
        elif field == "activity_task_started_event_attributes":
            if activities.get(attrs.scheduled_event_id) != "scheduled":
                raise HistoryViolation(f"{where}: activity {attrs.scheduled_event_id} not pending")
            activities[attrs.scheduled_event_id] = "started"
        elif field in _ACTIVITY_END:
            state = activities.get(attrs.scheduled_event_id)
            if state not in ("scheduled", "started"):
                raise HistoryViolation(f"{where}: activity {attrs.scheduled_event_id} not pending")
            activities[attrs.scheduled_event_id] = "closed"
        elif field == "timer_started_event_attributes":
            if attrs.timer_id in timers:
                raise HistoryViolation(f"{where}: timer {attrs.timer_id!r} already pending")
            timers[attrs.timer_id] = event.event_id
        elif field in ("timer_fired_event_attributes", "timer_canceled_event_attributes") and (
            timers.pop(attrs.timer_id, None) != attrs.started_event_id
        ):
            raise HistoryViolation(f"{where}: timer {attrs.timer_id!r} not pending")
        if field in CLOSE_FIELDS:
            closed_at = event.event_id
            scheduled_decision = started_decision = None
