"""CommandBus: puts commands on their shard's log partition and waits for the reply.

The frontend and the transfer/timer processors talk to shards only through it. A command
carries this node's id and a correlation key; the shard owner hands the reply to the
`ReplySink` of the node named, which resolves the waiting future. In one process the sink is
this bus; a reply for another process goes out over the `NodeChannel` (distributed mode).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from typing import Any, Protocol

from engine.errors import ServiceBusyError, error_from_kind
from engine.ids import shard_for
from engine.model.commands import Command, Reply, encode_command
from engine.queues.channel import NodeChannel
from engine.queues.protocols import TaskLog
from engine.routing.topics import COMMAND_TOPIC


class ReplySink(Protocol):
    async def send_reply(self, node_id: str, reply: Reply) -> None: ...


class CommandBus:
    def __init__(
        self,
        log: TaskLog,
        num_shards: int,
        node_id: str,
        timeout: float = 30.0,
        channel: NodeChannel | None = None,
    ) -> None:
        self.log = log
        self.channel = channel
        self.num_shards = num_shards
        self.node_id = node_id
        self.timeout = timeout
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._seq = itertools.count()
        # Keys of an earlier life of this node id (a restart) must never match ours.
        self._boot = secrets.token_hex(4)

    def new_key(self) -> str:
        """A correlation key that names this node: `node_of(key) == self.node_id`."""
        return f"{self._boot}.{next(self._seq)}@{self.node_id}"

    @staticmethod
    def node_of(key: str) -> str:
        return key.partition("@")[2]

    def expect(self, key: str) -> asyncio.Future[Reply]:
        """A future the reply for `key` will resolve; the caller must `forget(key)` after."""
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        return fut

    def forget(self, key: str) -> None:
        self._waiting.pop(key, None)

    def waiting(self, key: str) -> bool:
        fut = self._waiting.get(key)
        return fut is not None and not fut.done()

    def shard_of(self, workflow_id: str) -> int:
        return shard_for(workflow_id, self.num_shards)

    async def call(self, cmd: Command, timeout: float | None = None) -> dict[str, Any]:
        """Apply `cmd` on its shard; return the reply values or raise the typed error."""
        key = self.new_key()
        cmd.reply_to = self.node_id
        cmd.reply_key = key
        fut = self.expect(key)
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
            self.forget(key)
        if not reply.ok:
            raise error_from_kind(reply.error_kind, reply.error_message, **reply.error_fields)
        return reply.values

    async def post(self, cmd: Command) -> None:
        """Put `cmd` on its shard's log without waiting for it to be applied."""
        await self.log.produce(COMMAND_TOPIC, self.shard_of(cmd.workflow_id), [encode_command(cmd)])

    async def send_reply(self, node_id: str, reply: Reply) -> None:
        """ReplySink: hand the reply to the waiter here, or to node `node_id` over the channel."""
        if node_id == self.node_id:
            self.deliver(reply)
        elif self.channel is not None:
            self.channel.send_reply(node_id, reply)
        # Otherwise the caller was a process that no longer exists (or a channel-less
        # process): nobody waits, and its client retries with the same request id.

    def deliver(self, reply: Reply) -> None:
        """Resolve the local waiter of `reply`, if it still waits."""
        fut = self._waiting.get(reply.key)
        if fut is not None and not fut.done():
            fut.set_result(reply)
