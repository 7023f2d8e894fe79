"""End-to-end harness: an in-process Cadenza server driven by the official Python client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cadence import Client, Registry
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_domain_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
)
from cadence.worker import Worker
from google.protobuf import duration_pb2

from engine.clock import Clock, ManualClock
from engine.execution.checker import check_history
from engine.server import Server
from tests.e2e.backends import config_for, prepare

DOMAIN = "test-domain"


@contextlib.asynccontextmanager
async def running_server(
    db: Path, clock: Clock | None = None, **overrides: Any
) -> AsyncIterator[Server]:
    """A started server whose state lives at `db` (embedded) or in its twin keyspace and
    Kafka namespace (distributed, see tests/e2e/backends.py); started again on the same
    `db`, it finds that state again."""
    server = await started_server(db, clock, **overrides)
    try:
        yield server
    finally:
        await server.stop()


async def started_server(db: Path, clock: Clock | None = None, **overrides: Any) -> Server:
    """`running_server` for fixtures that stop the server themselves."""
    config = config_for(db, **overrides)
    await prepare(config)
    server = Server(config, clock=clock)
    await server.start()
    return server


async def register_domain(client: Client, name: str = DOMAIN) -> None:
    from cadence.error import DomainAlreadyExistsError

    with contextlib.suppress(DomainAlreadyExistsError):
        await client.domain_stub.RegisterDomain(
            service_domain_pb2.RegisterDomainRequest(
                name=name,
                workflow_execution_retention_period=duration_pb2.Duration(seconds=86400),
            )
        )


@contextlib.asynccontextmanager
async def worker_for(
    client: Client, registry: Registry, task_list: str | None = None
) -> AsyncIterator[Worker]:
    worker = Worker(client, task_list or f"tl-{uuid.uuid4()}", registry)
    async with worker:
        yield worker


async def close_event(
    client: Client, execution: common_pb2.WorkflowExecution, domain: str = DOMAIN
) -> history_pb2.HistoryEvent:
    """Wait for the run to close, the way the client samples do."""
    resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse
    while True:
        resp = await client.workflow_stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=domain,
                workflow_execution=execution,
                wait_for_new_event=True,
                history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
            ),
            timeout=30,
        )
        if resp.history.events:
            return resp.history.events[-1]


async def full_history(
    client: Client, execution: common_pb2.WorkflowExecution, domain: str = DOMAIN
) -> list[history_pb2.HistoryEvent]:
    events: list[history_pb2.HistoryEvent] = []
    token = b""
    while True:
        resp = await client.workflow_stub.GetWorkflowExecutionHistory(
            service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                domain=domain, workflow_execution=execution, next_page_token=token
            )
        )
        events.extend(resp.history.events)
        token = resp.next_page_token
        if not token:
            return events


def event_types(events: list[history_pb2.HistoryEvent]) -> list[str]:
    """Event types as Cadence names them, e.g. 'WorkflowExecutionStarted'."""
    out = []
    for e in events:
        field = e.WhichOneof("attributes") or ""
        name = field.removesuffix("_event_attributes")
        out.append("".join(part.capitalize() for part in name.split("_")))
    return out


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while True:
        if await check():
            return
        if loop.time() > until:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


# -- hand-written workers (raw gRPC) and a ManualClock server ---------------------------------
#
# For what the official worker cannot produce (specific decisions, failing or abandoning a
# task, ByID calls), tests act as a worker themselves through the client's stubs.

RAW_IDENTITY = "raw-worker"


@contextlib.asynccontextmanager
async def manual_clock_client(db: Path) -> AsyncIterator[tuple[Client, ManualClock]]:
    """A server whose timers and timeouts only move when the test advances its clock."""
    clock = ManualClock()
    async with running_server(db, clock) as server:
        c = Client(domain=DOMAIN, target=server.address)
        try:
            await register_domain(c)
            yield c, clock
        finally:
            await c.close()


async def start_raw(
    client: Client,
    task_list: str,
    *,
    workflow_type: str = "RawWorkflow",
    execution_timeout: int = 60,
    task_timeout: int = 10,
) -> common_pb2.WorkflowExecution:
    """Start a run no registered workflow handles: the test is its decider."""
    return await client.start_workflow(
        workflow_type,
        task_list=task_list,
        execution_start_to_close_timeout=timedelta(seconds=execution_timeout),
        task_start_to_close_timeout=timedelta(seconds=task_timeout),
    )


async def poll_decision(
    client: Client, task_list: str, *, within: float = 10.0, identity: str = RAW_IDENTITY
) -> service_worker_pb2.PollForDecisionTaskResponse:
    """Long-poll (3 s calls) until a decision task arrives."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within
    while True:
        resp: service_worker_pb2.PollForDecisionTaskResponse
        resp = await client.worker_stub.PollForDecisionTask(
            service_worker_pb2.PollForDecisionTaskRequest(
                domain=client.domain,
                task_list=tasklist_pb2.TaskList(name=task_list),
                identity=identity,
            ),
            timeout=3,
        )
        if resp.task_token:
            return resp
        if loop.time() > until:
            raise AssertionError(f"no decision task on {task_list}")


async def poll_activity(
    client: Client, task_list: str, *, within: float = 10.0, identity: str = RAW_IDENTITY
) -> service_worker_pb2.PollForActivityTaskResponse:
    """Long-poll (3 s calls) until an activity task arrives."""
    loop = asyncio.get_running_loop()
    until = loop.time() + within
    while True:
        resp: service_worker_pb2.PollForActivityTaskResponse
        resp = await client.worker_stub.PollForActivityTask(
            service_worker_pb2.PollForActivityTaskRequest(
                domain=client.domain,
                task_list=tasklist_pb2.TaskList(name=task_list),
                identity=identity,
            ),
            timeout=3,
        )
        if resp.task_token:
            return resp
        if loop.time() > until:
            raise AssertionError(f"no activity task on {task_list}")


async def respond_decision(
    client: Client,
    task: service_worker_pb2.PollForDecisionTaskResponse,
    *decisions: decision_pb2.Decision,
    force_new: bool = False,
    identity: str = RAW_IDENTITY,
) -> None:
    await client.worker_stub.RespondDecisionTaskCompleted(
        service_worker_pb2.RespondDecisionTaskCompletedRequest(
            task_token=task.task_token,
            decisions=list(decisions),
            identity=identity,
            force_create_new_decision_task=force_new,
        )
    )


def schedule_activity(
    activity_id: str,
    task_list: str,
    *,
    activity_type: str = "raw-activity",
    input: bytes | None = None,
    schedule_to_close: int = 0,
    schedule_to_start: int = 0,
    start_to_close: int = 0,
    heartbeat: int = 0,
    retry: common_pb2.RetryPolicy | None = None,
) -> decision_pb2.Decision:
    """A ScheduleActivityTask decision; a timeout of 0 is left unset."""
    attrs = decision_pb2.ScheduleActivityTaskDecisionAttributes(
        activity_id=activity_id,
        activity_type=common_pb2.ActivityType(name=activity_type),
        task_list=tasklist_pb2.TaskList(name=task_list),
        input=common_pb2.Payload(data=input) if input is not None else None,
        retry_policy=retry,
    )
    for field, seconds in (
        ("schedule_to_close_timeout", schedule_to_close),
        ("schedule_to_start_timeout", schedule_to_start),
        ("start_to_close_timeout", start_to_close),
        ("heartbeat_timeout", heartbeat),
    ):
        if seconds:
            getattr(attrs, field).CopyFrom(duration_pb2.Duration(seconds=seconds))
    return decision_pb2.Decision(schedule_activity_task_decision_attributes=attrs)


def complete_workflow(result: bytes = b"") -> decision_pb2.Decision:
    return decision_pb2.Decision(
        complete_workflow_execution_decision_attributes=(
            decision_pb2.CompleteWorkflowExecutionDecisionAttributes(
                result=common_pb2.Payload(data=result)
            )
        )
    )


async def checked_history(
    client: Client, execution: common_pb2.WorkflowExecution
) -> list[history_pb2.HistoryEvent]:
    """The full history, validated by the engine's history checker."""
    events = await full_history(client, execution)
    check_history(events)
    return events


async def describe(
    client: Client, execution: common_pb2.WorkflowExecution
) -> service_workflow_pb2.DescribeWorkflowExecutionResponse:
    resp: service_workflow_pb2.DescribeWorkflowExecutionResponse
    resp = await client.workflow_stub.DescribeWorkflowExecution(
        service_workflow_pb2.DescribeWorkflowExecutionRequest(
            domain=client.domain, workflow_execution=execution
        )
    )
    return resp
