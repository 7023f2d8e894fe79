"""`KafkaTaskLog`: the distributed partitioned log, on Apache Kafka through aiokafka.

The `TaskLog` of distributed mode (the embedded one is `InProcessTaskLog`). It passes the same
conformance suite; where Kafka and the in-process log differ, this is how the protocol maps:

- URL `kafka://host:9092[,host2:9092][/namespace]`. A namespace prefixes every Kafka topic and
  consumer group (`namespace.commands`), so several clusters or test runs share one broker;
  `Record.topic` is always the engine's topic name, without the prefix.
- `start()` creates missing topics with the configured partition counts and refuses topics
  whose count differs: a shard is a partition, so a silent mismatch would move workflows.
- `produce` is acknowledged by every in-sync replica (`acks=all`, idempotent producer) before
  it returns. Calls for one partition queue behind the batch in flight and go out together as
  one record batch (group commit, like the in-process log's transaction), so a call's records
  are contiguous, in call order, and written all-or-nothing unless one call alone is larger
  than a batch. A failed produce (a broker restart, say) may or may not have been written;
  the producer is replaced before the next send, since aiokafka's idempotent producer does
  not get over a failed batch on its own.
- One `AIOKafkaConsumer` per `consumer()`, committing explicitly, reading committed data only.
  aiokafka speaks Kafka's *eager* rebalance protocol: a member gives up all of its partitions
  before it rejoins, and learns what it gets back only once everyone has. A listener therefore
  hears "revoke everything" and then "assign the new set" on every rebalance, not just the
  change. Reporting only the change would mean keeping partitions through the join while
  another member may already be assigned them, which breaks "every revoke before any assign".
  `on_partitions_assigned` runs in a task of its own (aiokafka does not heartbeat during its
  callback, so a slow acquire would get the member dropped); the partitions are served once
  it returned, and the next revoke waits for it.
- A member stays in its group while its process heartbeats. aiokafka's poll-interval liveness
  (leave the group when `getmany` is not called) is switched off: a member that owns nothing,
  or whose loops are busy, must not drop out.
- Kafka decides membership in the broker, so the other members of a group live in other
  processes and their rebalances finish on their own time. For members of one group in *this*
  `KafkaTaskLog`, `start()` and `stop()` additionally wait (bounded) until those siblings have
  finished the rebalance the call caused, which is what the in-process log guarantees.
- Retention is the broker's business (there is no `trim()`); a new group starts at the
  earliest record still kept.

Driver exceptions become `PersistenceError` (connection, produce, fetch, commit failures) or
`ShardOwnershipLostError` (a commit for a partition this member no longer owns).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import structlog
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerStoppedError,
    OffsetAndMetadata,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    for_code,
)

from engine.errors import ConfigMismatchError, PersistenceError, ShardOwnershipLostError
from engine.queues.protocols import RebalanceListener, Record

log = structlog.get_logger(__name__)

__all__ = ["KafkaConsumer", "KafkaTaskLog"]

DEFAULT_PORT = 9092
_LEGAL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_TOPIC_ALREADY_EXISTS = 36
_UNKNOWN_TOPIC = 3
# Upper bounds of the record-batch framing (v2 header) and of one record's framing (length,
# attributes, timestamp and offset deltas, key and value lengths, header count), so a batch is
# closed before it overflows and a produce call never straddles two batches by accident.
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 32
# aiokafka leaves the group when `getmany` is idle this long; ~24 days means "never" (int32 ms).
_NO_POLL_LIVENESS_MS = 2**31 - 1
# After a failed producer replacement (broker down), produces fail at once for this long.
_RENEW_BACKOFF_S = 0.5


def parse_kafka_url(url: str) -> tuple[list[str], str]:
    """Split `kafka://h1:9092,h2/namespace` into bootstrap servers and the namespace.

    Raises:
        ValueError: not a kafka:// URL, no broker, a query string, or an illegal namespace.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "kafka" or not parts.netloc:
        raise ValueError(f"not a kafka URL: {url!r} (expected kafka://host:port[/namespace])")
    if parts.query or parts.fragment:
        raise ValueError(f"kafka URL {url!r}: query strings and fragments are not supported")
    servers: list[str] = []
    for host in parts.netloc.split(","):
        host = host.strip()
        if not host:
            raise ValueError(f"kafka URL {url!r}: empty broker address")
        # "[::1]:9092" keeps its colons inside the brackets; a bare host gets the default port.
        if ":" not in host.rpartition("]")[2]:
            host = f"{host}:{DEFAULT_PORT}"
        servers.append(host)
    namespace = parts.path.strip("/")
    if namespace and not _LEGAL_NAME.match(namespace):
        raise ValueError(
            f"kafka URL {url!r}: namespace may only use letters, digits, '.', '_', '-'"
        )
    return servers, namespace


@dataclass(eq=False, slots=True)
class _Produce:
    values: list[bytes]
    done: asyncio.Future[int]


@dataclass(eq=False, slots=True)
class _Outbox:
    """Produce calls for one partition waiting for the batch in flight to be acknowledged."""

    name: str
    partition: int
    pending: list[_Produce] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None


class _Notifier:
    """Wakes every waiter at once; a waiter arms before it looks, so no wake is lost."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def arm(self) -> asyncio.Future[None]:
        if self._future is None or self._future.done():
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def notify(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)
        self._future = None


class KafkaTaskLog:
    """A partitioned log on Kafka topics (see the module docstring).

    Args:
        url: `kafka://host:port[,host:port...][/namespace]`.
        topics: partition count per engine topic; existing Kafka topics must match exactly.
        client_id: the Kafka client id (shows up in broker logs and quotas).
        replication_factor: for topics this log creates; default min(3, brokers).
        session_timeout_ms: a member that stops heartbeating is dropped after this long (the
            broker's `group.min.session.timeout.ms`, 6 s by default, is the floor).
        heartbeat_interval_ms: how often members heartbeat; also how soon a member notices
            that a rebalance started, which dominates how fast a join or leave settles.
        rebalance_timeout_ms: how long the broker waits for members to rejoin, i.e. for their
            `on_partitions_revoked` to finish.
        request_timeout_ms: per request to a broker, including a produce's acknowledgement.
        max_message_bytes: the largest record (batch) the log takes. Commands carry payloads
            up to the API's limits, beyond the broker's 1 MiB default, so topics this log
            creates get it as `max.message.bytes`, and consumers fetch that much per partition
            (aiokafka skips a record it cannot fetch whole).
        max_batch_bytes: how many bytes of produce calls one batch gathers per partition.
        linger_ms: how long the producer holds a batch before sending it. 0: calls already
            coalesce while the previous batch of their partition is in flight.
    """

    def __init__(
        self,
        url: str,
        topics: Mapping[str, int],
        *,
        client_id: str = "cadenza",
        replication_factor: int | None = None,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 100,
        rebalance_timeout_ms: int = 30000,
        request_timeout_ms: int = 30000,
        max_message_bytes: int = 16 * 1024 * 1024,
        max_batch_bytes: int = 512 * 1024,
        linger_ms: int = 0,
    ) -> None:
        self._servers, self._namespace = parse_kafka_url(url)
        for topic, count in topics.items():
            if count < 1:
                raise ValueError(f"topic {topic!r} needs at least one partition, got {count}")
            if not _LEGAL_NAME.match(topic):
                raise ValueError(f"topic {topic!r}: only letters, digits, '.', '_', '-' allowed")
        self._topics = dict(topics)
        self.client_id = client_id
        self._replication_factor = replication_factor
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.max_message_bytes = max_message_bytes
        self._max_batch_bytes = min(max_batch_bytes, max_message_bytes)
        self._linger_ms = linger_ms
        self._producer: Any = None
        # Set when a produce failed: the producer is replaced before the next send (see
        # `_live_producer`). Replaced producers finish their last batches in `_retiring`.
        self._renew_producer = False
        self._renewing = asyncio.Lock()
        # Loop time before which a failed replacement is not tried again: while the broker is
        # down, callers fail at once instead of each trying to bootstrap a producer in turn.
        self._renew_not_before = 0.0
        self._retiring: set[asyncio.Task[None]] = set()
        self._offsets_reader: Any = None
        self._outboxes: dict[tuple[str, int], _Outbox] = {}
        self._members: list[KafkaConsumer] = []
        self._settled: asyncio.Condition | None = None

    @property
    def servers(self) -> str:
        return ",".join(self._servers)

    def kafka_name(self, name: str) -> str:
        """The Kafka name of an engine topic or group (with the URL's namespace)."""
        return f"{self._namespace}.{name}" if self._namespace else name

    async def start(self) -> None:
        if self._producer is not None:
            return
        self._settled = asyncio.Condition()
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._servers,
            client_id=self.client_id,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await admin.start()
            await self._ensure_topics(admin)
        except KafkaError as exc:
            raise _translate("start", self.servers, exc) from exc
        finally:
            await admin.close()
        self._producer = await self._start_producer("producer start")
        self._renew_producer = False

    async def stop(self) -> None:
        if self._producer is None:
            return
        members = list(self._members)
        # All leave together: none of them waits for the others to take its partitions.
        for member in members:
            member._closing = True
        await asyncio.gather(*(m.stop() for m in members))
        # Drain: every produce accepted before stop() gets its answer.
        flushers = [box.flusher for box in self._outboxes.values() if box.flusher is not None]
        await asyncio.gather(*(asyncio.shield(f) for f in flushers), return_exceptions=True)
        producer, self._producer = self._producer, None
        with contextlib.suppress(KafkaError):
            await producer.stop()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._offsets_reader is not None:
            reader, self._offsets_reader = self._offsets_reader, None
            with contextlib.suppress(KafkaError):
                await reader.stop()
        self._outboxes.clear()

    def partitions(self, topic: str) -> int:
        try:
            return self._topics[topic]
        except KeyError:
            raise ValueError(f"unknown topic {topic!r}") from None

    async def produce(self, topic: str, partition: int, values: Sequence[bytes]) -> int:
        box = self._outbox(topic, partition)
        if not values:
            return await self.end_offset(topic, partition) - 1
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        box.pending.append(_Produce(list(values), done))
        if box.flusher is None or box.flusher.done():
            # Started as a task, it first runs on the next loop iteration: every produce made
            # in this iteration for the partition goes out in the same batch.
            box.flusher = asyncio.create_task(self._flush(box), name=f"kafka-produce-{box.name}")
        return await done

    async def end_offset(self, topic: str, partition: int) -> int:
        """The next offset the partition will hand out (its high watermark), from the broker."""
        self._outbox(topic, partition)
        if self._offsets_reader is None:
            # A group-less consumer: the only public aiokafka API that lists end offsets.
            reader = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                client_id=self.client_id,
                request_timeout_ms=self.request_timeout_ms,
            )
            try:
                await reader.start()
            except KafkaError as exc:
                await reader.stop()
                raise _translate("offset lookup", self.servers, exc) from exc
            self._offsets_reader = reader
        tp = TopicPartition(self.kafka_name(topic), partition)
        try:
            ends = await self._offsets_reader.end_offsets([tp])
        except KafkaError as exc:
            raise _translate("offset lookup", self.servers, exc) from exc
        return int(ends[tp])

    def consumer(self, topic: str, group: str, listener: RebalanceListener) -> KafkaConsumer:
        self.partitions(topic)
        return KafkaConsumer(self, topic, group, listener)

    async def delete_topics(self) -> None:
        """Delete this log's Kafka topics and everything in them (test and teardown tooling).

        Missing topics are ignored. The log may be stopped or never started.
        """
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self._servers,
            client_id=self.client_id,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            names = [n for n in map(self.kafka_name, self._topics) if n in existing]
            if names:
                response = (await admin.delete_topics(names)).to_object()
                for item in response.get("topic_error_codes", []):
                    code = item.get("error_code", 0)
                    if code not in (0, _UNKNOWN_TOPIC):
                        raise for_code(code)(f"deleting {item.get('topic')}")
        except KafkaError as exc:
            raise _translate("delete topics", self.servers, exc) from exc
        finally:
            await admin.close()

    # --- internals --------------------------------------------------------------------------

    def _outbox(self, topic: str, partition: int) -> _Outbox:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has {count} partitions, no partition {partition}")
        if self._producer is None:
            raise RuntimeError("the kafka log is not started")
        box = self._outboxes.get((topic, partition))
        if box is None:
            box = self._outboxes[(topic, partition)] = _Outbox(self.kafka_name(topic), partition)
        return box

    async def _ensure_topics(self, admin: Any) -> None:
        wanted = {self.kafka_name(topic): count for topic, count in self._topics.items()}
        # Listing every topic, rather than describing ours, because a metadata request for a
        # missing topic makes a broker with auto.create.topics.enable create it with its
        # default partition count.
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            replicas = self._replication_factor
            if replicas is None:
                brokers = (await admin.describe_cluster()).get("brokers", [])
                replicas = max(1, min(3, len(brokers)))
            configs = {"max.message.bytes": str(self.max_message_bytes)}
            response = await admin.create_topics(
                [NewTopic(name, wanted[name], replicas, topic_configs=configs) for name in missing],
                timeout_ms=self.request_timeout_ms,
            )
            for item in response.to_object().get("topic_errors", []):
                code = item.get("error_code", 0)
                # Another process may have created it first; its count is checked below.
                if code not in (0, _TOPIC_ALREADY_EXISTS):
                    message = item.get("error_message") or ""
                    raise for_code(code)(f"creating topic {item.get('topic')}: {message}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_ms / 1000
        while True:
            described = await admin.describe_topics(list(wanted))
            leaderless = []
            for item in described:
                name = item["topic"]
                partitions = item.get("partitions", [])
                if item.get("error_code", 0) == 0 and len(partitions) != wanted[name]:
                    raise ConfigMismatchError(
                        f"kafka topic {name!r} has {len(partitions)} partitions but the log is "
                        f"configured with {wanted[name]}: the shard count is the partition "
                        f"count, so it cannot change under a running cluster"
                    )
                if item.get("error_code", 0) != 0 or any(p["leader"] < 0 for p in partitions):
                    leaderless.append(name)
            # A new topic's partitions get leaders a moment after creation; the first produce
            # and the first group join would otherwise spend a retry backoff on it.
            if not leaderless:
                return
            if loop.time() > deadline:
                raise PersistenceError(
                    f"kafka at {self.servers}: topics {sorted(leaderless)} have no leader"
                )
            await asyncio.sleep(0.05)

    async def _start_producer(self, action: str) -> Any:
        producer = AIOKafkaProducer(
            bootstrap_servers=self._servers,
            client_id=self.client_id,
            acks="all",
            # Retries after a lost acknowledgement must not duplicate or reorder records.
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_batch_size=self._max_batch_bytes,
            max_request_size=self.max_message_bytes,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            with contextlib.suppress(KafkaError):
                await producer.stop()
            raise _translate(action, self.servers, exc) from exc
        return producer

    async def _live_producer(self) -> Any:
        """The producer to send with, replaced first if a send failed on it.

        An idempotent aiokafka producer cannot get over a failed batch: a batch that expired
        while its partition had no leader (a broker restart) leaves a gap in the partition's
        sequence numbers, the next batch fails with OutOfOrderSequenceNumber, and that stops
        the producer's sender for good, failing every later produce. A new producer gets a
        new producer id, so its sequence numbers start afresh. Per partition, order holds:
        a partition's next batch is only sent once its previous one was answered.
        """
        if self._renew_producer:
            async with self._renewing:
                if self._renew_producer:
                    # While the broker is unreachable the caller's produce fails, and one a
                    # moment later tries again.
                    loop = asyncio.get_running_loop()
                    if loop.time() < self._renew_not_before:
                        raise PersistenceError(
                            f"kafka at {self.servers} is not reachable (producer restart "
                            "failed moments ago)"
                        )
                    try:
                        fresh = await self._start_producer("producer restart")
                    except PersistenceError:
                        self._renew_not_before = loop.time() + _RENEW_BACKOFF_S
                        raise
                    old, self._producer = self._producer, fresh
                    self._renew_producer = False
                    log.warning("kafka_producer_replaced", servers=self.servers)
                    task = asyncio.create_task(self._retire(old))
                    self._retiring.add(task)
                    task.add_done_callback(self._retiring.discard)
        return self._producer

    async def _retire(self, producer: Any) -> None:
        # Batches still in flight on it (other partitions) get their answers first.
        with contextlib.suppress(KafkaError):
            await producer.stop()

    async def _flush(self, box: _Outbox) -> None:
        # One batch per turn; calls arriving while it is in flight form the next one.
        while box.pending:
            calls, box.pending = box.pending, []
            try:
                lasts = await self._send(box, calls)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                if not isinstance(exc, PersistenceError):
                    self._renew_producer = True
                error = _translate("produce", self.servers, exc)
                for call in calls:
                    if not call.done.done():
                        call.done.set_exception(error)
                continue
            for call, last in zip(calls, lasts, strict=True):
                if call.done.done():
                    continue
                if isinstance(last, BaseException):
                    call.done.set_exception(_translate("produce", self.servers, last))
                else:
                    call.done.set_result(last)

    async def _send(self, box: _Outbox, calls: list[_Produce]) -> list[int | BaseException]:
        """Send the calls as few record batches; return each call's last offset or error."""
        producer = await self._live_producer()
        builders: list[Any] = []
        # Per call: (first builder, last builder, index of its last record in the last one).
        spans: list[tuple[int, int, int]] = []
        size = count = 0
        for call in calls:
            estimate = sum(len(v) + _RECORD_OVERHEAD for v in call.values)
            if not builders or (count and size + estimate > self._max_batch_bytes):
                builders.append(producer.create_batch())
                size, count = _BATCH_OVERHEAD, 0
            first = len(builders) - 1
            for value in call.values:
                if builders[-1].append(key=None, value=value, timestamp=None) is None:
                    # Only a call larger than a whole batch gets here: it continues, in order,
                    # in the next batch (the first record of a batch always fits).
                    builders.append(producer.create_batch())
                    size, count = _BATCH_OVERHEAD, 0
                    builders[-1].append(key=None, value=value, timestamp=None)
                count += 1
            size += estimate
            spans.append((first, len(builders) - 1, count - 1))
        futures = []
        for builder in builders:
            builder.close()
            futures.append(await producer.send_batch(builder, box.name, partition=box.partition))
        acks: list[Any] = await asyncio.gather(*futures, return_exceptions=True)
        if producer is self._producer and any(isinstance(a, BaseException) for a in acks):
            self._renew_producer = True
        lasts: list[int | BaseException] = []
        for first, last, index in spans:
            failed = next((a for a in acks[first : last + 1] if isinstance(a, BaseException)), None)
            # The acknowledgement of a batch carries its base offset.
            lasts.append(failed if failed is not None else int(acks[last].offset) + index)
        return lasts

    async def _await_siblings(
        self, member: KafkaConsumer, settled: Callable[[KafkaConsumer], bool]
    ) -> None:
        """Wait (bounded) until every other live member of `member`'s group in this log is
        `settled`; see the module docstring."""
        assert self._settled is not None

        def done() -> bool:
            return all(
                settled(m)
                for m in self._members
                if m is not member
                and (m.topic, m.group) == (member.topic, member.group)
                and not m._closing
            )

        timeout = (self.rebalance_timeout_ms + self.session_timeout_ms) / 1000
        async with self._settled:
            try:
                await asyncio.wait_for(self._settled.wait_for(done), timeout)
            except TimeoutError:
                log.warning("kafka_group_rebalance_slow", topic=member.topic, group=member.group)

    async def _member_settled(self) -> None:
        assert self._settled is not None
        async with self._settled:
            self._settled.notify_all()


def _translate(action: str, servers: str, exc: BaseException) -> PersistenceError:
    if isinstance(exc, PersistenceError):
        return exc
    if isinstance(exc, KafkaConnectionError):
        return PersistenceError(f"kafka at {servers} is not reachable ({action}): {exc}")
    return PersistenceError(f"kafka at {servers}: {action} failed: {type(exc).__name__}: {exc}")


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Hands aiokafka's rebalance callbacks (TopicPartition sets) to a `KafkaConsumer`."""

    def __init__(self, member: KafkaConsumer) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._member._on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._member._on_assigned({tp.partition for tp in assigned})


class KafkaConsumer:
    """A member of a consumer group on one topic of a `KafkaTaskLog`."""

    def __init__(
        self, owner: KafkaTaskLog, topic: str, group: str, listener: RebalanceListener
    ) -> None:
        self._owner = owner
        self.topic = topic
        self.group = group
        self._name = owner.kafka_name(topic)
        self._listener = listener
        self._consumer: Any = None
        # Owned partitions (what assignment() says) and the subset getmany serves: a partition
        # is owned but not fetchable while its revoke or assign callback runs.
        self._assigned: set[int] = set()
        self._fetchable: set[int] = set()
        # The group generation of the last assignment handed to the listener (-1: none yet).
        self._generation = -1
        self._joined = asyncio.Event()
        self._changed = _Notifier()
        # Serialises listener calls: aiokafka's callbacks and the revoke that stop() makes.
        self._transition = asyncio.Lock()
        self._assigning: asyncio.Task[None] | None = None
        self._running = False
        self._closing = False

    async def start(self) -> None:
        """Join the group; returns once this member's first assignment was handed to its
        listener and the other members of the group in this log took part in the rebalance."""
        if self._running:
            return
        if self._owner._producer is None:
            raise RuntimeError("the kafka log is not started")
        owner = self._owner
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=owner._servers,
            client_id=owner.client_id,
            group_id=owner.kafka_name(self.group),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Skip records of aborted transactions, should anyone produce transactionally.
            isolation_level="read_committed",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=owner.session_timeout_ms,
            heartbeat_interval_ms=owner.heartbeat_interval_ms,
            rebalance_timeout_ms=owner.rebalance_timeout_ms,
            max_poll_interval_ms=_NO_POLL_LIVENESS_MS,
            max_partition_fetch_bytes=owner.max_message_bytes,
            request_timeout_ms=owner.request_timeout_ms,
        )
        self._consumer.subscribe([self._name], listener=_Rebalance(self))
        self._closing = False
        self._generation = -1
        self._joined = asyncio.Event()
        self._running = True
        owner._members.append(self)
        timeout = (owner.rebalance_timeout_ms + owner.session_timeout_ms) / 1000
        try:
            await asyncio.wait_for(self._join(), timeout)
        except BaseException as exc:
            await self._abandon()
            if isinstance(exc, TimeoutError):
                raise PersistenceError(
                    f"kafka at {owner.servers}: joining group {self.group!r} on {self.topic!r} "
                    f"took longer than {timeout:.0f} s"
                ) from None
            if isinstance(exc, KafkaError):
                raise _translate("group join", owner.servers, exc) from exc
            raise
        generation = self._generation
        await owner._await_siblings(self, lambda m: m._generation >= generation)

    async def _join(self) -> None:
        await self._consumer.start()
        # aiokafka's start() returns when the assignment is known, possibly before our
        # listener has been called with it.
        await self._joined.wait()

    async def _abandon(self) -> None:
        self._closing = True
        with contextlib.suppress(KafkaError):
            await self._consumer.stop()
        if self._assigning is not None and not self._assigning.done():
            self._assigning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._assigning
        self._running = False
        self._assigned.clear()
        self._fetchable.clear()
        with contextlib.suppress(ValueError):
            self._owner._members.remove(self)

    async def stop(self) -> None:
        """Revoke this member's partitions (listener called), then leave the group; returns
        once the other members of the group in this log have taken the partitions over."""
        if not self._running:
            return
        self._closing = True
        async with self._transition:
            generation = self._generation
            lost = set(self._assigned)
            self._fetchable.clear()
            if lost:
                await self._call("on_partitions_revoked", lost)
            self._assigned.clear()
        self._changed.notify()
        try:
            await self._consumer.stop()  # sends LeaveGroup: the others rebalance at once
        except KafkaError as exc:
            log.warning("kafka_leave_group_failed", topic=self.topic, group=self.group, exc=exc)
        finally:
            self._running = False
            with contextlib.suppress(ValueError):
                self._owner._members.remove(self)
        self._joined.set()  # a start() still waiting for its first assignment gives up
        await self._owner._member_settled()
        if generation >= 0:
            await self._owner._await_siblings(self, lambda m: m._generation > generation)

    def assignment(self) -> set[int]:
        return set(self._assigned)

    async def getmany(
        self,
        partitions: Sequence[int] | None = None,
        *,
        max_records: int = 500,
        timeout: float = 1.0,
    ) -> Mapping[int, Sequence[Record]]:
        if not self._running:
            raise RuntimeError(f"consumer of {self.topic!r} in group {self.group!r} is stopped")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        requested = None if partitions is None else set(partitions)
        while True:
            wake = self._changed.arm()
            wanted = self._fetchable if requested is None else self._fetchable & requested
            remaining = deadline - loop.time()
            if remaining <= 0 and not wanted:
                return {}
            if not wanted:
                # Nothing owned (yet), or stop() is revoking: wait for an assignment, not for
                # records. Waiting (rather than returning at once) keeps a caller's loop from
                # spinning without ever yielding, which would make it impossible to cancel.
                await asyncio.wait([wake], timeout=remaining)
                continue
            # While partitions may still be added to what we serve, wait in slices so that
            # they are picked up soon.
            partial = requested is None or wanted != requested
            wait = max(0.0, min(remaining, 0.25) if partial else remaining)
            tps = [TopicPartition(self._name, p) for p in sorted(wanted)]
            try:
                # aiokafka's getmany waits out a rebalance in progress whatever its timeout;
                # ours holds. Cancelling it at an await point drops nothing: records are
                # drained and returned without awaiting.
                async with asyncio.timeout(wait + 0.1):
                    batch = await self._consumer.getmany(
                        *tps, timeout_ms=max(1, int(wait * 1000)), max_records=max(1, max_records)
                    )
            except TimeoutError:
                batch = {}
            except ConsumerStoppedError:
                # stop() is leaving the group: nothing more to serve (still waiting, see above).
                await asyncio.wait([wake], timeout=max(0.0, deadline - loop.time()))
                return {}
            except KafkaError as exc:
                raise _translate("fetch", self._owner.servers, exc) from exc
            found: dict[int, list[Record]] = {}
            for tp, records in batch.items():
                if not records:
                    continue
                if tp.partition in self._fetchable:
                    found[tp.partition] = [
                        Record(self.topic, tp.partition, r.offset, cast(bytes, r.value))
                        for r in records
                    ]
                else:
                    # Its revoke or assign callback began while we waited: not served now.
                    # Rewinding (in the same step as the drain) puts the records back for
                    # whoever reads the partition next, unless the listener seeks elsewhere.
                    with contextlib.suppress(IllegalStateError, ValueError):
                        self._consumer.seek(tp, records[0].offset)
            if found or loop.time() >= deadline or not self._running:
                return found

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Store the group's next offsets; only for partitions this member owns.

        Raises:
            ShardOwnershipLostError: a partition is not (or no longer) assigned to this member,
                including Kafka's CommitFailedError after a rebalance.
            PersistenceError: the broker did not take the commit.
        """
        for partition in offsets:
            if partition not in self._assigned:
                raise ShardOwnershipLostError(
                    partition, f"partition {partition} of {self.topic!r} is not assigned here"
                )
        if not offsets:
            return
        request = {
            TopicPartition(self._name, p): OffsetAndMetadata(offset, "")
            for p, offset in offsets.items()
        }
        try:
            await self._consumer.commit(request)
        except (CommitFailedError, IllegalStateError) as exc:
            raise ShardOwnershipLostError(
                min(offsets), f"commit on {self.topic!r} rejected after a rebalance: {exc}"
            ) from exc
        except KafkaError as exc:
            raise _translate("commit", self._owner.servers, exc) from exc

    async def committed(self, partition: int) -> int:
        """The group's committed next offset for the partition (0 when none); any partition of
        the topic, owned or not. The member must be started."""
        if not self._running:
            raise RuntimeError(f"consumer of {self.topic!r} in group {self.group!r} is stopped")
        try:
            offset = await self._consumer.committed(TopicPartition(self._name, partition))
        except KafkaError as exc:
            raise _translate("committed offset lookup", self._owner.servers, exc) from exc
        return 0 if offset is None else int(offset)

    def seek(self, partition: int, offset: int) -> None:
        if partition not in self._assigned:
            raise ValueError(f"partition {partition} of {self.topic!r} is not assigned here")
        try:
            self._consumer.seek(TopicPartition(self._name, partition), max(0, offset))
        except IllegalStateError as exc:
            raise ValueError(f"partition {partition} of {self.topic!r}: {exc}") from exc
        self._changed.notify()

    # --- rebalance callbacks (run by aiokafka's coordinator task) -----------------------------

    async def _on_revoked(self, partitions: set[int]) -> None:
        # The listener hears of an assignment before it hears of its revoke.
        if self._assigning is not None:
            await asyncio.shield(self._assigning)
        async with self._transition:
            # Eager protocol: `partitions` is everything; a member that stop() already
            # revoked has nothing left to give up.
            lost = self._assigned & partitions
            self._fetchable -= lost
            if lost:
                await self._call("on_partitions_revoked", lost)
            self._assigned -= lost
        self._changed.notify()

    async def _on_assigned(self, partitions: set[int]) -> None:
        # aiokafka sends no heartbeat until this callback returns, so a listener slower than
        # the session timeout (acquiring many shards) would be dropped from the group. It runs
        # in a task of its own instead; its partitions are served once it has returned, and
        # the next revoke waits for it.
        generation = _generation_of(self._consumer)
        self._assigning = asyncio.create_task(
            self._assign(partitions, generation), name=f"kafka-assign-{self._name}"
        )

    async def _assign(self, partitions: set[int], generation: int) -> None:
        async with self._transition:
            if self._closing:
                # stop() has begun: partitions handed out now are given back by leaving.
                return
            gained = partitions - self._assigned
            self._assigned |= gained
            if gained:
                await self._call("on_partitions_assigned", gained)
            self._fetchable |= gained & self._assigned
            self._generation = generation
        self._joined.set()
        self._changed.notify()
        await self._owner._member_settled()

    async def _call(self, hook: str, partitions: set[int]) -> None:
        try:
            await getattr(self._listener, hook)(set(partitions))
        except Exception:
            # A failing listener must not stall the group: log it, as Kafka clients do.
            log.exception(
                "rebalance_listener_failed", hook=hook, topic=self.topic, group=self.group
            )


def _generation_of(consumer: Any) -> int:
    # aiokafka has no public accessor for the generation an assignment belongs to; without it
    # (another aiokafka version) sibling waits degrade to "first assignment done".
    generation = getattr(getattr(consumer, "_coordinator", None), "generation", None)
    return generation if isinstance(generation, int) else -1
