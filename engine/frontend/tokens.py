"""Opaque tokens the frontend hands to clients: task tokens and history page tokens.

Task tokens are JSON, like the Go server's, so they stay readable in logs; clients never look
inside. A token names the run and the schedule id + attempt, so a late or repeated response is
recognised as stale by the shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import msgspec

from engine.errors import BadRequestError


@dataclass(frozen=True, slots=True)
class TaskToken:
    domain_id: str
    workflow_id: str
    run_id: str
    schedule_id: int
    attempt: int
    activity_id: str = ""
    # Set on query tasks instead of a schedule id.
    query_id: str = ""


def encode_task_token(t: TaskToken) -> bytes:
    doc: dict[str, object] = {
        "domainId": t.domain_id,
        "workflowId": t.workflow_id,
        "runId": t.run_id,
        "scheduleId": t.schedule_id,
        "scheduleAttempt": t.attempt,
    }
    if t.activity_id:
        doc["activityId"] = t.activity_id
    if t.query_id:
        doc["taskId"] = t.query_id
    return json.dumps(doc, separators=(",", ":")).encode()


def decode_task_token(raw: bytes) -> TaskToken:
    if not raw:
        raise BadRequestError("Task token not set on request.")
    try:
        doc = json.loads(raw)
        return TaskToken(
            domain_id=str(doc["domainId"]),
            workflow_id=str(doc["workflowId"]),
            run_id=str(doc["runId"]),
            schedule_id=int(doc.get("scheduleId", 0)),
            attempt=int(doc.get("scheduleAttempt", 0)),
            activity_id=str(doc.get("activityId", "")),
            query_id=str(doc.get("taskId", "")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequestError("Error deserializing task token.") from exc


class PageToken(msgspec.Struct, array_like=True):
    run_id: str
    next_event_id: int
    # Serialized synthetic events (a transient decision) to append after the last page.
    transient: bytes = b""


_PAGE_ENC = msgspec.msgpack.Encoder()
_PAGE_DEC = msgspec.msgpack.Decoder(PageToken)


def encode_page_token(t: PageToken) -> bytes:
    return _PAGE_ENC.encode(t)


def decode_page_token(raw: bytes) -> PageToken:
    try:
        return _PAGE_DEC.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadRequestError("Invalid NextPageToken.") from exc
