"""Cadence gRPC calls the harness makes outside the measured workers.

Raw `uber.cadence.api.v1` stubs over a plain grpc.aio channel: register the domain, wait
for a run to close, read a full history. The protocol driver uses them for its own calls;
the runner uses them to check histories after a run whichever driver produced them; the
client driver waits on close events through these too, with the official client's stub,
exactly as the README's quickstart does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Final

import grpc
import grpc.aio
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_domain_pb2,
    service_domain_pb2_grpc,
    service_workflow_pb2,
    service_workflow_pb2_grpc,
    tasklist_pb2,
)
from google.protobuf import duration_pb2

from load.result import Execution

# YARPC headers the official client sends on every call; a Cadence frontend expects them.
METADATA: Final = (
    ("rpc-service", "cadence-frontend"),
    ("rpc-caller", "cadenza-load"),
    ("rpc-encoding", "proto"),
)
LONG_POLL_S: Final = 30.0
"""Deadline of one long poll; the server answers empty a second before it."""

CLOSE_KINDS: Final = {
    "workflow_execution_completed_event_attributes": "completed",
    "workflow_execution_failed_event_attributes": "failed",
    "workflow_execution_timed_out_event_attributes": "timed_out",
    "workflow_execution_canceled_event_attributes": "canceled",
    "workflow_execution_terminated_event_attributes": "terminated",
    "workflow_execution_continued_as_new_event_attributes": "continued_as_new",
}


def open_channel(target: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target)


async def wait_ready(channel: grpc.aio.Channel, target: str, within: float = 15.0) -> None:
    """Fail with a plain message when nothing answers at `target`."""
    try:
        await asyncio.wait_for(channel.channel_ready(), within)
    except TimeoutError as e:
        raise ConnectionError(f"no gRPC server answers at {target} within {within:.0f} s") from e


async def ensure_domain(channel: grpc.aio.Channel, name: str) -> None:
    """Register `name` with a one-day retention unless it exists."""
    # The generated *_pb2_grpc stubs carry no annotations; callers annotate responses.
    stub: Any = service_domain_pb2_grpc.DomainAPIStub(channel)  # type: ignore[no-untyped-call]
    try:
        await stub.RegisterDomain(
            service_domain_pb2.RegisterDomainRequest(
                name=name,
                workflow_execution_retention_period=duration_pb2.Duration(seconds=86400),
            ),
            metadata=METADATA,
            timeout=10,
        )
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise


def workflow_stub(channel: grpc.aio.Channel) -> Any:
    """The generated stub is untyped; callers annotate what each call returns."""
    return service_workflow_pb2_grpc.WorkflowAPIStub(channel)  # type: ignore[no-untyped-call]


async def start_workflow(
    stub: Any,
    domain: str,
    *,
    workflow_type: str,
    workflow_id: str,
    task_list: str,
    input: bytes,
    timeout_s: int,
    identity: str,
) -> Execution:
    resp: service_workflow_pb2.StartWorkflowExecutionResponse = await stub.StartWorkflowExecution(
        service_workflow_pb2.StartWorkflowExecutionRequest(
            domain=domain,
            workflow_id=workflow_id,
            workflow_type=common_pb2.WorkflowType(name=workflow_type),
            task_list=tasklist_pb2.TaskList(name=task_list),
            input=common_pb2.Payload(data=input),
            execution_start_to_close_timeout=duration_pb2.Duration(seconds=timeout_s),
            task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
            identity=identity,
            request_id=str(uuid.uuid4()),
        ),
        metadata=METADATA,
    )
    return Execution(workflow_id, resp.run_id)


async def signal_workflow(
    stub: Any, domain: str, execution: Execution, name: str, input: bytes, identity: str
) -> None:
    await stub.SignalWorkflowExecution(
        service_workflow_pb2.SignalWorkflowExecutionRequest(
            domain=domain,
            workflow_execution=to_proto(execution),
            signal_name=name,
            signal_input=common_pb2.Payload(data=input),
            identity=identity,
            request_id=str(uuid.uuid4()),
        ),
        metadata=METADATA,
    )


async def wait_closed(
    stub: Any,
    domain: str,
    execution: Execution,
    metadata: tuple[tuple[str, str], ...] | None = METADATA,
) -> history_pb2.HistoryEvent:
    """The run's close event, by long polls on the close-event filter (the clients' way).

    `metadata=None` for the official client's stub, whose interceptor adds the headers.
    """
    while True:
        resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse
        resp = await stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=domain,
                workflow_execution=to_proto(execution),
                wait_for_new_event=True,
                history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
            ),
            timeout=LONG_POLL_S,
            metadata=metadata,
        )
        if resp.history.events:
            return resp.history.events[-1]


async def full_history(
    stub: Any, domain: str, execution: Execution, first_page_token: bytes = b""
) -> list[history_pb2.HistoryEvent]:
    """Every event of the run, following page tokens (from `first_page_token` if given)."""
    events: list[history_pb2.HistoryEvent] = []
    token = first_page_token
    while True:
        resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse
        resp = await stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=domain, workflow_execution=to_proto(execution), next_page_token=token
            ),
            metadata=METADATA,
            timeout=30,
        )
        events.extend(resp.history.events)
        token = resp.next_page_token
        if not token:
            return events


def close_kind(event: history_pb2.HistoryEvent) -> str:
    """'completed', 'failed', 'timed_out', ... for a close event."""
    return CLOSE_KINDS.get(event.WhichOneof("attributes") or "", "unknown")


def to_proto(execution: Execution) -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=execution.workflow_id, run_id=execution.run_id)


def event_seconds(event: history_pb2.HistoryEvent) -> float:
    """The event's server timestamp as Unix seconds (float)."""
    return event.event_time.seconds + event.event_time.nanos / 1e9


def wall_now() -> float:
    """Unix seconds: the clock event timestamps are compared with (same host)."""
    return time.time()
