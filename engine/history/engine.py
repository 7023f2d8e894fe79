"""ShardEngine: the single writer of one shard. Applies a batch of commands from the shard's
log partition to cached mutable state, then writes everything in one fenced store write
(group commit), and returns the replies and the tasks to publish.

Exactly-once apply: the write also stores the shard's `applied_offset`, so commands that
are delivered again after a crash (below it) are skipped. The fencing token every write
carries and the task ids come from the shard's `ShardContext` (`engine.shards.context`); the
shard controller creates one engine per shard it owns and feeds it its partition.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from engine.clock import Clock
from engine.errors import (
    BadRequestError,
    EngineError,
    InternalServiceError,
    ServiceError,
    error_fields,
)
from engine.execution.mutation import RunMutation
from engine.execution.starts import StartParams
from engine.history.batch import Batch, RunKey, WorkflowKey
from engine.model.commands import Command, Reply, decode_command
from engine.model.state import MutableState, decode_state
from engine.model.tasks import TimerTask, TransferTask
from engine.persistence.protocols import CurrentRun, ShardEngineStore
from engine.queues.channel import RunChange
from engine.queues.protocols import Record
from engine.shards.context import ShardContext

log = structlog.get_logger(__name__)

# What a caller hears when its command cannot be applied: never the exception's text.
# A handler's unexpected exception is a bug, maybe of the run's state: INTERNAL, like Cadence.
FAILED_MESSAGE = "The shard could not apply this request."
# The store cannot hold what the command would write (a time past the int64 range, say):
# sending it again fails the same way, so the error is one clients do not retry.
UNSTORABLE_MESSAGE = (
    "The shard could not apply this request: its changes cannot be stored. "
    "Sending it again will fail the same way."
)


@dataclass
class BatchResult:
    replies: list[tuple[Command, Reply]] = field(default_factory=list)
    transfer: list[TransferTask] = field(default_factory=list)
    timers: list[TimerTask] = field(default_factory=list)
    next_offset: int = 0
    # Runs whose history or state this batch wrote (for long-poll wake-ups).
    written: list[RunChange] = field(default_factory=list)


def error_reply(cmd: Command, err: ServiceError) -> Reply:
    """The reply that answers `cmd` with `err` (kind, message and fields)."""
    return Reply(
        key=cmd.reply_key,
        ok=False,
        error_kind=err.kind,
        error_message=err.message,
        error_fields=error_fields(err),
    )


# What a command does to the batch: awaited per command, returns the reply values (a dict)
# or raises ServiceError (`engine.history.handlers.dispatch`).
Handler = Callable[["ShardEngine", Batch, Command], object]


class ShardEngine:
    def __init__(
        self,
        shard: ShardContext,
        applied_offset: int,
        store: ShardEngineStore,
        clock: Clock,
        allowed_search_attributes: frozenset[str],
        handle: Handler,
        cache_size: int = 10_000,
    ) -> None:
        self.shard = shard
        self.shard_id = shard.shard_id
        self.applied_offset = applied_offset
        self.store = store
        self.clock = clock
        self.allowed_search_attributes = allowed_search_attributes
        self.handle = handle
        self._cache: OrderedDict[RunKey, MutableState] = OrderedDict()
        self._currents: OrderedDict[WorkflowKey, CurrentRun | None] = OrderedDict()
        # The encoded state of recently written runs exactly as the store holds it: what a
        # frontend in this process may read instead of the store (the cached objects above
        # also carry a batch's changes before its write is durable).
        self._durable: OrderedDict[RunKey, bytes] = OrderedDict()
        self._cache_size = cache_size
        self.log = log.bind(shard_id=shard.shard_id, range_id=shard.range_id)
        # Offsets of failed commands whose traceback is in the log: a batch written again
        # (another command in it was refused by the store) applies them again.
        self._reported: set[int] = set()

    def resume(self, range_id: int) -> None:
        """Carry on under a new fencing token (the shard was re-acquired by this process and
        nobody else wrote in between, so the cached runs are still the truth)."""
        self.shard.renew(range_id)
        self.log = log.bind(shard_id=self.shard_id, range_id=range_id)

    # -- loading ---------------------------------------------------------------------------

    async def current(self, batch: Batch, domain_id: str, workflow_id: str) -> CurrentRun | None:
        wkey = (domain_id, workflow_id)
        if wkey in batch.currents:
            return batch.currents[wkey]
        if wkey in self._currents:
            cur = self._currents[wkey]
        else:
            cur = await self.store.get_current_run(self.shard_id, domain_id, workflow_id)
        batch.currents[wkey] = cur
        return cur

    async def load(self, batch: Batch, domain_id: str, workflow_id: str, run_id: str) -> bool:
        """Bring a run into the batch; False if it does not exist."""
        key = (domain_id, workflow_id, run_id)
        if key in batch.runs:
            return True
        state = self._cache.get(key)
        if state is None:
            snap = await self.store.get_run(self.shard_id, domain_id, workflow_id, run_id)
            if snap is None:
                return False
            state = decode_state(snap.state)
        batch.add_loaded(key, state)
        return True

    # -- applying ----------------------------------------------------------------------------

    async def apply_batch(
        self, records: Sequence[Record], outbox_ack: int | None = None
    ) -> BatchResult:
        """Apply records in order with the engine's handler and write them in one store write.

        Raises if the write fails (the cache is dropped then).
        """
        batch = Batch(self.shard_id, self.shard.range_id, self.shard.next_task_id)
        result = BatchResult(next_offset=self.applied_offset)
        for record in records:
            if record.offset < self.applied_offset:
                continue  # applied before a crash: exactly-once
            result.next_offset = record.offset + 1
            try:
                cmd = decode_command(record.value)
            except Exception:  # noqa: BLE001  (a corrupt record must not stop the shard)
                self.log.error("command_undecodable", offset=record.offset)
                continue
            batch.begin()
            try:
                values = await self.handle(self, batch, cmd)  # type: ignore[misc]
                reply = Reply(key=cmd.reply_key, values=values or {})
            except ServiceError as err:
                batch.rollback()
                reply = error_reply(cmd, err)
            except EngineError:
                raise
            except Exception:  # noqa: BLE001  (logged by _report; one command, not the batch)
                # A bug, not the caller's doing: the traceback stays in the log.
                batch.rollback()
                self._report("command_failed", record.offset, cmd)
                reply = error_reply(cmd, InternalServiceError(FAILED_MESSAGE))
            else:
                try:
                    # Encode what the command changed now, so a value the store cannot hold
                    # is pinned on this command instead of failing the whole batch's write.
                    batch.end()
                except Exception:  # noqa: BLE001  (logged by _report)
                    batch.rollback()
                    self._report("command_unstorable", record.offset, cmd)
                    reply = self.unstorable_reply(cmd)
            result.replies.append((cmd, reply))
        if result.next_offset == self.applied_offset and outbox_ack is None:
            return result
        write = batch.to_write(result.next_offset, outbox_ack)
        try:
            await self.store.write_shard(write)
        except Exception:
            self._cache.clear()
            self._currents.clear()
            self._durable.clear()
            raise
        self.applied_offset = result.next_offset
        self._reported = {o for o in self._reported if o >= self.applied_offset}
        for run in write.runs:
            key = (run.domain_id, run.workflow_id, run.run_id)
            self._durable[key] = run.state
            self._durable.move_to_end(key)
        while len(self._durable) > self._cache_size:
            self._durable.popitem(last=False)
        for key, entry in batch.runs.items():
            self._remember(key, entry.state)
        for wkey, cur in batch.currents.items():
            self._currents[wkey] = cur
            self._currents.move_to_end(wkey)
        while len(self._currents) > self._cache_size:
            self._currents.popitem(last=False)
        result.written = [
            RunChange(*key, entry.state.next_event_id, entry.state.is_open)
            for key, entry in batch.runs.items()
            if entry.dirty
        ]
        result.transfer = batch.transfer
        result.timers = batch.timers
        return result

    def unstorable_reply(self, cmd: Command) -> Reply:
        """The answer to a command whose changes the store cannot hold (it is skipped)."""
        return error_reply(cmd, BadRequestError(UNSTORABLE_MESSAGE))

    def _report(self, event: str, offset: int, cmd: Command) -> None:
        """Log the exception being handled, with its traceback, once per command."""
        if offset in self._reported:
            return
        self._reported.add(offset)
        self.log.exception(event, offset=offset, kind=cmd.kind, workflow_id=cmd.workflow_id)

    def durable_state(self, key: RunKey) -> bytes | None:
        """The run's encoded state as last written, if this engine wrote it recently."""
        return self._durable.get(key)

    def known_closed(self, key: RunKey) -> bool:
        raw = self._durable.get(key)
        return raw is not None and not decode_state(raw).is_open

    def durable_current(self, wkey: WorkflowKey) -> tuple[bool, CurrentRun | None]:
        """(known here, the workflow's current run as last written or read from the store)."""
        if wkey in self._currents:
            return True, self._currents[wkey]
        return False, None

    def _remember(self, key: RunKey, state: MutableState) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    # -- helpers for handlers -----------------------------------------------------------------

    def now_ns(self) -> int:
        return self.clock.now_ns()

    def creator(self, batch: Batch) -> _Creator:
        return _Creator(self, batch)


class _Creator:
    """RunCreator for the execution layer: new runs join the batch at once."""

    def __init__(self, engine: ShardEngine, batch: Batch) -> None:
        self.engine = engine
        self.batch = batch

    def create_run(self, params: StartParams, run_id: str) -> RunMutation:
        m = self.batch.create_run(params, run_id, self.engine.now_ns())
        self.batch.commit_mutation((params.domain_id, params.workflow_id, run_id), m)
        return m
