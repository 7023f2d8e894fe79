"""ShardController: owns the shards whose command partitions the consumer group gives it.

On assign it acquires each shard in the store (bumping range_id: the fencing token, held with
the shard's task-id range in its `ShardContext`), creates the shard's engine through the
`EngineFactory` it was given (`engine.shards.applier`), seeks
past commands already applied, republishes unacknowledged outbox tasks and asks every open run
to re-dispatch its pending tasks (a matching backlog may have been lost), unless the shard
comes straight back to this process after a rebalance, untouched by anyone else. On revoke it stops
the shard's loop before returning, so it no longer writes. A write that fails with
ShardOwnershipLostError means another owner took over: the loop stops at once. Any other
failed write is an outage (retried with a backoff) or a refusal of some command's data (the
batch is bisected until that command is alone, then it is answered and skipped): see
`engine.queues.recovery`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Protocol

import structlog

from engine.errors import ShardOwnershipLostError
from engine.model.commands import decode_command, encode_command, refresh_tasks
from engine.model.tasks import TimerTask, TransferTask, encode_task
from engine.persistence.protocols import (
    CurrentRun,
    OutboxTask,
    ShardEngineStore,
    ShardStore,
    ShardWrite,
)
from engine.queues.protocols import LogConsumer, Record, TaskLog
from engine.queues.recovery import BatchRecovery
from engine.routing.bus import ReplySink
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC
from engine.routing.watch import RunWatcher
from engine.shards.applier import EngineFactory, ShardApplier
from engine.shards.context import ShardContext

log = structlog.get_logger(__name__)

COMMIT_INTERVAL_S = 1.0
# How long an assigned shard's acquisition is retried while the store or the log is down.
ACQUIRE_PATIENCE_S = 60.0


def _within_bytes(records: Sequence[Record], limit: int) -> Sequence[Record]:
    """The longest prefix of `records` whose values add up to at most `limit` bytes, and at
    least the first record (a command alone is as large as the API allows)."""
    total = 0
    for i, record in enumerate(records):
        total += len(record.value)
        if total > limit and i > 0:
            return records[:i]
    return records


class ShardOwnerStore(ShardStore, ShardEngineStore, Protocol):
    """What a shard owner uses: shard rows (acquire, fencing), and its engines' runs, outbox
    and domains."""


class ShardController:
    def __init__(
        self,
        store: ShardOwnerStore,
        task_log: TaskLog,
        replies: ReplySink,
        node_id: str,
        engines: EngineFactory,
        watcher: RunWatcher | None = None,
        max_batch: int = 500,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.watcher = watcher
        self.store = store
        self.log = task_log
        self.replies = replies
        self.node_id = node_id
        self.new_engine = engines
        self.max_batch = max_batch
        self.engines: dict[int, ShardApplier] = {}
        self._loops: dict[int, asyncio.Task[None]] = {}
        self._consumer: LogConsumer | None = None
        self._pending_ack: dict[int, int | None] = {}
        # Shards whose outbox may hold tasks that never reached their topics (a publish
        # failed): the outbox ack must not move past them until they are published again.
        self._unpublished: set[int] = set()
        # Engines of revoked shards, kept in case the next assignment gives them back.
        self._parked: dict[int, ShardApplier] = {}

    async def start(self) -> None:
        self._consumer = self.log.consumer(COMMAND_TOPIC, "cadenza-history", self)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        await self._stop_loops(set(self._loops))

    # -- LocalState: what a frontend in this process may read without the store ----------

    def run_state(self, shard_id: int, key: tuple[str, str, str]) -> bytes | None:
        engine = self.engines.get(shard_id)
        return engine.durable_state(key) if engine is not None else None

    def known_closed(self, shard_id: int, key: tuple[str, str, str]) -> bool:
        engine = self.engines.get(shard_id)
        return engine is not None and engine.known_closed(key)

    def current_run(self, shard_id: int, wkey: tuple[str, str]) -> tuple[bool, CurrentRun | None]:
        engine = self.engines.get(shard_id)
        return engine.durable_current(wkey) if engine is not None else (False, None)

    # -- RebalanceListener -----------------------------------------------------------------

    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        await self._stop_loops(partitions)

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        for shard_id in sorted(partitions):
            await self._acquire_patiently(shard_id)

    async def _acquire_patiently(self, shard_id: int) -> None:
        """Acquire, retrying while the store or the log is unreachable (a shard left
        assigned without a loop would serve nobody until the next rebalance)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + ACQUIRE_PATIENCE_S
        delay = 0.2
        while True:
            try:
                await self._acquire(shard_id)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if loop.time() > give_up:
                    log.exception("shard_acquire_failed", shard_id=shard_id)
                    return
                log.warning("shard_acquire_retry", shard_id=shard_id, exc_info=True)
                # A loop started by the failed attempt is stopped before the next one.
                await self._stop_loops({shard_id})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- ownership -----------------------------------------------------------------------------

    async def _acquire(self, shard_id: int) -> None:
        assert self._consumer is not None
        info = await self.store.acquire_shard(shard_id, self.node_id)
        parked = self._parked.pop(shard_id, None)
        # Kafka's eager rebalancing revokes every shard and assigns most of them straight
        # back. When nobody owned the shard in between (our acquire was the only bump and
        # nothing was applied since), keep its cached runs and skip the task refresh.
        resumed = (
            parked is not None
            and info.range_id == parked.shard.range_id + 1
            and info.applied_offset == parked.applied_offset
        )
        if resumed:
            assert parked is not None
            engine = parked
            engine.resume(info.range_id)
        else:
            engine = self.new_engine(ShardContext(shard_id, info.range_id), info.applied_offset)
        self.engines[shard_id] = engine
        committed = await self._consumer.committed(shard_id)
        self._consumer.seek(shard_id, max(committed, info.applied_offset))
        published = await self._republish_outbox(shard_id, info.outbox_ack)
        log.info(
            "shard_acquired",
            shard_id=shard_id,
            range_id=info.range_id,
            applied_offset=info.applied_offset,
            outbox=published,
            resumed=resumed,
        )
        self._loops[shard_id] = asyncio.create_task(self._run(shard_id, engine))
        if resumed:
            return
        # Another owner had the shard, or this process starts: a matching backlog may have
        # been lost with it, so every open run re-dispatches its pending tasks.
        # Page by page: a shard's open runs need not fit in memory, nor in one produce.
        async for page in self.store.open_runs(shard_id):
            await self.log.produce(
                COMMAND_TOPIC,
                shard_id,
                [encode_command(refresh_tasks(r.domain_id, r.workflow_id, r.run_id)) for r in page],
            )

    async def _stop_loops(self, partitions: set[int]) -> None:
        for shard_id in partitions:
            task = self._loops.pop(shard_id, None)
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            engine = self.engines.pop(shard_id, None)
            if engine is not None:
                self._parked[shard_id] = engine
            log.info("shard_released", shard_id=shard_id)

    # -- the apply loop --------------------------------------------------------------------------

    async def _run(self, shard_id: int, engine: ShardApplier) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        last_commit = time.monotonic()
        committed_offset = engine.applied_offset
        recovery = BatchRecovery(self.max_batch)
        streak = 0  # consecutive failures, for the log
        while True:
            pending: Sequence[Record] = []
            written = False
            try:
                if shard_id in self._unpublished:
                    # Before anything else: later batches would move the outbox ack past
                    # the tasks a failed publish left behind, and they would be lost.
                    info = await self.store.get_shard(shard_id)
                    if info is not None and info.range_id != engine.shard.range_id:
                        raise ShardOwnershipLostError(shard_id)
                    if info is not None and info.applied_offset > engine.applied_offset:
                        # A write whose outcome was unknown (a timeout) did land: go on
                        # after it instead of applying its commands a second time.
                        engine.applied_offset = info.applied_offset
                        consumer.seek(shard_id, engine.applied_offset)
                    await self._republish_outbox(shard_id, info.outbox_ack if info else 0)
                    self._unpublished.discard(shard_id)
                limit = recovery.limit(engine.applied_offset)
                got = await consumer.getmany([shard_id], max_records=limit, timeout=1.0)
                records = got.get(shard_id, [])
                kept = _within_bytes(records, self.max_batch_bytes)
                if len(kept) < len(records):
                    # The rest form the next batch: one store write stays below the
                    # store's batch limits even when commands carry large payloads.
                    consumer.seek(shard_id, records[len(kept)].offset)
                    records = kept
                ack = self._pending_ack.get(shard_id)
                if not records and ack is None:
                    if engine.applied_offset > committed_offset:
                        await consumer.commit({shard_id: engine.applied_offset})
                        committed_offset = engine.applied_offset
                    continue
                pending = [r for r in records if r.offset >= engine.applied_offset]
                result = await engine.apply_batch(records, outbox_ack=ack)
                written = True
                self._pending_ack[shard_id] = None
                # The write is durable and its tasks sit in the outbox, so callers can have
                # their answers before the tasks are published (a crash republishes them).
                if self.watcher is not None:
                    self.watcher.announce(result.written)
                for cmd, reply in result.replies:
                    if cmd.reply_to:
                        await self.replies.send_reply(cmd.reply_to, reply)
                await self._publish(shard_id, result.transfer, result.timers)
                if result.transfer or result.timers:
                    self._pending_ack[shard_id] = max(
                        [t.task_id for t in result.transfer] + [t.task_id for t in result.timers]
                    )
                now = time.monotonic()
                if now - last_commit > COMMIT_INTERVAL_S:
                    # Offsets are an optimisation: applied_offset in the store is the truth.
                    await consumer.commit({shard_id: engine.applied_offset})
                    committed_offset = engine.applied_offset
                    last_commit = now
                recovery.succeeded()
                streak = 0
            except asyncio.CancelledError:
                raise
            except ShardOwnershipLostError:
                log.warning(
                    "shard_ownership_lost", shard_id=shard_id, range_id=engine.shard.range_id
                )
                self.engines.pop(shard_id, None)
                self._parked.pop(shard_id, None)
                self._loops.pop(shard_id, None)
                return
            except Exception as exc:
                streak += 1
                # The batch's own write failed (the records are to blame or the store is
                # down), or a step around it did (the outbox, a publish, a reply: never
                # the records' fault, so never a reason to skip one).
                step = recovery.outage() if written else recovery.failed(exc, pending)
                # An outage's traceback once per streak; a refused command's when it is
                # skipped (engine.history.engine logs those of commands that fail alone).
                log.warning(
                    "shard_batch_failed",
                    shard_id=shard_id,
                    failures=streak,
                    commands=len(pending),
                    outage=step.outage,
                    error=type(exc).__name__,
                    exc_info=streak == 1 and step.outage,
                )
                if step.skip:
                    try:
                        await self._skip(shard_id, engine, pending[0], exc)
                        recovery.succeeded()
                    except Exception:
                        log.warning("command_skip_failed", shard_id=shard_id, exc_info=True)
                        step = recovery.outage()
                if step.pause_s > 0:
                    await self._pause(step.pause_s)
                consumer.seek(shard_id, engine.applied_offset)
                # Tasks written but maybe not published: the outbox is published again at
                # the top of the loop, and until that succeeds nothing else is done.
                self._unpublished.add(shard_id)

    async def _pause(self, seconds: float) -> None:
        """Wait before the next attempt. Real time, not the injected clock: it paces
        retries against a real store, whatever time the workflows see."""
        await asyncio.sleep(seconds)

    async def _skip(
        self, shard_id: int, engine: ShardApplier, record: Record, exc: Exception
    ) -> None:
        """Answer a command the store keeps refusing with an error and move past it."""
        offset = max(engine.applied_offset, record.offset + 1)
        await self.store.write_shard(
            ShardWrite(shard_id, engine.shard.range_id, applied_offset=offset)
        )
        engine.applied_offset = offset
        cmd = decode_command(record.value)
        # The only traceback of this failure in the log; the caller hears nothing of it.
        log.error(
            "command_skipped",
            shard_id=shard_id,
            offset=record.offset,
            kind=cmd.kind,
            workflow_id=cmd.workflow_id,
            exc_info=exc,
        )
        if cmd.reply_to:
            await self.replies.send_reply(cmd.reply_to, engine.unstorable_reply(cmd))

    async def _publish(
        self, shard_id: int, transfer: Sequence[TransferTask], timers: Sequence[TimerTask]
    ) -> None:
        if transfer:
            await self.log.produce(TRANSFER_TOPIC, shard_id, [encode_task(t) for t in transfer])
        if timers:
            await self.log.produce(TIMER_TOPIC, shard_id, [encode_task(t) for t in timers])

    async def _republish_outbox(self, shard_id: int, ack: int) -> int:
        """Publish every outbox task above `ack` (at least once: executors dedupe)."""
        outbox: Sequence[OutboxTask] = await self.store.read_outbox(shard_id, ack)
        transfer = [t.value for t in outbox if t.queue == "transfer"]
        timers = [t.value for t in outbox if t.queue == "timer"]
        if transfer:
            await self.log.produce(TRANSFER_TOPIC, shard_id, transfer)
        if timers:
            await self.log.produce(TIMER_TOPIC, shard_id, timers)
        self._pending_ack[shard_id] = outbox[-1].task_id if outbox else None
        return len(outbox)
