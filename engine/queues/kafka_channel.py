"""`KafkaNodeChannel`: replies and run-change notices between `cadenza serve` processes.

The `NodeChannel` of distributed mode, on two topics of the cluster's `KafkaTaskLog`:

- `cadenza-replies` (REPLY_PARTITIONS partitions). A node reads one partition, chosen by the
  stable hash of its node id, from its end onwards, and keeps the replies addressed to it (a
  partition may be shared by several nodes). No consumer group: a reply is only of use to the
  process that is waiting for it now, so a restarted node starts at the end, not where a
  predecessor stopped.
- `cadenza-run-changes` (one partition). Every node reads all of it from its end: one record
  per group commit, listing the runs it changed.

Sending is fire and forget: messages go to a queue that one task drains into `produce`, so a
slow or unreachable broker never stalls a shard's apply loop. When the queue is full the oldest
messages are dropped (their callers time out and retry; see `engine.queues.channel`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from engine.ids import shard_for
from engine.model.commands import Reply
from engine.queues.channel import ChangesHandler, ReplyHandler, RunChange
from engine.queues.kafka import KafkaTaskLog

log = structlog.get_logger(__name__)

REPLY_TOPIC = "cadenza-replies"
CHANGES_TOPIC = "cadenza-run-changes"
REPLY_PARTITIONS = 16
CHANNEL_TOPICS = {REPLY_TOPIC: REPLY_PARTITIONS, CHANGES_TOPIC: 1}
# Messages waiting to be produced before the oldest are dropped.
MAX_QUEUED = 20_000


class _Envelope(msgspec.Struct, array_like=True):
    node_id: str
    reply: Reply


_ENC = msgspec.msgpack.Encoder()
_ENVELOPE = msgspec.msgpack.Decoder(_Envelope)
_CHANGES = msgspec.msgpack.Decoder(list[RunChange])


def reply_partition(node_id: str) -> int:
    return shard_for(node_id, REPLY_PARTITIONS)


class KafkaNodeChannel:
    """See the module docstring. The log must have been opened with `CHANNEL_TOPICS`."""

    def __init__(self, task_log: KafkaTaskLog, node_id: str) -> None:
        self._log = task_log
        self.node_id = node_id
        self._queue: deque[tuple[str, int, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._consumers: list[Any] = []
        self._dropped = 0

    async def start(self, on_reply: ReplyHandler, on_changes: ChangesHandler) -> None:
        mine = reply_partition(self.node_id)

        def replies(value: bytes) -> None:
            envelope = _ENVELOPE.decode(value)
            if envelope.node_id == self.node_id:
                on_reply(envelope.reply)

        def changes(value: bytes) -> None:
            on_changes(_CHANGES.decode(value))

        for topic, partition, handle in (
            (REPLY_TOPIC, mine, replies),
            (CHANGES_TOPIC, 0, changes),
        ):
            consumer = await self._tail(topic, partition)
            self._consumers.append(consumer)
            self._tasks.append(asyncio.create_task(self._read(consumer, handle)))
        self._tasks.append(asyncio.create_task(self._send_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for consumer in self._consumers:
            with contextlib.suppress(KafkaError):
                await consumer.stop()
        self._consumers.clear()

    def send_reply(self, node_id: str, reply: Reply) -> None:
        self._put(REPLY_TOPIC, reply_partition(node_id), _ENC.encode(_Envelope(node_id, reply)))

    def publish_changes(self, changes: Sequence[RunChange]) -> None:
        if changes:
            self._put(CHANGES_TOPIC, 0, _ENC.encode(list(changes)))

    # -- internals -------------------------------------------------------------------------

    def _put(self, topic: str, partition: int, value: bytes) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped % 1000 == 1:
                log.warning("node_channel_dropping", dropped=self._dropped)
        self._queue.append((topic, partition, value))
        self._wake.set()

    async def _send_loop(self) -> None:
        backoff = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                # Everything queued now goes out together, grouped per partition.
                grouped: dict[tuple[str, int], list[bytes]] = {}
                while self._queue:
                    topic, partition, value = self._queue.popleft()
                    grouped.setdefault((topic, partition), []).append(value)
                results = await asyncio.gather(
                    *(self._log.produce(t, p, vs) for (t, p), vs in grouped.items()),
                    return_exceptions=True,
                )
                failed = [r for r in results if isinstance(r, BaseException)]
                if failed:
                    # Lost: the waiting callers time out and retry (best effort by design).
                    log.warning("node_channel_send_failed", error=repr(failed[0]))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                else:
                    backoff = 0.05

    async def _tail(self, topic: str, partition: int) -> Any:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._log.servers,
            client_id=f"{self._log.client_id}-channel",
            group_id=None,
            enable_auto_commit=False,
            # The broker answers a fetch as soon as a record arrives; this only bounds how
            # long an idle fetch is held.
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=self._log.max_message_bytes,
        )
        await consumer.start()
        tp = TopicPartition(self._log.kafka_name(topic), partition)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        # Resolve the end offset now, so nothing sent after start() returns is skipped.
        await consumer.position(tp)
        return consumer

    async def _read(self, consumer: Any, handle: Any) -> None:
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
            except KafkaError as exc:
                log.warning("node_channel_read_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for records in batch.values():
                for record in records:
                    try:
                        handle(cast(bytes, record.value))
                    except (msgspec.DecodeError, ValueError, TypeError):
                        log.warning("node_channel_bad_message", offset=record.offset)
