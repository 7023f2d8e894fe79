"""CommandBus: puts commands on their shard's log partition and waits for the reply.

The frontend and the transfer/timer processors talk to shards only through it. A command
carries this node's id and a correlation key; the shard owner hands the reply to the
`ReplySink` of the node named, which resolves the waiting future. In one process the sink is
this bus; across processes a reply transport (Kafka reply topic) plugs in as the sink.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Protocol

from engine.errors import ServiceBusyError, error_from_kind
from engine.ids import shard_for
from engine.model.commands import Command, Reply, encode_command
from engine.queues.protocols import TaskLog

COMMAND_TOPIC = "cadenza-commands"
TRANSFER_TOPIC = "cadenza-transfer"
TIMER_TOPIC = "cadenza-timer"


class ReplySink(Protocol):
    async def send_reply(self, node_id: str, reply: Reply) -> None: ...


class CommandBus:
    def __init__(self, log: TaskLog, num_shards: int, node_id: str, timeout: float = 30.0) -> None:
        self.log = log
        self.num_shards = num_shards
        self.node_id = node_id
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._seq = itertools.count()

    def shard_of(self, workflow_id: str) -> int:
        return shard_for(workflow_id, self.num_shards)

    async def call(self, cmd: Command, timeout: float | None = None) -> dict[str, Any]:
        """Apply `cmd` on its shard; return the reply values or raise the typed error."""
        key = f"{self.node_id}:{next(self._seq)}"
        cmd.reply_to = self.node_id
        cmd.reply_key = key
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            await self.log.produce(
                COMMAND_TOPIC, self.shard_of(cmd.workflow_id), [encode_command(cmd)]
            )
            try:
                reply = await asyncio.wait_for(fut, timeout or self.timeout)
            except TimeoutError:
                # The command is durable and may still be applied; the client retries with
                # the same request id, which the shard dedupes.
                raise ServiceBusyError(
                    "Timed out waiting for the shard to apply the request."
                ) from None
        finally:
            self._waiting.pop(key, None)
        if not reply.ok:
            raise error_from_kind(reply.error_kind, reply.error_message, **reply.error_fields)
        return reply.values

    async def post(self, cmd: Command) -> None:
        """Put `cmd` on its shard's log without waiting for it to be applied."""
        await self.log.produce(COMMAND_TOPIC, self.shard_of(cmd.workflow_id), [encode_command(cmd)])

    async def send_reply(self, node_id: str, reply: Reply) -> None:
        """ReplySink for this process: resolve the local waiter, if it still waits."""
        fut = self._waiting.get(reply.key)
        if fut is not None and not fut.done():
            fut.set_result(reply)
