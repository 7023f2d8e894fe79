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
# The only events that may follow a DecisionTaskStarted: its end. A close from outside
# (terminate, timeout) fails the decision first (FORCE_CLOSE_DECISION), as Cadence does.
_DECIDER_FIELDS = frozenset(
    {
        "decision_task_completed_event_attributes",
        "decision_task_failed_event_attributes",
        "decision_task_timed_out_event_attributes",
    }
)
# Events written by a decision: they name the DecisionTaskCompleted that made them.
_BY_DECISION = frozenset(
    {
        "activity_task_scheduled_event_attributes",
        "activity_task_cancel_requested_event_attributes",
        "request_cancel_activity_task_failed_event_attributes",
        "timer_started_event_attributes",
        "timer_canceled_event_attributes",
        "cancel_timer_failed_event_attributes",
        "marker_recorded_event_attributes",
        "upsert_workflow_search_attributes_event_attributes",
        "start_child_workflow_execution_initiated_event_attributes",
        "signal_external_workflow_execution_initiated_event_attributes",
        "request_cancel_external_workflow_execution_initiated_event_attributes",
        "workflow_execution_completed_event_attributes",
        "workflow_execution_failed_event_attributes",
        "workflow_execution_canceled_event_attributes",
        "workflow_execution_continued_as_new_event_attributes",
    }
)
# Results of a decision's request to another workflow: each names its initiated event, once.
_RESULT_OF = {
    "external_workflow_execution_signaled_event_attributes": (
        "signal_external_workflow_execution_initiated_event_attributes"
    ),
    "signal_external_workflow_execution_failed_event_attributes": (
        "signal_external_workflow_execution_initiated_event_attributes"
    ),
    "external_workflow_execution_cancel_requested_event_attributes": (
        "request_cancel_external_workflow_execution_initiated_event_attributes"
    ),
    "request_cancel_external_workflow_execution_failed_event_attributes": (
        "request_cancel_external_workflow_execution_initiated_event_attributes"
    ),
    "start_child_workflow_execution_failed_event_attributes": (
        "start_child_workflow_execution_initiated_event_attributes"
    ),
    "child_workflow_execution_started_event_attributes": (
        "start_child_workflow_execution_initiated_event_attributes"
    ),
}
_CHILD_END = frozenset(
    {
        "child_workflow_execution_completed_event_attributes",
        "child_workflow_execution_failed_event_attributes",
        "child_workflow_execution_canceled_event_attributes",
        "child_workflow_execution_timed_out_event_attributes",
        "child_workflow_execution_terminated_event_attributes",
    }
)
EMPTY_EVENT_ID = -23
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
    activity_ids: dict[int, str] = {}  # pending activities: scheduled id -> activity id
    activity_started: dict[int, int] = {}  # scheduled id -> ActivityTaskStarted id
    cancel_requested: dict[int, str] = {}  # ActivityTaskCancelRequested id -> activity id
    timers: dict[str, int] = {}
    last_completed: int | None = None
    initiated: dict[int, str] = {}  # initiated event id -> its field
    resolved: set[int] = set()  # initiated ids that got their result
    children: dict[int, int] = {}  # child initiated id -> ChildWorkflowExecutionStarted id
    workflow_cancel_requests = 0
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
        if (
            field in _BY_DECISION
            and attrs.decision_task_completed_event_id
            and (attrs.decision_task_completed_event_id != last_completed)
        ):
            raise HistoryViolation(
                f"{where}: names DecisionTaskCompleted {attrs.decision_task_completed_event_id}, "
                f"the last one is {last_completed}"
            )
        if field.endswith("_initiated_event_attributes"):
            initiated[event.event_id] = field
        elif field in _RESULT_OF:
            if initiated.get(attrs.initiated_event_id) != _RESULT_OF[field]:
                raise HistoryViolation(f"{where}: no initiated event {attrs.initiated_event_id}")
            if attrs.initiated_event_id in resolved or attrs.initiated_event_id in children:
                raise HistoryViolation(f"{where}: {attrs.initiated_event_id} has a result already")
            if field == "child_workflow_execution_started_event_attributes":
                children[attrs.initiated_event_id] = event.event_id
            else:
                resolved.add(attrs.initiated_event_id)
        elif field in _CHILD_END:
            if children.get(attrs.initiated_event_id) != attrs.started_event_id:
                raise HistoryViolation(f"{where}: child {attrs.initiated_event_id} not started")
            if attrs.initiated_event_id in resolved:
                raise HistoryViolation(f"{where}: child {attrs.initiated_event_id} closed twice")
            resolved.add(attrs.initiated_event_id)
        elif field == "workflow_execution_cancel_requested_event_attributes":
            workflow_cancel_requests += 1
            if workflow_cancel_requests > 1:
                raise HistoryViolation(f"{where}: cancellation requested twice")
        if field == "decision_task_completed_event_attributes":
            last_completed = event.event_id
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
            # No uniqueness check on the activity id: a result buffered during the decision
            # frees the id in mutable state before its event lands (as in Cadence).
            activities[event.event_id] = "scheduled"
            activity_ids[event.event_id] = attrs.activity_id
        elif field == "activity_task_started_event_attributes":
            if activities.get(attrs.scheduled_event_id) != "scheduled":
                raise HistoryViolation(f"{where}: activity {attrs.scheduled_event_id} not pending")
            activities[attrs.scheduled_event_id] = "started"
            activity_started[attrs.scheduled_event_id] = event.event_id
        elif field in _ACTIVITY_END:
            state = activities.get(attrs.scheduled_event_id)
            if state not in ("scheduled", "started"):
                raise HistoryViolation(f"{where}: activity {attrs.scheduled_event_id} not pending")
            started = activity_started.get(attrs.scheduled_event_id, EMPTY_EVENT_ID)
            if attrs.started_event_id != started:
                raise HistoryViolation(
                    f"{where}: names started event {attrs.started_event_id}, it is {started}"
                )
            if (
                field == "activity_task_canceled_event_attributes"
                and attrs.latest_cancel_requested_event_id != EMPTY_EVENT_ID
                and cancel_requested.get(attrs.latest_cancel_requested_event_id)
                != activity_ids[attrs.scheduled_event_id]
            ):
                # A worker may report a cancel nobody asked for (-23); a named request must
                # be this activity's.
                raise HistoryViolation(f"{where}: names another activity's cancel request")
            activities[attrs.scheduled_event_id] = "closed"
            del activity_ids[attrs.scheduled_event_id]
        elif field == "activity_task_cancel_requested_event_attributes":
            if attrs.activity_id not in activity_ids.values():
                raise HistoryViolation(f"{where}: activity id {attrs.activity_id!r} not pending")
            cancel_requested[event.event_id] = attrs.activity_id
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
