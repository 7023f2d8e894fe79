"""Shard loop under injected store faults: a command that can never be written is answered
with an error and skipped, and the rest of the shard goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cadence.api.v1 import common_pb2, service_workflow_pb2, tasklist_pb2
from google.protobuf import duration_pb2

from engine.clock import SystemClock
from engine.errors import ConditionFailedError, InternalServiceError
from engine.history.bus import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC, CommandBus
from engine.model.commands import Command, CommandKind
from engine.persistence.protocols import ShardWrite
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.inprocess import InProcessTaskLog
from engine.shards.controller import ShardController

POISON = "poison-wf"


class PoisonStore(SqliteStore):
    """Fault injection: every write that touches the poison workflow fails the same way."""

    async def write_shard(self, write: ShardWrite) -> None:
        if any(run.workflow_id == POISON for run in write.runs):
            raise ConditionFailedError("injected: condition never holds")
        await super().write_shard(write)


def _start(workflow_id: str) -> Command:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain="d",
        workflow_id=workflow_id,
        workflow_type=common_pb2.WorkflowType(name="t"),
        task_list=tasklist_pb2.TaskList(name="tl"),
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=60),
        task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
        request_id="6f1a8d1e-2b7c-4a55-9a43-0d6a1c1b2c3d",
    )
    return Command(
        kind=CommandKind.START,
        domain_id="domain-id",
        workflow_id=workflow_id,
        request=req.SerializeToString(),
    )


async def test_a_command_that_always_fails_is_skipped_and_the_shard_goes_on(
    tmp_path: Path,
) -> None:
    store = PoisonStore(str(tmp_path / "c.db"))
    await store.start()
    log = InProcessTaskLog(store, {COMMAND_TOPIC: 1, TRANSFER_TOPIC: 1, TIMER_TOPIC: 1})
    await log.start()
    bus = CommandBus(log, 1, "node", timeout=30)
    controller = ShardController(store, log, bus, SystemClock(), "node", frozenset())
    await controller.start()
    try:
        poisoned = asyncio.ensure_future(bus.call(_start(POISON)))
        good = asyncio.ensure_future(bus.call(_start("good-wf")))
        with pytest.raises(InternalServiceError, match="could not apply"):
            await poisoned
        values = await good
        assert values["run_id"]
        assert await store.get_current_run(0, "domain-id", "good-wf") is not None
        assert await store.get_current_run(0, "domain-id", POISON) is None
        shard = await store.get_shard(0)
        assert shard is not None
        assert shard.applied_offset == 2  # both commands are behind the shard now
    finally:
        await controller.stop()
        await log.stop()
        await store.stop()
