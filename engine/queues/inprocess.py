"""`InProcessTaskLog`: the embedded partitioned log, durable in the embedded SQLite file.

The `TaskLog` of embedded mode (the distributed one is `KafkaTaskLog`). It has the Kafka
semantics the engine relies on, so shard, transfer and timer code runs unchanged on it:

- Offsets per partition grow by one from 0 and never restart, even after trimming
  (`log_partitions.end_offset` remembers where each partition ended).
- `produce` returns once its records are committed to SQLite. Produce calls made in the same
  loop iteration, or while a previous flush is on disk, share one transaction (producer-side
  group commit); a partition's records keep the order of the calls. Consumer offset commits
  join the same transactions: a workflow's few commits and appends cost one write, not one
  each.
- Consumers of one group split a topic's partitions by range. When a member joins or leaves,
  every revoke (awaited `on_partitions_revoked`) happens before any assign. Listeners get the
  change: the partitions a member loses, then the partitions it gains; `assignment()` is the
  full set. A gained partition is fetched only after its `on_partitions_assigned` returned.
- `getmany` serves recent records from an in-memory tail and waits on a notification (no
  polling) when nothing is there; only a consumer behind the tail (after a restart) reads
  SQLite. `commit` is durable when it returns.
- Records below every group's committed offset are deleted by `trim()`, run periodically.

One `InProcessTaskLog` per file: group state lives in this process. Several owners of the
file (the store and the log) share its `SqliteDatabase`, hence its single writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.errors import ConfigMismatchError, ShardOwnershipLostError
from engine.persistence.sqlite.db import SqliteDatabase
from engine.persistence.sqlite.store import SqliteStore
from engine.queues.protocols import RebalanceListener, Record

log = structlog.get_logger(__name__)


@dataclass(eq=False, slots=True)
class _Partition:
    topic: str
    index: int
    # Records in [start, end) are stored; end is the next offset to hand out.
    start: int = 0
    end: int = 0
    # The most recent records, covering [tail_start, end) exactly.
    tail: list[Record] = field(default_factory=list)
    tail_start: int = 0


@dataclass(eq=False, slots=True)
class _Produce:
    partition: _Partition
    values: list[bytes]
    done: asyncio.Future[int]


@dataclass(eq=False, slots=True)
class _Commit:
    group: str
    topic: str
    offsets: dict[int, int]
    done: asyncio.Future[None]


class _Notifier:
    """Wakes every waiter of a topic at once; a waiter arms before it looks, so no wake is lost."""

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


@dataclass(eq=False, slots=True)
class _Group:
    topic: str
    name: str
    members: list[InProcessConsumer] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    loaded: bool = False
    # Serialises joins, leaves and their rebalances.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# --- statements (run on the database thread) -----------------------------------------------


def _load_partitions(conn: sqlite3.Connection) -> list[tuple[str, int, int, int]]:
    return conn.execute(
        "SELECT topic, partition, start_offset, end_offset FROM log_partitions"
    ).fetchall()


def _append(
    conn: sqlite3.Connection,
    rows: list[tuple[str, int, int, bytes]],
    ends: list[tuple[str, int, int]],
    offsets: list[tuple[str, str, int, int]],
) -> None:
    if offsets:
        _store_offsets(conn, offsets)
    conn.executemany(
        "INSERT INTO log_records (topic, partition, offset, value) VALUES (?, ?, ?, ?)", rows
    )
    conn.executemany(
        """INSERT INTO log_partitions (topic, partition, start_offset, end_offset)
           VALUES (?1, ?2, 0, ?3)
           ON CONFLICT (topic, partition) DO UPDATE SET end_offset = ?3""",
        ends,
    )


def _read_records(
    conn: sqlite3.Connection, topic: str, partition: int, first: int, limit: int
) -> list[Record]:
    rows = conn.execute(
        """SELECT offset, value FROM log_records
           WHERE topic = ? AND partition = ? AND offset >= ? ORDER BY offset LIMIT ?""",
        (topic, partition, first, limit),
    )
    return [Record(topic, partition, offset, value) for offset, value in rows]


def _load_committed(conn: sqlite3.Connection, group: str, topic: str) -> dict[int, int]:
    rows = conn.execute(
        "SELECT partition, next_offset FROM log_group_offsets WHERE group_id = ? AND topic = ?",
        (group, topic),
    )
    return {partition: offset for partition, offset in rows}


def _store_offsets(conn: sqlite3.Connection, offsets: list[tuple[str, str, int, int]]) -> None:
    """Rows of (group, topic, partition, next offset), applied in order."""
    conn.executemany(
        """INSERT OR REPLACE INTO log_group_offsets (group_id, topic, partition, next_offset)
           VALUES (?, ?, ?, ?)""",
        offsets,
    )


def _trim(
    conn: sqlite3.Connection, bounds: list[tuple[str, int, int, int]], active: dict[str, set[str]]
) -> tuple[int, dict[tuple[str, int], int]]:
    """Delete records below every group's committed offset; return (deleted, new starts)."""
    committed: dict[str, dict[str, dict[int, int]]] = {}
    for group, topic, partition, offset in conn.execute(
        "SELECT group_id, topic, partition, next_offset FROM log_group_offsets"
    ):
        committed.setdefault(topic, {}).setdefault(group, {})[partition] = offset
    deleted = 0
    starts: dict[tuple[str, int], int] = {}
    for topic, partition, start, end in bounds:
        by_group = committed.get(topic, {})
        groups = set(by_group) | active.get(topic, set())
        # A topic nobody consumed yet keeps everything: its first group reads from 0.
        if not groups:
            continue
        low = min(min(by_group.get(g, {}).get(partition, 0) for g in groups), end)
        if low <= start:
            continue
        deleted += conn.execute(
            "DELETE FROM log_records WHERE topic = ? AND partition = ? AND offset < ?",
            (topic, partition, low),
        ).rowcount
        conn.execute(
            "UPDATE log_partitions SET start_offset = ? WHERE topic = ? AND partition = ?",
            (low, topic, partition),
        )
        starts[(topic, partition)] = low
    return deleted, starts


# --- the log --------------------------------------------------------------------------------


class InProcessTaskLog:
    """A durable partitioned log in the embedded SQLite file (see the module docstring).

    Args:
        source: the SQLite file path, or the `SqliteStore`/`SqliteDatabase` whose file (and
            writer thread) to share. The log opens and closes its own reference to it.
        topics: partition count per topic. Counts may grow between runs, never shrink.
        tail_records: how many recent records per partition stay in memory for consumers.
        trim_interval: seconds between trims of consumed records; 0 disables the timer.
    """

    def __init__(
        self,
        source: str | SqliteStore | SqliteDatabase,
        topics: Mapping[str, int],
        *,
        tail_records: int = 2048,
        trim_interval: float = 60.0,
    ) -> None:
        if isinstance(source, SqliteStore):
            self._db = source.database
        elif isinstance(source, SqliteDatabase):
            self._db = source
        else:
            self._db = SqliteDatabase(source)
        for topic, count in topics.items():
            if count < 1:
                raise ValueError(f"topic {topic!r} needs at least one partition, got {count}")
        self._topics = dict(topics)
        self._tail_records = max(1, tail_records)
        self._trim_interval = trim_interval
        self._partitions: dict[str, list[_Partition]] = {}
        self._notifiers = {topic: _Notifier() for topic in topics}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._pending: list[_Produce] = []
        self._commits: list[_Commit] = []
        self._flusher: asyncio.Task[None] | None = None
        self._trimmer: asyncio.Task[None] | None = None
        self._started = False

    async def start(self) -> None:
        await self._db.open()
        try:
            stored = await self._db.read(_load_partitions)
        except BaseException:
            await self._db.close()
            raise
        parts = {
            topic: [_Partition(topic, i) for i in range(count)]
            for topic, count in self._topics.items()
        }
        for topic, index, start, end in stored:
            if topic not in parts:
                continue
            if index >= len(parts[topic]):
                await self._db.close()
                raise ConfigMismatchError(
                    f"topic {topic!r} has records in partition {index}, but is configured with "
                    f"{len(parts[topic])} partitions: partition counts cannot shrink"
                )
            part = parts[topic][index]
            # Everything already stored is read from disk; the tail starts empty at the end.
            part.start, part.end, part.tail_start = start, end, end
        self._partitions = parts
        self._started = True
        if self._trim_interval > 0:
            self._trimmer = asyncio.create_task(self._trim_periodically(), name="log-trim")

    async def stop(self) -> None:
        if not self._started:
            return
        for group in list(self._groups.values()):
            for member in list(group.members):
                await member.stop()
        if self._trimmer is not None:
            self._trimmer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trimmer
            self._trimmer = None
        # Drain: every produce accepted before stop() gets its answer.
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        self._started = False
        await self._db.close()

    @property
    def database(self) -> SqliteDatabase:
        """The SQLite handle the log writes through (shared with the store when given one)."""
        return self._db

    def partitions(self, topic: str) -> int:
        try:
            return self._topics[topic]
        except KeyError:
            raise ValueError(f"unknown topic {topic!r}") from None

    def end_offset(self, topic: str, partition: int) -> int:
        """The next offset the partition will hand out (its durable high watermark)."""
        return self._partition(topic, partition).end

    async def produce(self, topic: str, partition: int, values: Sequence[bytes]) -> int:
        part = self._partition(topic, partition)
        if not self._started:
            raise RuntimeError("the in-process log is not started")
        if not values:
            return part.end - 1
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(_Produce(part, list(values), done))
        self._wake_flusher()
        return await done

    async def _commit(self, group: str, topic: str, offsets: dict[int, int]) -> None:
        """Store a group's offsets in the next flush's transaction; returns once durable."""
        if not self._started:
            raise RuntimeError("the in-process log is not started")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commits.append(_Commit(group, topic, offsets, done))
        self._wake_flusher()
        await done

    def _wake_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            # Started as a task, it first runs on the next loop iteration: every produce and
            # commit made in this iteration lands in the same transaction.
            self._flusher = asyncio.create_task(self._flush(), name="log-flush")

    def consumer(self, topic: str, group: str, listener: RebalanceListener) -> InProcessConsumer:
        self.partitions(topic)
        return InProcessConsumer(self, topic, group, listener)

    async def trim(self) -> int:
        """Delete records every group has committed past; return how many were deleted."""
        bounds = [
            (p.topic, p.index, p.start, p.end) for parts in self._partitions.values() for p in parts
        ]
        active: dict[str, set[str]] = {}
        for (topic, name), group in self._groups.items():
            if group.members:
                active.setdefault(topic, set()).add(name)
        deleted, starts = await self._db.write(_trim, bounds, active)
        for (topic, index), start in starts.items():
            part = self._partitions[topic][index]
            part.start = max(part.start, start)
        return deleted

    # --- internals --------------------------------------------------------------------------

    def _partition(self, topic: str, partition: int) -> _Partition:
        count = self.partitions(topic)
        if not 0 <= partition < count:
            raise ValueError(f"topic {topic!r} has {count} partitions, no partition {partition}")
        if not self._partitions:
            raise RuntimeError("the in-process log is not started")
        return self._partitions[topic][partition]

    async def _flush(self) -> None:
        # One transaction per turn; produces and commits arriving while it is on disk form
        # the next one.
        while self._pending or self._commits:
            batch, self._pending = self._pending, []
            commits, self._commits = self._commits, []
            ends: dict[_Partition, int] = {}
            rows: list[tuple[str, int, int, bytes]] = []
            lasts: list[int] = []
            for item in batch:
                part = item.partition
                base = ends.get(part, part.end)
                rows.extend(
                    (part.topic, part.index, base + i, value) for i, value in enumerate(item.values)
                )
                ends[part] = base + len(item.values)
                lasts.append(ends[part] - 1)
            offsets = [
                (c.group, c.topic, partition, offset)
                for c in commits
                for partition, offset in c.offsets.items()
            ]
            try:
                await self._db.write(
                    _append, rows, [(p.topic, p.index, end) for p, end in ends.items()], offsets
                )
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                waiters: list[asyncio.Future[Any]] = [item.done for item in batch]
                waiters += [c.done for c in commits]
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for c in commits:
                if not c.done.done():
                    c.done.set_result(None)
            # Durable: publish to the tails, then answer the producers and wake consumers.
            for topic, partition, offset, value in rows:
                self._partitions[topic][partition].tail.append(
                    Record(topic, partition, offset, value)
                )
            for part, end in ends.items():
                part.end = end
                excess = len(part.tail) - self._tail_records
                # Trim in chunks (at 2x) so the list copy is amortised over many appends.
                if excess >= self._tail_records:
                    del part.tail[:excess]
                    part.tail_start += excess
            for item, last in zip(batch, lasts, strict=True):
                if not item.done.done():
                    item.done.set_result(last)
            for topic in {p.topic for p in ends}:
                self._notifiers[topic].notify()

    async def _trim_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._trim_interval)
            try:
                await self.trim()
            except Exception:
                log.exception("log_trim_failed")

    def _group(self, topic: str, name: str) -> _Group:
        group = self._groups.get((topic, name))
        if group is None:
            group = self._groups[(topic, name)] = _Group(topic, name)
        return group

    async def _load_group(self, group: _Group) -> None:
        if not group.loaded:
            group.committed = await self._db.read(_load_committed, group.name, group.topic)
            group.loaded = True

    async def _join(self, member: InProcessConsumer) -> None:
        group = self._group(member.topic, member.group)
        async with group.lock:
            await self._load_group(group)
            group.members.append(member)
            await self._rebalance(group, leaving=None)

    async def _leave(self, member: InProcessConsumer) -> None:
        group = self._group(member.topic, member.group)
        async with group.lock:
            if member in group.members:
                group.members.remove(member)
                await self._rebalance(group, leaving=member)

    async def _rebalance(self, group: _Group, leaving: InProcessConsumer | None) -> None:
        target = _range_assign(self._topics[group.topic], group.members)
        everyone = [*group.members, leaving] if leaving is not None else group.members

        # Phase 1: every member that loses partitions stops fetching them and is told; all of
        # these calls finish before anyone is given anything (no two owners at once).
        revokes = [(m, m._assigned - target.get(m, set())) for m in everyone]
        revokes = [(m, lost) for m, lost in revokes if lost]
        for member, lost in revokes:
            member._fetchable -= lost
        await _notify_all(
            "on_partitions_revoked",
            [(m, m._listener.on_partitions_revoked(set(lost))) for m, lost in revokes],
        )
        for member, lost in revokes:
            member._assigned -= lost
            for partition in lost:
                member._positions.pop(partition, None)

        # Phase 2: gains start at the group's committed offset; the listener may seek.
        gains = [(m, target[m] - m._assigned) for m in group.members]
        gains = [(m, gained) for m, gained in gains if gained]
        for member, gained in gains:
            member._assigned |= gained
            for partition in gained:
                member._positions[partition] = group.committed.get(partition, 0)
        await _notify_all(
            "on_partitions_assigned",
            [(m, m._listener.on_partitions_assigned(set(gained))) for m, gained in gains],
        )
        for member, gained in gains:
            member._fetchable |= gained & member._assigned
        self._notifiers[group.topic].notify()


def _range_assign(
    count: int, members: Sequence[InProcessConsumer]
) -> dict[InProcessConsumer, set[int]]:
    """Kafka's range assignor: contiguous blocks in join order, the first ones one larger."""
    if not members:
        return {}
    share, extra = divmod(count, len(members))
    target: dict[InProcessConsumer, set[int]] = {}
    first = 0
    for i, member in enumerate(members):
        size = share + (1 if i < extra else 0)
        target[member] = set(range(first, first + size))
        first += size
    return target


async def _notify_all(
    hook: str, calls: Iterable[tuple[InProcessConsumer, Awaitable[None]]]
) -> None:
    calls = list(calls)
    results = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
    for (member, _), result in zip(calls, results, strict=True):
        # A failing listener must not stall the group: log it, as Kafka clients do.
        if isinstance(result, BaseException):
            log.error(
                "rebalance_listener_failed",
                exc_info=result,
                hook=hook,
                topic=member.topic,
                group=member.group,
            )


class InProcessConsumer:
    """A member of a consumer group on one topic of an `InProcessTaskLog`."""

    def __init__(
        self, owner: InProcessTaskLog, topic: str, group: str, listener: RebalanceListener
    ) -> None:
        self._owner = owner
        self.topic = topic
        self.group = group
        self._listener = listener
        # Owned partitions (what assignment() says) and the subset getmany serves: a partition
        # is owned but not fetchable while its revoke or assign callback runs.
        self._assigned: set[int] = set()
        self._fetchable: set[int] = set()
        self._positions: dict[int, int] = {}
        self._member = False
        self._turn = 0

    async def start(self) -> None:
        """Join the group; returns once the rebalance (and this member's assign) completed."""
        if self._member:
            return
        self._member = True
        await self._owner._join(self)

    async def stop(self) -> None:
        if not self._member:
            return
        # Still a member while its revoke runs: loops blocked in getmany see no fetchable
        # partition (so return nothing) rather than an error, and can be cancelled cleanly.
        await self._owner._leave(self)
        self._member = False
        self._owner._notifiers[self.topic].notify()

    def assignment(self) -> set[int]:
        return set(self._assigned)

    async def getmany(
        self,
        partitions: Sequence[int] | None = None,
        *,
        max_records: int = 500,
        timeout: float = 1.0,
    ) -> Mapping[int, Sequence[Record]]:
        if not self._member:
            raise RuntimeError(f"consumer of {self.topic!r} in group {self.group!r} is stopped")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        notifier = self._owner._notifiers[self.topic]
        while True:
            wake = notifier.arm()
            wanted = self._fetchable if partitions is None else self._fetchable & set(partitions)
            found = await self._fetch(sorted(wanted), max(1, max_records))
            remaining = deadline - loop.time()
            if found or remaining <= 0 or not self._member:
                return found
            await asyncio.wait([wake], timeout=remaining)

    async def _fetch(self, wanted: list[int], budget: int) -> dict[int, list[Record]]:
        found: dict[int, list[Record]] = {}
        if not wanted:
            return found
        # Start each call at the next partition so one busy partition cannot starve the rest.
        self._turn = (self._turn + 1) % len(wanted)
        for partition in wanted[self._turn :] + wanted[: self._turn]:
            if budget <= 0:
                break
            part = self._owner._partitions[self.topic][partition]
            position = self._positions.get(partition)
            if position is None:
                continue
            # Below the log start the records were trimmed: resume at the earliest stored one.
            position = max(position, part.start)
            if position >= part.end:
                continue
            if position >= part.tail_start:
                i = position - part.tail_start
                records = part.tail[i : i + budget]
            else:
                # Behind the in-memory tail (after a restart): catch up from disk.
                before = self._positions.get(partition)
                records = await self._owner._db.read(
                    _read_records,
                    self.topic,
                    partition,
                    position,
                    min(budget, part.tail_start - position),
                )
                # A seek or a revoke while we were reading makes these records stale.
                if partition not in self._fetchable or self._positions.get(partition) != before:
                    continue
            if records:
                found[partition] = records
                self._positions[partition] = records[-1].offset + 1
                budget -= len(records)
        return found

    async def commit(self, offsets: Mapping[int, int]) -> None:
        """Durably store the group's next offsets; only for partitions this member owns.

        Raises:
            ShardOwnershipLostError: a partition is not (or no longer) assigned to this member,
                like Kafka's CommitFailedError after a rebalance.
        """
        for partition in offsets:
            if partition not in self._assigned:
                raise ShardOwnershipLostError(
                    partition, f"partition {partition} of {self.topic!r} is not assigned here"
                )
        if not offsets:
            return
        group = self._owner._group(self.topic, self.group)
        await self._owner._commit(self.group, self.topic, dict(offsets))
        group.committed.update(offsets)

    async def committed(self, partition: int) -> int:
        group = self._owner._group(self.topic, self.group)
        await self._owner._load_group(group)
        return group.committed.get(partition, 0)

    def seek(self, partition: int, offset: int) -> None:
        if partition not in self._assigned:
            raise ValueError(f"partition {partition} of {self.topic!r} is not assigned here")
        self._positions[partition] = max(0, offset)
        self._owner._notifiers[self.topic].notify()

    def position(self, partition: int) -> int | None:
        """The next offset `getmany` returns for an owned partition (None when not owned)."""
        return self._positions.get(partition)
