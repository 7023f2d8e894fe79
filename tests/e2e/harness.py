"""End-to-end harness: an in-process Cadenza server driven by the official Python client."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from cadence import Client, Registry
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_domain_pb2,
    service_workflow_pb2,
)
from cadence.worker import Worker
from google.protobuf import duration_pb2

from engine.config import EngineConfig
from engine.server import Server

DOMAIN = "test-domain"


def config_for(db: Path, **overrides: Any) -> EngineConfig:
    return EngineConfig(persistence_url=f"sqlite:///{db}", port=0, **overrides)


@contextlib.asynccontextmanager
async def running_server(db: Path, **overrides: Any) -> AsyncIterator[Server]:
    server = Server(config_for(db, **overrides))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


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
