"""One group-commit batch of a shard: commands applied in log order to cached runs, then
turned into a single fenced `ShardWrite`.

Each command is atomic within the batch: the states it touches are snapshotted first and
restored if it raises, so a rejected command leaves nothing behind. What a command changed is
encoded when it ends (`end`), not when the batch is written: a value the store cannot hold
fails that command alone, and the bytes serve the next command's snapshot and the write, so
each state is still encoded once per command.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from cadence.api.v1 import history_pb2

from engine.execution.mutation import RunMutation
from engine.execution.protos import MAX_TIME_NS, parent_execution_info
from engine.execution.starts import StartParams, new_run
from engine.model.state import MutableState, decode_state, encode_state
from engine.model.tasks import TimerTask, TransferTask, encode_task
from engine.persistence.protocols import (
    CurrentRun,
    CurrentRunUpdate,
    HistoryBatch,
    OutboxTask,
    RunWrite,
    ShardWrite,
    VisibilityRecord,
)

RunKey = tuple[str, str, str]
WorkflowKey = tuple[str, str]


@dataclass
class RunEntry:
    state: MutableState
    # None for a run created in this batch.
    expected_next_event_id: int | None
    batches: list[HistoryBatch] = field(default_factory=list)
    current: CurrentRunUpdate | None = None
    visibility_changed: bool = False
    # Set once a command changed the run; runs only read by failed commands are not written.
    dirty: bool = False
    # `state` as encoded when the last command that touched it ended (None: not yet).
    encoded: bytes | None = None


class Batch:
    """Runs touched by the commands of one batch, and what they produced."""

    def __init__(self, shard_id: int, range_id: int, next_task_id: Callable[[], int]) -> None:
        self.shard_id = shard_id
        self.range_id = range_id
        self.next_task_id = next_task_id
        self.runs: dict[RunKey, RunEntry] = {}
        self.currents: dict[WorkflowKey, CurrentRun | None] = {}
        self.transfer: list[TransferTask] = []
        self.timers: list[TimerTask] = []
        # The tasks above, encoded as each command ended (same order).
        self._transfer_raw: list[bytes] = []
        self._timers_raw: list[bytes] = []
        self._undo: list[tuple[RunKey, bytes, int, bool]] | None = None
        self._undo_currents: dict[WorkflowKey, CurrentRun | None] | None = None
        self._created: list[RunKey] = []

    # -- per-command atomicity -------------------------------------------------------------

    def begin(self) -> None:
        self._undo = []
        self._undo_currents = {}
        self._created = []
        self._n_transfer = len(self.transfer)
        self._n_timers = len(self.timers)

    def remember(self, key: RunKey) -> None:
        """Snapshot a run before the current command changes it."""
        assert self._undo is not None
        entry = self.runs[key]
        if any(k == key for k, *_ in self._undo):
            return
        # Unchanged since the last command ended (changes go through `mutation`, which
        # snapshots first), so that command's encoding is this one's snapshot.
        raw = entry.encoded if entry.encoded is not None else encode_state(entry.state)
        self._undo.append((key, raw, len(entry.batches), entry.visibility_changed))

    def rollback(self) -> None:
        assert self._undo is not None
        assert self._undo_currents is not None
        for key, raw, n_batches, vis in self._undo:
            entry = self.runs[key]
            entry.state = decode_state(raw)
            entry.encoded = raw
            del entry.batches[n_batches:]
            entry.visibility_changed = vis
        for key in self._created:
            self.runs.pop(key, None)
        for wkey, cur in self._undo_currents.items():
            self.currents[wkey] = cur
        del self.transfer[self._n_transfer :]
        del self.timers[self._n_timers :]
        del self._transfer_raw[self._n_transfer :]
        del self._timers_raw[self._n_timers :]
        self._undo = None

    def end(self) -> None:
        """Finish the current command: encode the runs and tasks it changed.

        Raises (OverflowError, msgspec.EncodeError, ValueError) if something it changed cannot
        be stored; the caller then rolls the command back, and the batch stays writable.
        """
        assert self._undo is not None
        changed = dict.fromkeys([key for key, *_ in self._undo] + self._created)
        encoded = [(key, encode_state(self.runs[key].state)) for key in changed]
        timers = self.timers[self._n_timers :]
        for tm in timers:
            if not -MAX_TIME_NS - 1 <= tm.fire_ns <= MAX_TIME_NS:
                # msgspec encodes up to 2**64 - 1, but no store's timer index goes past
                # int64: such a task would stop the timer queue that takes it.
                raise ValueError(f"timer {tm.timer_id!r} fires at {tm.fire_ns} ns, out of range")
        transfer_raw = [encode_task(t) for t in self.transfer[self._n_transfer :]]
        timers_raw = [encode_task(t) for t in timers]
        # Nothing failed: only now does the batch take the command's bytes.
        for key, raw in encoded:
            self.runs[key].encoded = raw
        self._transfer_raw += transfer_raw
        self._timers_raw += timers_raw
        self._undo = None

    def set_current(self, wkey: WorkflowKey, cur: CurrentRun | None) -> None:
        if self._undo_currents is not None and wkey not in self._undo_currents:
            self._undo_currents[wkey] = self.currents.get(wkey)
        self.currents[wkey] = cur

    # -- runs --------------------------------------------------------------------------------

    def add_loaded(self, key: RunKey, state: MutableState) -> RunEntry:
        entry = RunEntry(state=state, expected_next_event_id=state.next_event_id)
        self.runs[key] = entry
        return entry

    def mutation(self, key: RunKey, now_ns: int) -> RunMutation:
        self.remember(key)
        return RunMutation(self.runs[key].state, now_ns, self.next_task_id)

    def commit_mutation(self, key: RunKey, m: RunMutation) -> None:
        """Fold a finished mutation into the batch (one history batch per command and run)."""
        entry = self.runs[key]
        entry.state = m.state
        entry.dirty = True
        if m.events:
            history = history_pb2.History(events=m.events)
            entry.batches.append(
                HistoryBatch(
                    first_event_id=m.events[0].event_id,
                    events=history.SerializeToString(),
                    event_count=len(m.events),
                )
            )
        for t in m.transfer:
            t.task_id = self.next_task_id()
            self.transfer.append(t)
        for tm in m.timers:
            tm.task_id = self.next_task_id()
            self.timers.append(tm)
        if m.visibility_changed:
            entry.visibility_changed = True
        st = m.state
        if not st.is_open:
            # Keep the current pointer's close status in step with the run.
            wkey = (st.domain_id, st.workflow_id)
            cur = self.currents.get(wkey)
            if cur is not None and cur.run_id == st.run_id and cur.close_status != st.close_status:
                self.set_current(
                    wkey, CurrentRun(cur.run_id, cur.create_request_id, st.close_status)
                )
                if entry.current is None or entry.current.run.run_id != st.run_id:
                    entry.current = CurrentRunUpdate(self.currents[wkey] or cur, None)
                else:
                    entry.current.run = self.currents[wkey] or cur

    def create_run(self, params: StartParams, run_id: str, now_ns: int) -> RunMutation:
        """A new run; it becomes the current run of its workflow id."""
        m = new_run(params, run_id, now_ns, self.next_task_id)
        key = (params.domain_id, params.workflow_id, run_id)
        wkey = (params.domain_id, params.workflow_id)
        prev = self.currents.get(wkey)
        entry = RunEntry(state=m.state, expected_next_event_id=None, dirty=True)
        cur = CurrentRun(run_id, params.request_id, 0)
        entry.current = CurrentRunUpdate(cur, prev.run_id if prev is not None else "")
        self.runs[key] = entry
        self._created.append(key)
        self.set_current(wkey, cur)
        return m

    # -- the write ---------------------------------------------------------------------------

    def to_write(self, applied_offset: int | None, outbox_ack: int | None) -> ShardWrite:
        runs: list[RunWrite] = []
        for (domain_id, workflow_id, run_id), e in self.runs.items():
            if not e.dirty:
                continue
            runs.append(
                RunWrite(
                    domain_id=domain_id,
                    workflow_id=workflow_id,
                    run_id=run_id,
                    state=e.encoded if e.encoded is not None else encode_state(e.state),
                    next_event_id=e.state.next_event_id,
                    expected_next_event_id=e.expected_next_event_id,
                    history=e.batches,
                    current=e.current,
                    visibility=visibility_record(e.state) if e.visibility_changed else None,
                )
            )
        assert len(self._transfer_raw) == len(self.transfer), "a command did not end"
        assert len(self._timers_raw) == len(self.timers), "a command did not end"
        tasks = [
            OutboxTask(t.task_id, "transfer", raw)
            for t, raw in zip(self.transfer, self._transfer_raw, strict=True)
        ]
        tasks += [
            OutboxTask(t.task_id, "timer", raw)
            for t, raw in zip(self.timers, self._timers_raw, strict=True)
        ]
        return ShardWrite(
            shard_id=self.shard_id,
            range_id=self.range_id,
            runs=runs,
            tasks=tasks,
            applied_offset=applied_offset,
            outbox_ack=outbox_ack,
        )


def visibility_record(st: MutableState) -> VisibilityRecord:
    attrs: dict[str, object] = {}
    for key, raw in st.search_attributes.items():
        try:
            attrs[key] = json.loads(raw)
        except ValueError:
            attrs[key] = raw.decode("utf-8", "replace")
    parent = b""
    if st.parent is not None:
        parent = parent_execution_info(st.parent).SerializeToString()
    return VisibilityRecord(
        domain_id=st.domain_id,
        workflow_id=st.workflow_id,
        run_id=st.run_id,
        workflow_type=st.workflow_type,
        start_time_ns=st.start_ns,
        execution_time_ns=st.execution_ns,
        task_list=st.task_list,
        close_time_ns=st.close_ns if not st.is_open else None,
        close_status=st.close_status,
        history_length=st.next_event_id - 1,
        is_cron=bool(st.cron_schedule),
        memo=st.memo,
        search_attributes=attrs,
        parent=parent,
    )
