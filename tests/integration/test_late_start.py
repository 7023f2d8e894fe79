"""A start recorded after its poller gave up is refused, so the task is not left started for
nobody: the next poller gets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cadence import Client

from engine.errors import ServiceBusyError
from engine.model.commands import Command, CommandKind
from tests.e2e.harness import (
    DOMAIN,
    event_types,
    full_history,
    poll_decision,
    register_domain,
    running_server,
    start_raw,
)


async def test_a_start_whose_poller_gave_up_is_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path / "c.db") as server:
        client = Client(domain=DOMAIN, target=server.address)
        try:
            await register_domain(client)
            execution = await start_raw(client, "late-tl")
            domain = await server.store.get_domain(name=DOMAIN)
            assert domain is not None
            late = Command(
                kind=CommandKind.RECORD_DECISION_STARTED,
                domain_id=domain.id,
                workflow_id=execution.workflow_id,
                run_id=execution.run_id,
                args={
                    "schedule_id": 2,
                    "attempt": 0,
                    "request_id": "late-request",
                    "identity": "gone",
                    "expires_ns": server.clock.now_ns() - 1,
                },
            )
            with pytest.raises(ServiceBusyError, match="poller gave up"):
                await server.bus.call(late)
            assert event_types(await full_history(client, execution)) == [
                "WorkflowExecutionStarted",
                "DecisionTaskScheduled",
            ]
            task = await poll_decision(client, "late-tl")
            assert task.started_event_id == 3
        finally:
            await client.close()
