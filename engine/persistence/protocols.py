"""Store protocols: the blob-level contract between the engine and a database.

Stores deal in rows, blobs and fencing fields; the engine above encodes mutable state and
history. Every backend (SQLite embedded, Cassandra distributed) passes the same conformance
suite in `tests/conformance/test_store.py`.

Fencing and atomicity (the contract each backend must keep):
- `acquire_shard` bumps the shard's `range_id` atomically and returns the new value. Every
  `write_shard` carries the range_id its writer acquired; if the stored one differs the whole
  write fails with `ShardOwnershipLostError` and nothing of it is applied.
- `write_shard` is all-or-nothing across its runs, history batches, outbox tasks, visibility
  rows and the shard's `applied_offset`. A run write with `expected_next_event_id` set fails
  with `ConditionFailedError` when the stored run has another; `None` means the run must not
  exist yet. A current-run update with `expected_run_id` fails the same way when the current
  pointer is not that run (`""` means: there must be no current run).
- History batches are keyed by (run, first_event_id); writing the same key again replaces it.

Cluster metadata (`ClusterStore`): the shard count is recorded once, by the first process
that serves the store, and never changes; a node id is leased to one process at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.visibility.query import Query


@dataclass(slots=True)
class ShardInfo:
    shard_id: int
    range_id: int
    owner: str
    # The next command-log offset to apply: commands below it are already in the store.
    applied_offset: int = 0
    # Outbox tasks with task_id <= outbox_ack were published to their topics.
    outbox_ack: int = 0


@dataclass(slots=True)
class CurrentRun:
    run_id: str
    create_request_id: str
    # 0 while open, else the WorkflowExecutionCloseStatus enum value.
    close_status: int = 0


@dataclass(slots=True)
class CurrentRunUpdate:
    run: CurrentRun
    # None: write unconditionally (the run is already current); "": no current run may exist;
    # else: the current run must be this run id.
    expected_run_id: str | None = None


@dataclass(slots=True)
class RunSnapshot:
    state: bytes
    next_event_id: int


@dataclass(slots=True)
class HistoryBatch:
    first_event_id: int
    # A serialized `uber.cadence.api.v1.History` holding the batch's events in order.
    events: bytes
    event_count: int


@dataclass(slots=True)
class VisibilityRecord:
    domain_id: str
    workflow_id: str
    run_id: str
    workflow_type: str
    start_time_ns: int
    execution_time_ns: int
    task_list: str
    close_time_ns: int | None = None
    # 0 while open, else the WorkflowExecutionCloseStatus enum value.
    close_status: int = 0
    history_length: int = 0
    is_cron: bool = False
    # Serialized Memo proto.
    memo: bytes = b""
    # Search attributes decoded from their JSON payloads.
    search_attributes: dict[str, Any] = field(default_factory=dict)
    # Serialized ParentExecutionInfo proto, or b"".
    parent: bytes = b""


@dataclass(slots=True)
class RunWrite:
    domain_id: str
    workflow_id: str
    run_id: str
    state: bytes
    next_event_id: int
    expected_next_event_id: int | None
    history: list[HistoryBatch] = field(default_factory=list)
    current: CurrentRunUpdate | None = None
    visibility: VisibilityRecord | None = None


@dataclass(slots=True)
class OutboxTask:
    task_id: int
    # "transfer" or "timer"
    queue: str
    value: bytes


@dataclass(slots=True)
class ShardWrite:
    shard_id: int
    range_id: int
    runs: list[RunWrite] = field(default_factory=list)
    tasks: list[OutboxTask] = field(default_factory=list)
    # New applied_offset for the shard, written in the same transaction (exactly-once apply).
    applied_offset: int | None = None
    # New outbox ack level; outbox rows at or below it may be deleted.
    outbox_ack: int | None = None


@dataclass(slots=True)
class DomainRecord:
    id: str
    name: str
    # A serialized `uber.cadence.api.v1.Domain`.
    info: bytes
    # Bumped by every update; `update_domain` is conditional on it.
    notification_version: int = 0


@dataclass(slots=True)
class ScheduleRecord:
    domain_id: str
    schedule_id: str
    # The encoded schedule (spec, action, policies, state, info, memo, search attributes); the
    # store keeps it as given.
    data: bytes
    # Bumped by every update; `update_schedule` is conditional on it.
    version: int = 0


@dataclass(slots=True)
class TimerRow:
    fire_ns: int
    task_id: int
    value: bytes


@dataclass(slots=True)
class RunKey:
    domain_id: str
    workflow_id: str
    run_id: str


@dataclass(slots=True, frozen=True)
class NodeLease:
    """Who serves a node id: written by `claim_node`, shown to a process refused the id."""

    node_id: str
    # Unique per claim (a fresh random token per process start): renewals and the release
    # touch only the holder's own lease, never a successor's.
    token: str
    host: str
    pid: int
    # The gRPC address the holder serves ("" while not yet known, or without a frontend).
    address: str
    # When the holder claimed the id, epoch nanoseconds.
    since_ns: int


class ClusterStore(Protocol):
    """What the processes of one cluster agree on through the store.

    - The shard count: `record_num_shards` writes it if no count is recorded (first writer
      wins, also against a concurrent first start) and returns the recorded one. A store made
      before counts were recorded has none: `get_num_shards` then infers it from the shards
      it holds, and the caller records it.
    - Node leases: one process per node id. A lease lasts `ttl_s` seconds from its last claim
      or renewal, so a holder that died without releasing it blocks the id for at most that
      long.
    """

    async def get_num_shards(self) -> int | None:
        """The recorded shard count; else one inferred from the shards the store holds
        (highest shard id + 1); None for a store that holds no shard yet."""
        ...

    async def record_num_shards(self, num_shards: int) -> int:
        """Record `num_shards` unless a count is recorded already; return the recorded one."""
        ...

    async def claim_node(self, lease: NodeLease, ttl_s: int) -> NodeLease | None:
        """Take `lease.node_id` for `ttl_s` seconds. None: taken (or it was ours already);
        else the live lease of another holder, unchanged."""
        ...

    async def renew_node(self, lease: NodeLease, ttl_s: int) -> bool:
        """Extend our lease (and update its details, e.g. the address) for `ttl_s` seconds.
        False when the lease is no longer ours (it expired, maybe taken by another)."""
        ...

    async def release_node(self, lease: NodeLease) -> None:
        """Give the node id up, if the lease is still ours."""
        ...


class ShardStore(Protocol):
    async def acquire_shard(self, shard_id: int, owner: str) -> ShardInfo:
        """Create the shard row if missing, bump range_id, record the owner; return the row."""
        ...

    async def get_shard(self, shard_id: int) -> ShardInfo | None: ...


class RunStore(Protocol):
    """Reads of one run: what a reader of mutable state needs (`engine.history.reader`)."""

    async def get_current_run(
        self, shard_id: int, domain_id: str, workflow_id: str
    ) -> CurrentRun | None: ...

    async def get_run(
        self, shard_id: int, domain_id: str, workflow_id: str, run_id: str
    ) -> RunSnapshot | None: ...


class ExecutionStore(RunStore, Protocol):
    """Runs and the shard's outbox: what the shard owner reads and writes."""

    async def write_shard(self, write: ShardWrite) -> None:
        """Apply a whole group-commit batch atomically, fenced by range_id (see module doc)."""
        ...

    async def read_outbox(self, shard_id: int, after_task_id: int) -> list[OutboxTask]:
        """Outbox tasks above `after_task_id`, in task_id order."""
        ...

    def open_runs(self, shard_id: int, page_size: int = 1000) -> AsyncIterator[list[RunKey]]:
        """The shard's runs that are not closed, in pages of at most `page_size`, in key order.

        A page is read when the previous one has been consumed, so a shard with millions of
        open runs is walked without holding them all. Runs opened or closed during the walk
        may or may not appear.
        """
        ...


class HistoryStore(Protocol):
    async def read_history(
        self,
        domain_id: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int,
        max_events: int,
        *,
        before_event_id: int | None = None,
    ) -> list[HistoryBatch]:
        """Batches whose first_event_id >= first_event_id, in order, stopping once at least
        `max_events` events were returned (a batch is never split).

        `before_event_id`: a committed next_event_id of the run the caller already has (from
        the shard's reply or its state); only batches starting below it are returned, and a
        store that would otherwise look up where the committed history ends (Cassandra)
        takes it instead.
        """
        ...


class TimerStore(Protocol):
    """The timer processor's durable index of pending timers, ordered by due time."""

    async def put_timers(self, shard_id: int, timers: Sequence[TimerRow]) -> None:
        """Insert timers; a (shard, task_id) already present is left as it is."""
        ...

    async def due_timers(self, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
        """Timers with fire_ns <= upto_ns, earliest first."""
        ...

    async def delete_timers(self, shard_id: int, task_ids: Sequence[int]) -> None: ...


class DomainStore(Protocol):
    async def create_domain(self, record: DomainRecord) -> None:
        """Raise ConditionFailedError if the name or the id exists already."""
        ...

    async def get_domain(self, *, name: str = "", domain_id: str = "") -> DomainRecord | None: ...

    async def update_domain(self, record: DomainRecord, expected_version: int) -> None:
        """Replace the record if its stored notification_version is `expected_version`,
        else raise ConditionFailedError."""
        ...

    async def list_domains(self, page_size: int, token: bytes) -> tuple[list[DomainRecord], bytes]:
        """A page of domains by name; the returned token is b"" on the last page."""
        ...


class ScheduleStore(Protocol):
    """Schedules of the ScheduleAPI, unique by (domain_id, schedule_id)."""

    async def create_schedule(self, record: ScheduleRecord) -> None:
        """Raise ConditionFailedError if the domain has a schedule with this id already."""
        ...

    async def get_schedule(self, domain_id: str, schedule_id: str) -> ScheduleRecord | None: ...

    async def update_schedule(self, record: ScheduleRecord, expected_version: int) -> None:
        """Replace the record if its stored version is `expected_version`, else raise
        ConditionFailedError (also when the schedule does not exist)."""
        ...

    async def delete_schedule(self, domain_id: str, schedule_id: str) -> bool:
        """Delete the schedule; False when there was none."""
        ...

    async def list_schedules(
        self, domain_id: str, page_size: int, token: bytes
    ) -> tuple[list[ScheduleRecord], bytes]:
        """A page of the domain's schedules by id; the returned token is b"" on the last
        page. A token not made by this call raises BadRequestError."""
        ...


class VisibilityStore(Protocol):
    async def query_visibility(
        self,
        domain_id: str,
        query: Query,
        page_size: int,
        token: bytes,
    ) -> tuple[list[VisibilityRecord], bytes]:
        """Records matching a parsed query, in its order (default:
        start time, newest first); token b"" on the last page."""
        ...

    async def count_visibility(self, domain_id: str, query: Query) -> int: ...

    async def get_visibility(
        self, domain_id: str, workflow_id: str, run_id: str
    ) -> VisibilityRecord | None: ...


class ShardEngineStore(ExecutionStore, DomainStore, Protocol):
    """What a shard's apply loop reads and writes: its runs (one fenced write per batch), and
    domains, which a decision naming another domain's task list must find."""


class Store(
    ClusterStore,
    ShardStore,
    ExecutionStore,
    HistoryStore,
    TimerStore,
    DomainStore,
    ScheduleStore,
    VisibilityStore,
    Protocol,
):
    """Everything one backend provides; the composition root passes it to each role."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
