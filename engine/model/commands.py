"""Commands: the entries of the shard log, and the replies their appliers send back.

A command names the run it is for (by workflow id; run id "" means the current run) and
carries either a serialized API request (`request`) or engine-internal arguments (`args`).
Every state change of a run travels as one of these through its shard's partition.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec


class CommandKind(enum.StrEnum):
    START = "start"
    SIGNAL = "signal"
    SIGNAL_WITH_START = "signal_with_start"
    REQUEST_CANCEL = "request_cancel"
    TERMINATE = "terminate"
    RECORD_DECISION_STARTED = "record_decision_started"
    DECISION_COMPLETED = "decision_completed"
    DECISION_FAILED = "decision_failed"
    RECORD_ACTIVITY_STARTED = "record_activity_started"
    ACTIVITY_COMPLETED = "activity_completed"
    ACTIVITY_FAILED = "activity_failed"
    ACTIVITY_CANCELED = "activity_canceled"
    ACTIVITY_HEARTBEAT = "activity_heartbeat"
    TIMER_FIRED = "timer_fired"
    # Cross-run results sent by the transfer processor.
    START_CHILD = "start_child"
    CHILD_STARTED = "child_started"
    CHILD_START_FAILED = "child_start_failed"
    CHILD_COMPLETED = "child_completed"
    EXTERNAL_SIGNALED = "external_signaled"
    EXTERNAL_SIGNAL_FAILED = "external_signal_failed"
    EXTERNAL_CANCEL_REQUESTED = "external_cancel_requested"
    EXTERNAL_CANCEL_FAILED = "external_cancel_failed"
    # Regenerate the dispatch tasks of a run (a lost matching backlog).
    REFRESH_TASKS = "refresh_tasks"


class Command(msgspec.Struct, omit_defaults=True):
    kind: CommandKind
    domain_id: str
    workflow_id: str
    run_id: str = ""
    request: bytes = b""
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    reply_to: str = ""
    reply_key: str = ""


class Reply(msgspec.Struct, omit_defaults=True):
    key: str
    ok: bool = True
    # A serialized proto response, or msgpack of a dict for internal callers.
    payload: bytes = b""
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    error_kind: str = ""
    error_message: str = ""
    error_fields: dict[str, str] = msgspec.field(default_factory=dict)


def refresh_tasks(domain_id: str, workflow_id: str, run_id: str) -> Command:
    """The command that makes a run dispatch its pending decision and activities again."""
    return Command(
        kind=CommandKind.REFRESH_TASKS, domain_id=domain_id, workflow_id=workflow_id, run_id=run_id
    )


_CMD_ENC = msgspec.msgpack.Encoder()
_CMD_DEC = msgspec.msgpack.Decoder(Command)
_REPLY_DEC = msgspec.msgpack.Decoder(Reply)


def encode_command(cmd: Command) -> bytes:
    return _CMD_ENC.encode(cmd)


def decode_command(data: bytes) -> Command:
    return _CMD_DEC.decode(data)


def encode_reply(reply: Reply) -> bytes:
    return _CMD_ENC.encode(reply)


def decode_reply(data: bytes) -> Reply:
    return _REPLY_DEC.decode(data)
