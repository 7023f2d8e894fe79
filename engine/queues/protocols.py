"""The partitioned-log protocol every shard, transfer and timer component is written against.

It is the subset of Kafka that the engine needs, so `InProcessTaskLog` (embedded) and
`KafkaTaskLog` (distributed) are interchangeable:

- A topic has a fixed number of partitions; each record gets a per-partition offset that
  grows by one from 0.
- `produce` returns once the records are durable (persisted by the log), in order.
- A consumer joins a *group*; the group spreads the topic's partitions over its members.
  Ownership changes are announced through a `RebalanceListener`: every revoke happens (and is
  awaited) before any assign, as in aiokafka's `ConsumerRebalanceListener`.
- `commit(partition, offset)` stores the group's position: the *next* offset to read. After a
  restart or reassignment, consumption resumes from the committed offset (at-least-once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes


class RebalanceListener(Protocol):
    async def on_partitions_revoked(self, partitions: set[int]) -> None:
        """Called before partitions are taken away; the member must stop writing for them."""
        ...

    async def on_partitions_assigned(self, partitions: set[int]) -> None:
        """Called after the member was given partitions (always after any pending revoke)."""
        ...


class LogConsumer(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Leave the group; the partitions are revoked (listener called) and reassigned."""
        ...

    def assignment(self) -> set[int]: ...

    async def getmany(
        self,
        partitions: Sequence[int] | None = None,
        *,
        max_records: int = 500,
        timeout: float = 1.0,
    ) -> Mapping[int, Sequence[Record]]:
        """Wait up to `timeout` seconds for records on the given owned partitions (all owned ones
        when None). Returns records past each partition's position, and advances the position."""
        ...

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Store the group's next offset to read, per partition."""
        ...

    async def committed(self, partition: int) -> int:
        """The committed next offset (0 when none)."""
        ...

    def seek(self, partition: int, offset: int) -> None:
        """Move this member's read position (used to skip records already applied)."""
        ...


class TaskLog(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def partitions(self, topic: str) -> int:
        """How many partitions the topic has."""
        ...

    async def produce(self, topic: str, partition: int, values: Sequence[bytes]) -> int:
        """Append values in order; return the offset of the last one once durable."""
        ...

    def consumer(self, topic: str, group: str, listener: RebalanceListener) -> LogConsumer:
        """A new member of `group` on `topic`; it owns nothing until `start()`."""
        ...
