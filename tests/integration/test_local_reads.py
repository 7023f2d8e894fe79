"""Reads served by the shard owner in the same process, instead of the store.

- A timer of a run the local shard owner knows to be closed is dropped by the timer processor
  (no TIMER_FIRED command), while the timers of an open run still fire.
- A frontend in the owner's process reads a run as last *written*, never a batch's changes
  before its write is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cadence import Client
from cadence.api.v1 import decision_pb2

from engine.clock import ManualClock
from engine.errors import PersistenceError
from engine.ids import shard_for
from engine.queues.inprocess import InProcessTaskLog
from engine.routing.topics import COMMAND_TOPIC
from engine.server import Server
from tests.e2e.harness import (
    DOMAIN,
    event_types,
    eventually,
    full_history,
    poll_decision,
    register_domain,
    respond_decision,
    running_server,
    start_raw,
)


@contextlib.asynccontextmanager
async def manual_server(db: Path) -> AsyncIterator[tuple[Server, Client, ManualClock]]:
    clock = ManualClock()
    async with running_server(db, clock) as server:
        client = Client(domain=DOMAIN, target=server.address)
        try:
            await register_domain(client)
            yield server, client, clock
        finally:
            await client.close()


def _complete() -> decision_pb2.Decision:
    return decision_pb2.Decision(
        complete_workflow_execution_decision_attributes=(
            decision_pb2.CompleteWorkflowExecutionDecisionAttributes()
        )
    )


async def _timers_left(server: Server, shard: int) -> int:
    return len(await server.store.due_timers(shard, 2**62, 1000))


async def test_timers_of_a_closed_run_never_become_commands(tmp_path: Path) -> None:
    async with manual_server(tmp_path / "c.db") as (server, client, clock):
        log = server.task_log
        assert isinstance(log, InProcessTaskLog)
        tl = "closed-tl"
        execution = await start_raw(client, tl, execution_timeout=60, task_timeout=10)
        shard = shard_for(execution.workflow_id, server.config.num_shards)
        task = await poll_decision(client, tl)
        await respond_decision(client, task, _complete())
        # The run is closed; its decision-timeout and workflow-timeout timers are pending.
        await eventually(lambda: _has_timers(server, shard))
        before = log.end_offset(COMMAND_TOPIC, shard)
        clock.advance(120)
        await eventually(lambda: _no_timers(server, shard))
        await asyncio.sleep(0.2)
        assert log.end_offset(COMMAND_TOPIC, shard) == before


async def test_timers_of_an_open_run_still_fire(tmp_path: Path) -> None:
    async with manual_server(tmp_path / "o.db") as (server, client, clock):
        log = server.task_log
        assert isinstance(log, InProcessTaskLog)
        tl = "open-tl"
        execution = await start_raw(client, tl, execution_timeout=600, task_timeout=10)
        shard = shard_for(execution.workflow_id, server.config.num_shards)
        await poll_decision(client, tl)  # started, never answered: it must time out
        await eventually(lambda: _has_timers(server, shard))
        before = log.end_offset(COMMAND_TOPIC, shard)
        clock.advance(11)

        async def timed_out() -> bool:
            types = event_types(await full_history(client, execution))
            return "DecisionTaskTimedOut" in types

        await eventually(timed_out)
        assert log.end_offset(COMMAND_TOPIC, shard) > before


async def test_a_local_read_never_sees_a_write_that_failed(tmp_path: Path) -> None:
    async with manual_server(tmp_path / "f.db") as (server, client, _clock):
        tl = "fail-tl"
        # No decision in flight, so the signal goes straight into history (not the buffer).
        execution = await start_raw(client, tl)
        shard = shard_for(execution.workflow_id, server.config.num_shards)
        written = await server.store.get_run(
            shard, await _domain_id(server), execution.workflow_id, execution.run_id
        )
        assert written is not None
        store = server.store

        async def failing(write: object) -> None:
            raise PersistenceError("injected: the store is unavailable")

        # The next write fails: a signal is applied in memory, then its write is refused.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(store, "write_shard", failing)
            signal = asyncio.ensure_future(
                client.signal_workflow(execution.workflow_id, execution.run_id, "s", "x")
            )
            await asyncio.sleep(0.5)
            view = server.shards
            assert view is not None
            raw = view.run_state(
                shard, (await _domain_id(server), execution.workflow_id, execution.run_id)
            )
            # Either nothing (the engine dropped its views) or exactly what the store holds.
            assert raw is None or raw == written.state
        await asyncio.wait_for(signal, 30)
        types = event_types(await full_history(client, execution))
        assert types.count("WorkflowExecutionSignaled") == 1


async def _has_timers(server: Server, shard: int) -> bool:
    return await _timers_left(server, shard) > 0


async def _no_timers(server: Server, shard: int) -> bool:
    return await _timers_left(server, shard) == 0


async def _domain_id(server: Server) -> str:
    record = await server.store.get_domain(name=DOMAIN)
    assert record is not None
    return record.id
