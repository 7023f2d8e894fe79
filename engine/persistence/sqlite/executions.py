"""SQLite statements for shards, runs, history, the outbox and timers.

Plain functions of a `sqlite3.Connection`, run by `SqliteStore` on the database thread inside
one transaction each (see `engine.persistence.sqlite.db`). `write_shard` is the engine's
group-commit hot path: it checks the fence and every condition first, then applies the whole
batch with one `executemany` per table, so a batch of N runs costs a handful of statements and
one commit, and any failure leaves nothing applied (the caller's transaction rolls back).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.errors import ConditionFailedError, ShardOwnershipLostError
from engine.persistence.protocols import (
    CurrentRun,
    HistoryBatch,
    OutboxTask,
    RunKey,
    RunSnapshot,
    ShardInfo,
    ShardWrite,
    TimerRow,
)
from engine.persistence.sqlite import visibility

# --- shards ---------------------------------------------------------------------------------

_SHARD_COLUMNS = "shard_id, range_id, owner, applied_offset, outbox_ack"


def _shard(row: Sequence[Any]) -> ShardInfo:
    return ShardInfo(
        shard_id=row[0], range_id=row[1], owner=row[2], applied_offset=row[3], outbox_ack=row[4]
    )


def acquire_shard(conn: sqlite3.Connection, shard_id: int, owner: str) -> ShardInfo:
    # One upsert: the bump and the read are atomic, so two acquirers always get distinct
    # range_ids and the earlier one is fenced out.
    row = conn.execute(
        f"""INSERT INTO shards (shard_id, range_id, owner) VALUES (?, 1, ?)
            ON CONFLICT (shard_id) DO UPDATE
            SET range_id = shards.range_id + 1, owner = excluded.owner
            RETURNING {_SHARD_COLUMNS}""",
        (shard_id, owner),
    ).fetchone()
    return _shard(row)


def get_shard(conn: sqlite3.Connection, shard_id: int) -> ShardInfo | None:
    row = conn.execute(
        f"SELECT {_SHARD_COLUMNS} FROM shards WHERE shard_id = ?", (shard_id,)
    ).fetchone()
    return None if row is None else _shard(row)


# --- runs -----------------------------------------------------------------------------------


def get_current_run(
    conn: sqlite3.Connection, shard_id: int, domain_id: str, workflow_id: str
) -> CurrentRun | None:
    row = conn.execute(
        """SELECT run_id, create_request_id, close_status FROM current_runs
           WHERE shard_id = ? AND domain_id = ? AND workflow_id = ?""",
        (shard_id, domain_id, workflow_id),
    ).fetchone()
    if row is None:
        return None
    return CurrentRun(run_id=row[0], create_request_id=row[1], close_status=row[2])


def get_run(
    conn: sqlite3.Connection, shard_id: int, domain_id: str, workflow_id: str, run_id: str
) -> RunSnapshot | None:
    row = conn.execute(
        """SELECT state, next_event_id FROM executions
           WHERE shard_id = ? AND domain_id = ? AND workflow_id = ? AND run_id = ?""",
        (shard_id, domain_id, workflow_id, run_id),
    ).fetchone()
    return None if row is None else RunSnapshot(state=row[0], next_event_id=row[1])


def open_runs_after(
    conn: sqlite3.Connection, shard_id: int, after: RunKey | None, limit: int
) -> list[RunKey]:
    """A page of open runs in key order, after `after` (keyset paging on `executions_open`)."""
    low = ("", "", "") if after is None else (after.domain_id, after.workflow_id, after.run_id)
    rows = conn.execute(
        """SELECT domain_id, workflow_id, run_id FROM executions
           WHERE shard_id = ? AND is_open = 1 AND (domain_id, workflow_id, run_id) > (?, ?, ?)
           ORDER BY domain_id, workflow_id, run_id LIMIT ?""",
        (shard_id, *low, limit),
    )
    return [RunKey(domain_id=r[0], workflow_id=r[1], run_id=r[2]) for r in rows]


# The open flag is only touched when the write carries a visibility record (?7 not NULL);
# a new run without one starts open.
_UPSERT_RUN = """
INSERT INTO executions (shard_id, domain_id, workflow_id, run_id, state, next_event_id, is_open)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, 1))
ON CONFLICT (shard_id, domain_id, workflow_id, run_id) DO UPDATE
SET state = excluded.state, next_event_id = excluded.next_event_id,
    is_open = COALESCE(?7, executions.is_open)
"""

_UPSERT_CURRENT = """
INSERT OR REPLACE INTO current_runs
    (shard_id, domain_id, workflow_id, run_id, create_request_id, close_status)
VALUES (?, ?, ?, ?, ?, ?)
"""

_PUT_HISTORY = """
INSERT OR REPLACE INTO history
    (domain_id, workflow_id, run_id, first_event_id, event_count, events)
VALUES (?, ?, ?, ?, ?, ?)
"""

_PUT_OUTBOX = "INSERT OR REPLACE INTO outbox (shard_id, task_id, queue, value) VALUES (?, ?, ?, ?)"


def write_shard(conn: sqlite3.Connection, write: ShardWrite) -> None:
    """Check the fence and every condition, then apply the batch; raise before any write.

    A run may appear more than once in one batch (two commands on it in one group commit):
    its later write is checked against the earlier one's next_event_id, not the stored row,
    and the same holds for the current-run pointer.
    """
    row = conn.execute("SELECT range_id FROM shards WHERE shard_id = ?", (write.shard_id,))
    stored = row.fetchone()
    if stored is None or stored[0] != write.range_id:
        raise ShardOwnershipLostError(
            write.shard_id,
            f"shard {write.shard_id}: write with range_id {write.range_id}, stored "
            f"{None if stored is None else stored[0]}",
        )

    sid = write.shard_id
    next_ids: dict[tuple[str, str, str], int | None] = {}
    currents: dict[tuple[str, str], str | None] = {}
    run_rows: list[tuple[Any, ...]] = []
    current_rows: list[tuple[Any, ...]] = []
    history_rows: list[tuple[Any, ...]] = []
    visibility_rows: list[tuple[Any, ...]] = []

    for run in write.runs:
        key = (run.domain_id, run.workflow_id, run.run_id)
        if key not in next_ids:
            found = conn.execute(
                """SELECT next_event_id FROM executions
                   WHERE shard_id = ? AND domain_id = ? AND workflow_id = ? AND run_id = ?""",
                (sid, *key),
            ).fetchone()
            next_ids[key] = None if found is None else found[0]
        if next_ids[key] != run.expected_next_event_id:
            raise ConditionFailedError(
                f"run {run.workflow_id}/{run.run_id}: expected next_event_id "
                f"{run.expected_next_event_id}, stored {next_ids[key]}"
            )
        next_ids[key] = run.next_event_id

        if run.current is not None:
            ckey = (run.domain_id, run.workflow_id)
            if ckey not in currents:
                found = conn.execute(
                    """SELECT run_id FROM current_runs
                       WHERE shard_id = ? AND domain_id = ? AND workflow_id = ?""",
                    (sid, *ckey),
                ).fetchone()
                currents[ckey] = None if found is None else found[0]
            expected = run.current.expected_run_id
            actual = currents[ckey]
            if expected is not None and (actual or "") != expected:
                raise ConditionFailedError(
                    f"workflow {run.workflow_id}: expected current run {expected!r}, "
                    f"found {actual!r}"
                )
            cur = run.current.run
            currents[ckey] = cur.run_id
            current_rows.append(
                (sid, run.domain_id, run.workflow_id, cur.run_id, cur.create_request_id,
                 cur.close_status)
            )  # fmt: skip

        is_open = None if run.visibility is None else int(run.visibility.close_status == 0)
        run_rows.append((sid, *key, run.state, run.next_event_id, is_open))
        history_rows.extend((*key, b.first_event_id, b.event_count, b.events) for b in run.history)
        if run.visibility is not None:
            visibility_rows.append(visibility.encode(run.visibility))

    # Every check passed: apply. Nothing above wrote, so a raise there left the file as is.
    if run_rows:
        conn.executemany(_UPSERT_RUN, run_rows)
    if current_rows:
        conn.executemany(_UPSERT_CURRENT, current_rows)
    if history_rows:
        conn.executemany(_PUT_HISTORY, history_rows)
    if visibility_rows:
        conn.executemany(visibility.UPSERT, visibility_rows)
    if write.tasks:
        conn.executemany(_PUT_OUTBOX, [(sid, t.task_id, t.queue, t.value) for t in write.tasks])
    if write.applied_offset is not None:
        conn.execute(
            "UPDATE shards SET applied_offset = ? WHERE shard_id = ?", (write.applied_offset, sid)
        )
    if write.outbox_ack is not None:
        conn.execute("UPDATE shards SET outbox_ack = ? WHERE shard_id = ?", (write.outbox_ack, sid))
        # After the inserts above, so tasks written and acked in one batch leave no row.
        conn.execute(
            "DELETE FROM outbox WHERE shard_id = ? AND task_id <= ?", (sid, write.outbox_ack)
        )


def read_outbox(conn: sqlite3.Connection, shard_id: int, after_task_id: int) -> list[OutboxTask]:
    rows = conn.execute(
        """SELECT task_id, queue, value FROM outbox
           WHERE shard_id = ? AND task_id > ? ORDER BY task_id""",
        (shard_id, after_task_id),
    )
    return [OutboxTask(task_id=r[0], queue=r[1], value=r[2]) for r in rows]


# --- history --------------------------------------------------------------------------------


def read_history(
    conn: sqlite3.Connection,
    domain_id: str,
    workflow_id: str,
    run_id: str,
    first_event_id: int,
    max_events: int,
    before_event_id: int | None = None,
) -> list[HistoryBatch]:
    cursor = conn.execute(
        """SELECT first_event_id, event_count, events FROM history
           WHERE domain_id = ? AND workflow_id = ? AND run_id = ? AND first_event_id >= ?
             AND first_event_id < ?
           ORDER BY first_event_id""",
        (
            domain_id,
            workflow_id,
            run_id,
            first_event_id,
            (1 << 62) if before_event_id is None else before_event_id,
        ),
    )
    batches: list[HistoryBatch] = []
    total = 0
    # The cursor steps lazily, so stopping early never reads the rest of a long history.
    for first, count, events in cursor:
        if total >= max_events:
            break
        batches.append(HistoryBatch(first_event_id=first, events=events, event_count=count))
        total += count
    return batches


# --- timers ---------------------------------------------------------------------------------


def put_timers(conn: sqlite3.Connection, shard_id: int, timers: Sequence[TimerRow]) -> None:
    # OR IGNORE: a task id already indexed keeps its row, so replays of the timer topic are
    # harmless (put is idempotent per (shard, task_id)).
    conn.executemany(
        "INSERT OR IGNORE INTO timers (shard_id, task_id, fire_ns, value) VALUES (?, ?, ?, ?)",
        [(shard_id, t.task_id, t.fire_ns, t.value) for t in timers],
    )


def due_timers(conn: sqlite3.Connection, shard_id: int, upto_ns: int, limit: int) -> list[TimerRow]:
    rows = conn.execute(
        """SELECT fire_ns, task_id, value FROM timers
           WHERE shard_id = ? AND fire_ns <= ? ORDER BY fire_ns, task_id LIMIT ?""",
        (shard_id, upto_ns, limit),
    )
    return [TimerRow(fire_ns=r[0], task_id=r[1], value=r[2]) for r in rows]


def delete_timers(conn: sqlite3.Connection, shard_id: int, task_ids: Sequence[int]) -> None:
    conn.executemany(
        "DELETE FROM timers WHERE shard_id = ? AND task_id = ?",
        [(shard_id, task_id) for task_id in task_ids],
    )
