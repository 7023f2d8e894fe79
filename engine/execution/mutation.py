"""RunMutation: one command's changes to one run, collected for the group commit.

It owns the rules every handler shares: event ids are contiguous and assigned here; external
events are buffered while a decision is in flight; a new event turns a pending transient
decision back into a normal one; at most one decision exists at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cadence.api.v1 import history_pb2, tasklist_pb2
from google.protobuf.message import Message

from engine.execution.protos import after_ns, dur, ts
from engine.model.state import (
    BUFFERED_EVENT_ID,
    EMPTY_EVENT_ID,
    DecisionInfo,
    MutableState,
    decode_state,
    encode_state,
)
from engine.model.tasks import TimerKind, TimerTask, TransferKind, TransferTask

if TYPE_CHECKING:
    from engine.execution.decision_backoff import DecisionBackoff

# Failover version of every event of a local (single-cluster) domain.
LOCAL_VERSION = -24


class RunMutation:
    def __init__(self, state: MutableState, now_ns: int, next_task_id: Callable[[], int]) -> None:
        self.state = state
        self.now_ns = now_ns
        self._next_task_id = next_task_id
        self.events: list[history_pb2.HistoryEvent] = []
        self.transfer: list[TransferTask] = []
        self.timers: list[TimerTask] = []
        # Set when the visibility record must be rewritten (start, close, upsert).
        self.visibility_changed = False
        # Set when a failed decision's retry backs off: the shard logs it.
        self.decision_backoff: DecisionBackoff | None = None
        self._checkpoint: tuple[bytes, int, int, int, bool] | None = None

    # -- events -------------------------------------------------------------------------

    def add_event(self, field: str, attrs: Message) -> history_pb2.HistoryEvent:
        st = self.state
        event = history_pb2.HistoryEvent(
            event_id=st.next_event_id,
            event_time=ts(self.now_ns),
            version=LOCAL_VERSION,
            task_id=self._next_task_id(),
        )
        getattr(event, field).CopyFrom(attrs)
        st.next_event_id += 1
        self.events.append(event)
        return event

    def decision_in_flight(self) -> bool:
        decision = self.state.decision
        return decision is not None and decision.started_id != EMPTY_EVENT_ID

    def add_external_event(self, field: str, attrs: Message, *, wake: bool = True) -> int:
        """An event caused from outside the decider (signal, activity result, timer...).

        Buffered while a decision is started, so nothing foreign lands between
        DecisionTaskStarted and DecisionTaskCompleted; otherwise appended and, when `wake`, a
        decision is scheduled for it. Returns the event id, or BUFFERED_EVENT_ID.
        """
        st = self.state
        decision = st.decision
        if self.decision_in_flight():
            event = history_pb2.HistoryEvent()
            getattr(event, field).CopyFrom(attrs)
            st.buffered.append(event.SerializeToString())
            return BUFFERED_EVENT_ID
        if decision is not None and decision.attempt > 0:
            # A transient decision has no events; a new event makes the next one normal.
            st.decision = None
            wake = True
        event_id = self.add_event(field, attrs).event_id
        if wake:
            self.schedule_decision()
        return event_id

    def flush_buffered(self) -> bool:
        """Append the buffered events with fresh ids; True if any of them wakes the decider.

        Events that referred to a buffered ActivityTaskStarted (by scheduled id) or
        ChildWorkflowExecutionStarted (by initiated id) get its real id now.
        """
        st = self.state
        if not st.buffered:
            return False
        buffered, st.buffered = st.buffered, []
        activity_started: dict[int, int] = {}
        child_started: dict[int, int] = {}
        wakes = False
        for raw in buffered:
            event = history_pb2.HistoryEvent.FromString(raw)
            field = event.WhichOneof("attributes")
            assert field is not None
            attrs = getattr(event, field)
            if getattr(attrs, "started_event_id", None) == BUFFERED_EVENT_ID:
                if field.startswith("activity_task_"):
                    ref = activity_started.get(attrs.scheduled_event_id, EMPTY_EVENT_ID)
                else:
                    ref = child_started.get(attrs.initiated_event_id, EMPTY_EVENT_ID)
                attrs.started_event_id = ref
            new = self.add_event(field, attrs)
            if field == "activity_task_started_event_attributes":
                activity_started[attrs.scheduled_event_id] = new.event_id
                info = st.activities.get(attrs.scheduled_event_id)
                if info is not None and info.started_id == BUFFERED_EVENT_ID:
                    info.started_id = new.event_id
                continue  # a start alone does not wake the decider
            if field == "child_workflow_execution_started_event_attributes":
                child_started[attrs.initiated_event_id] = new.event_id
                child = st.children.get(attrs.initiated_event_id)
                if child is not None and child.started_id == BUFFERED_EVENT_ID:
                    child.started_id = new.event_id
            wakes = True
        return wakes

    # -- decisions ----------------------------------------------------------------------

    def schedule_decision(self, attempt: int = 0) -> None:
        st = self.state
        if st.decision is not None or not st.is_open or st.awaiting_backoff:
            return
        if attempt == 0:
            event = self.add_event(
                "decision_task_scheduled_event_attributes",
                history_pb2.DecisionTaskScheduledEventAttributes(
                    task_list=tasklist_pb2.TaskList(name=st.task_list),
                    start_to_close_timeout=dur(st.task_timeout_s),
                    attempt=0,
                ),
            )
            schedule_id = event.event_id
        else:
            # Transient: not persisted; its ids are the next two, as the poll shows them.
            schedule_id = st.next_event_id
        # During a decision backoff (engine/execution/decision_backoff.py) the decision is
        # scheduled as of the backoff's end and dispatched by its timer, not now.
        backing_off = st.decision_backoff_ns != 0
        st.decision = DecisionInfo(
            schedule_id=schedule_id,
            task_list=st.task_list,
            timeout_s=st.task_timeout_s,
            scheduled_ns=st.decision_backoff_ns if backing_off else self.now_ns,
            original_scheduled_ns=self.now_ns,
            attempt=attempt,
        )
        if not backing_off:
            self.dispatch_decision(st.decision)

    def dispatch_decision(self, d: DecisionInfo) -> None:
        """Hand the scheduled decision `d` to matching (a DECISION_TASK transfer task)."""
        self.transfer_task(
            TransferKind.DECISION_TASK,
            event_id=d.schedule_id,
            attempt=d.attempt,
            task_list=d.task_list,
        )

    # -- tasks --------------------------------------------------------------------------

    def transfer_task(self, kind: TransferKind, **fields: Any) -> None:
        st = self.state
        self.transfer.append(
            TransferTask(
                task_id=0,
                kind=kind,
                domain_id=st.domain_id,
                workflow_id=st.workflow_id,
                run_id=st.run_id,
                **fields,
            )
        )

    def timer_task(self, kind: TimerKind, delay_s: float, **fields: Any) -> None:
        st = self.state
        self.timers.append(
            TimerTask(
                task_id=0,
                kind=kind,
                fire_ns=after_ns(self.now_ns, delay_s),
                domain_id=st.domain_id,
                workflow_id=st.workflow_id,
                run_id=st.run_id,
                **fields,
            )
        )

    # -- all-or-nothing decision handling ------------------------------------------------

    def checkpoint(self) -> None:
        self._checkpoint = (
            encode_state(self.state),
            len(self.events),
            len(self.transfer),
            len(self.timers),
            self.visibility_changed,
        )

    def rollback(self) -> None:
        assert self._checkpoint is not None
        raw, n_events, n_transfer, n_timers, vis = self._checkpoint
        self.state = decode_state(raw)
        del self.events[n_events:]
        del self.transfer[n_transfer:]
        del self.timers[n_timers:]
        self.visibility_changed = vis
        self._checkpoint = None
