"""`KafkaNodeChannel` on the broker of `deploy/local-cluster` (it must be up): replies reach
the node they are addressed to and no other, run-change notices reach every node, and a
`CommandBus` answers a caller in another process's bus through it."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest

from engine.model.commands import Command, CommandKind, Reply, decode_command
from engine.queues.channel import RunChange
from engine.queues.kafka import KafkaTaskLog
from engine.queues.kafka_channel import CHANNEL_TOPICS, KafkaNodeChannel, reply_partition
from engine.routing.bus import CommandBus
from engine.routing.topics import COMMAND_TOPIC
from engine.routing.watch import RunWatcher

KAFKA = f"127.0.0.1:{os.environ.get('LOCAL_CLUSTER_KAFKA_PORT', '9092')}"


@pytest.fixture
async def kafka() -> AsyncIterator[KafkaTaskLog]:
    url = f"kafka://{KAFKA}/cadenza-channel-{uuid.uuid4().hex[:12]}"
    log = KafkaTaskLog(url, {COMMAND_TOPIC: 1, **CHANNEL_TOPICS})
    await log.start()
    yield log
    await log.stop()
    await log.delete_topics()


class Node:
    def __init__(self, log: KafkaTaskLog, node_id: str) -> None:
        self.channel = KafkaNodeChannel(log, node_id)
        self.replies: asyncio.Queue[Reply] = asyncio.Queue()
        self.changes: asyncio.Queue[list[RunChange]] = asyncio.Queue()

    async def start(self) -> Node:
        await self.channel.start(self.replies.put_nowait, self.changes.put_nowait)
        return self


def _nodes_sharing_a_partition() -> tuple[str, str]:
    """Two node ids whose replies land on the same partition (each must filter its own)."""
    first = "node-a"
    for i in range(1000):
        other = f"node-b{i}"
        if reply_partition(other) == reply_partition(first):
            return first, other
    raise AssertionError("no colliding node id found")


async def test_a_reply_reaches_its_node_only_even_on_a_shared_partition(
    kafka: KafkaTaskLog,
) -> None:
    a_id, b_id = _nodes_sharing_a_partition()
    a, b = await Node(kafka, a_id).start(), await Node(kafka, b_id).start()
    sender = await Node(kafka, "sender").start()
    try:
        sender.channel.send_reply(b_id, Reply(key="k1", values={"x": 1}))
        sender.channel.send_reply(a_id, Reply(key="k2", ok=False, error_message="no"))
        got_b = await asyncio.wait_for(b.replies.get(), 10)
        got_a = await asyncio.wait_for(a.replies.get(), 10)
        assert (got_b.key, got_b.values) == ("k1", {"x": 1})
        assert (got_a.key, got_a.ok, got_a.error_message) == ("k2", False, "no")
        # Nothing else arrives at either (each got exactly its own).
        sender.channel.send_reply(b_id, Reply(key="k3"))
        assert (await asyncio.wait_for(b.replies.get(), 10)).key == "k3"
        assert a.replies.empty()
    finally:
        for node in (a, b, sender):
            await node.channel.stop()


async def test_run_changes_reach_every_node(kafka: KafkaTaskLog) -> None:
    nodes = [await Node(kafka, f"n{i}").start() for i in range(3)]
    try:
        change = RunChange("d", "wf", "run", 7, False)
        nodes[0].channel.publish_changes([change])
        for node in nodes:
            assert await asyncio.wait_for(node.changes.get(), 10) == [change]
    finally:
        for node in nodes:
            await node.channel.stop()


async def test_a_bus_caller_is_answered_by_a_shard_owner_in_another_bus(
    kafka: KafkaTaskLog,
) -> None:
    """The path of a command in distributed mode, minus the shard: the frontend's bus puts the
    command on the log; the owner (another bus, another channel) replies over the channel."""
    front = CommandBus(kafka, 1, "frontend-node", timeout=20)
    owner = CommandBus(kafka, 1, "history-node")
    front_node, owner_node = Node(kafka, "frontend-node"), Node(kafka, "history-node")
    front.channel, owner.channel = front_node.channel, owner_node.channel
    await front_node.channel.start(front.deliver, lambda changes: None)
    await owner_node.channel.start(owner.deliver, lambda changes: None)
    start = await kafka.end_offset(COMMAND_TOPIC, 0)

    async def shard_owner() -> None:
        consumer = ShardOwnerReader(kafka)
        record = await consumer.first_from(start)
        cmd = decode_command(record)
        await owner.send_reply(cmd.reply_to, Reply(key=cmd.reply_key, values={"run_id": "r1"}))

    task = asyncio.create_task(shard_owner())
    try:
        values = await front.call(Command(kind=CommandKind.SIGNAL, domain_id="d", workflow_id="wf"))
        assert values == {"run_id": "r1"}
        await task
    finally:
        task.cancel()
        await front_node.channel.stop()
        await owner_node.channel.stop()


async def test_watchers_in_other_processes_wake_on_the_change_they_wait_for(
    kafka: KafkaTaskLog,
) -> None:
    here, there = Node(kafka, "here"), Node(kafka, "there")
    local = RunWatcher(here.channel)
    remote = RunWatcher(there.channel)
    await here.channel.start(lambda reply: None, local.notify)
    await there.channel.start(lambda reply: None, remote.notify)
    key = ("d", "wf", "run")
    try:
        closed = asyncio.create_task(remote.wait(key, 30, lambda c: not c.is_open))
        await asyncio.sleep(0.2)
        local.announce([RunChange(*key, 5, True)])  # an event, not the close
        await asyncio.sleep(0.5)
        assert not closed.done()
        local.announce([RunChange(*key, 9, False)])
        await asyncio.wait_for(closed, 10)
    finally:
        await here.channel.stop()
        await there.channel.stop()


class ShardOwnerReader:
    """Reads the command topic through the product's consumer, as a shard owner does: it joins
    a group, is assigned partition 0 and seeks to where it means to start."""

    def __init__(self, log: KafkaTaskLog) -> None:
        self.assigned = asyncio.Event()
        self.consumer = log.consumer(COMMAND_TOPIC, f"owner-{uuid.uuid4()}", self)

    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        self.assigned.clear()

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        self.assigned.set()

    async def first_from(self, offset: int) -> bytes:
        await self.consumer.start()
        try:
            await asyncio.wait_for(self.assigned.wait(), 30)
            self.consumer.seek(0, offset)
            while True:
                for records in (await self.consumer.getmany([0], max_records=1)).values():
                    for record in records:
                        return record.value
        finally:
            await self.consumer.stop()
