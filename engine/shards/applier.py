"""What the shard controller needs of the engine that applies a shard's commands.

The controller owns shards (acquires them, feeds each its partition's commands, publishes
what the writes produced); `engine.history.engine.ShardEngine` applies the commands. The
controller creates one engine per owned shard through an `EngineFactory` given to it by the
composition root (`engine.server`), as Cadence's shard controller does: so this package sits
below `engine.history` and never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from engine.model.commands import Command, Reply
from engine.model.tasks import TimerTask, TransferTask
from engine.persistence.protocols import CurrentRun
from engine.queues.channel import RunChange
from engine.queues.protocols import Record
from engine.shards.context import ShardContext


class AppliedBatch(Protocol):
    """What one group commit did: the replies, the tasks to publish, the runs it changed."""

    @property
    def replies(self) -> Sequence[tuple[Command, Reply]]: ...
    @property
    def transfer(self) -> Sequence[TransferTask]: ...
    @property
    def timers(self) -> Sequence[TimerTask]: ...
    @property
    def written(self) -> Sequence[RunChange]: ...


class ShardApplier(Protocol):
    shard: ShardContext
    # The offset of the shard's partition up to which commands are applied (the store's
    # truth, which the controller moves past a skipped command).
    applied_offset: int

    def resume(self, range_id: int) -> None:
        """Carry on under a new fencing token with what is cached (nobody wrote between)."""
        ...

    async def apply_batch(
        self, records: Sequence[Record], outbox_ack: int | None = None
    ) -> AppliedBatch:
        """Apply `records` in one fenced store write; raises if the write fails."""
        ...

    def unstorable_reply(self, cmd: Command) -> Reply:
        """The answer to a command whose changes the store cannot hold."""
        ...

    def durable_state(self, key: tuple[str, str, str]) -> bytes | None: ...

    def known_closed(self, key: tuple[str, str, str]) -> bool: ...

    def durable_current(self, wkey: tuple[str, str]) -> tuple[bool, CurrentRun | None]: ...


# (the shard, just acquired; the offset its commands are applied up to) -> its engine
EngineFactory = Callable[[ShardContext, int], ShardApplier]
