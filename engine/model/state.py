"""Mutable state of one run: the summary the shard owner keeps beside the history.

Encoded with msgspec (msgpack): it is read and written on every command, so it must be cheap.
Times are unix nanoseconds; timeouts are whole seconds, as Cadence truncates Durations.
"""

from __future__ import annotations

import msgspec

EMPTY_EVENT_ID = -23
# ActivityTaskStarted is deferred (written with the outcome) when a retry policy is set.
DEFERRED_STARTED_ID = -1000
# An event that sits in the buffer has no id yet; references to it are fixed when flushed.
BUFFERED_EVENT_ID = -123


class RetryPolicyState(msgspec.Struct, frozen=True):
    initial_interval_s: int
    backoff_coefficient: float
    maximum_interval_s: int
    maximum_attempts: int
    non_retryable_reasons: list[str]
    expiration_s: int


class DecisionInfo(msgspec.Struct):
    schedule_id: int
    task_list: str
    timeout_s: int
    scheduled_ns: int
    original_scheduled_ns: int
    attempt: int = 0
    started_id: int = EMPTY_EVENT_ID
    started_ns: int = 0
    request_id: str = ""
    identity: str = ""


class DecisionFailureInfo(msgspec.Struct):
    """The last failed or timed-out decision of a run, kept for describe/diagnose and logs."""

    # The DecisionTaskFailedCause name (e.g. "DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION"),
    # or "DECISION_TASK_TIMED_OUT_CAUSE_TIMEOUT" for a start-to-close timeout.
    cause: str
    # The worker's details (or the invalid decision's message), cut to a bounded size.
    details: bytes
    identity: str
    attempt: int
    time_ns: int


class ActivityInfo(msgspec.Struct):
    schedule_id: int
    activity_id: str
    activity_type: str
    task_list: str
    input: bytes | None
    header: bytes
    scheduled_ns: int
    first_scheduled_ns: int
    schedule_to_start_s: int
    schedule_to_close_s: int
    start_to_close_s: int
    heartbeat_s: int
    started_id: int = EMPTY_EVENT_ID
    started_ns: int = 0
    request_id: str = ""
    identity: str = ""
    attempt: int = 0
    retry: RetryPolicyState | None = None
    expiration_ns: int = 0
    heartbeat_details: bytes | None = None
    last_heartbeat_ns: int = 0
    cancel_requested: bool = False
    cancel_request_event_id: int = EMPTY_EVENT_ID
    last_failure_reason: str = ""
    last_failure_details: bytes | None = None
    last_worker_identity: str = ""

    @property
    def is_started(self) -> bool:
        return self.started_id != EMPTY_EVENT_ID


class TimerInfo(msgspec.Struct):
    timer_id: str
    started_id: int
    fire_ns: int


class ChildInfo(msgspec.Struct):
    initiated_id: int
    domain_name: str
    workflow_id: str
    workflow_type: str
    create_request_id: str
    parent_close_policy: int
    # The serialized StartChildWorkflowExecutionInitiatedEventAttributes, for the transfer task.
    initiated: bytes = b""
    started_id: int = EMPTY_EVENT_ID
    run_id: str = ""


class ExternalRequestInfo(msgspec.Struct):
    initiated_id: int
    domain_name: str
    workflow_id: str
    run_id: str
    request_id: str
    child_workflow_only: bool = False
    signal_name: str = ""
    input: bytes | None = None
    control: bytes = b""


class ParentInfo(msgspec.Struct, frozen=True):
    domain_id: str
    domain_name: str
    workflow_id: str
    run_id: str
    initiated_id: int


class MutableState(msgspec.Struct):
    domain_id: str
    domain_name: str
    workflow_id: str
    run_id: str
    first_execution_run_id: str
    workflow_type: str
    task_list: str
    execution_timeout_s: int
    task_timeout_s: int
    create_request_id: str
    start_ns: int
    execution_ns: int
    input: bytes | None = None
    header: bytes = b""
    memo: bytes = b""
    search_attributes: dict[str, bytes] = msgspec.field(default_factory=dict)
    parent: ParentInfo | None = None
    # 0 while open, else the WorkflowExecutionCloseStatus enum value.
    close_status: int = 0
    close_ns: int = 0
    close_event_id: int = 0
    # The serialized close HistoryEvent, for the parent's notification and describe.
    close_event: bytes = b""
    continued_run_id: str = ""
    next_event_id: int = 1
    # started_event_id of the last completed decision (Cadence's previous_started_event_id).
    last_processed_event: int = EMPTY_EVENT_ID
    attempt: int = 0
    retry: RetryPolicyState | None = None
    expiration_ns: int = 0
    cron_schedule: str = ""
    cron_overlap: int = 0
    last_completion_result: bytes | None = None
    # True until the WorkflowBackoffTimer schedules the first decision (delay_start, cron, retry).
    awaiting_backoff: bool = False
    signal_count: int = 0
    signal_request_ids: list[str] = msgspec.field(default_factory=list)
    cancel_requested: bool = False
    cancel_request_id: str = ""
    decision: DecisionInfo | None = None
    activities: dict[int, ActivityInfo] = msgspec.field(default_factory=dict)
    timers: dict[str, TimerInfo] = msgspec.field(default_factory=dict)
    children: dict[int, ChildInfo] = msgspec.field(default_factory=dict)
    request_cancels: dict[int, ExternalRequestInfo] = msgspec.field(default_factory=dict)
    signals_out: dict[int, ExternalRequestInfo] = msgspec.field(default_factory=dict)
    # External events that arrived while a decision was in flight: serialized HistoryEvents
    # without ids, appended after the decision completes.
    buffered: list[bytes] = msgspec.field(default_factory=list)
    completed_decisions: int = 0
    # Failed or timed-out decisions since the last completed one (a new event does not reset
    # it, unlike the decision's attempt): it drives the retry backoff
    # (engine/execution/decision_backoff.py).
    decision_failures: int = 0
    # Not 0 while the pending decision waits for its DECISION_BACKOFF timer, due then: it is
    # not dispatched before.
    decision_backoff_ns: int = 0
    last_decision_failure: DecisionFailureInfo | None = None

    @property
    def is_open(self) -> bool:
        return self.close_status == 0

    def activity_by_id(self, activity_id: str) -> ActivityInfo | None:
        for info in self.activities.values():
            if info.activity_id == activity_id:
                return info
        return None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(MutableState)


def encode_state(state: MutableState) -> bytes:
    return _ENCODER.encode(state)


def decode_state(data: bytes) -> MutableState:
    return _DECODER.decode(data)
