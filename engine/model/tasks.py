"""Transfer and timer tasks: what a state change asks the rest of the system to do.

They are written to the store's outbox with the state change, then published to the
transfer/timer topics. Executors re-check mutable state, so a stale or repeated task is a
harmless no-op.
"""

from __future__ import annotations

import enum

import msgspec


class TransferKind(enum.IntEnum):
    DECISION_TASK = 0
    ACTIVITY_TASK = 1
    CLOSE_EXECUTION = 2
    CANCEL_EXECUTION = 3
    START_CHILD = 4
    SIGNAL_EXECUTION = 5


class TimerKind(enum.IntEnum):
    DECISION_TIMEOUT = 0
    ACTIVITY_TIMEOUT = 1
    USER_TIMER = 2
    WORKFLOW_TIMEOUT = 3
    DELETE_HISTORY = 4
    ACTIVITY_RETRY = 5
    WORKFLOW_BACKOFF = 6
    # Dispatches a decision retry held back after repeated failures (fire_ns names the backoff).
    DECISION_BACKOFF = 7


class TransferTask(msgspec.Struct, omit_defaults=True):
    task_id: int
    kind: TransferKind
    domain_id: str
    workflow_id: str
    run_id: str
    # DECISION/ACTIVITY: schedule event id; CHILD/CANCEL/SIGNAL: initiated event id.
    event_id: int = 0
    attempt: int = 0
    task_list: str = ""
    schedule_to_start_s: int = 0


class TimerTask(msgspec.Struct, omit_defaults=True):
    task_id: int
    kind: TimerKind
    fire_ns: int
    domain_id: str
    workflow_id: str
    run_id: str
    event_id: int = 0
    attempt: int = 0
    timer_id: str = ""
    # The TimeoutType enum value for DECISION/ACTIVITY timeouts.
    timeout_type: int = 0


_ENC = msgspec.msgpack.Encoder()
_TRANSFER_DEC = msgspec.msgpack.Decoder(TransferTask)
_TIMER_DEC = msgspec.msgpack.Decoder(TimerTask)


def encode_task(task: TransferTask | TimerTask) -> bytes:
    return _ENC.encode(task)


def decode_transfer(data: bytes) -> TransferTask:
    return _TRANSFER_DEC.decode(data)


def decode_timer(data: bytes) -> TimerTask:
    return _TIMER_DEC.decode(data)


class DispatchTask(msgspec.Struct, array_like=True):
    """What matching hands a poller: enough to ask the run's shard to record the start."""

    domain_id: str
    workflow_id: str
    run_id: str
    schedule_id: int
    attempt: int


_DISPATCH_DEC = msgspec.msgpack.Decoder(DispatchTask)


def encode_dispatch(task: DispatchTask) -> bytes:
    return _ENC.encode(task)


def decode_dispatch(data: bytes) -> DispatchTask:
    return _DISPATCH_DEC.decode(data)
