"""Visibility records on Cassandra: the per-domain table, its versioned writes, and queries.

A record reaches the `visibility` table in two steps, because the table is partitioned by
domain and cannot join the shard's conditional batch:
1. `write_shard` puts the record in the shard's partition (an `executions` row of kind 5) in
   the same LWT batch as the run: it commits or fails with the run.
2. Right after the batch commits, `project` copies it to `visibility`. The kind-5 row is
   deleted by the shard's next batch once the copy is known to be done; a new owner of the
   shard copies whatever kind-5 rows a crashed owner left (`acquire_shard`).
Copies are written `USING TIMESTAMP version` with version = next_event_id << 32 | range_id,
so copies arriving late or twice never replace a newer record of the run.

Queries read the domain's whole partition and evaluate the parsed query in Python
(`evaluate`): see that module for why this is a stopgap and what replaces it. Page tokens
are opaque offsets, as in the SQLite store, and pages follow the same order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.errors import BadRequestError
from engine.persistence.cassandra import evaluate
from engine.persistence.cassandra.aio import CqlSession, Row
from engine.persistence.cassandra.cql import Statements
from engine.persistence.protocols import VisibilityRecord
from engine.visibility.query import Query

_TOKEN_PREFIX = b"v1:"
_FETCH_SIZE = 1000


def version_of(next_event_id: int, range_id: int) -> int:
    """The write timestamp of a record: later events win, then a later owner of the shard."""
    return (next_event_id << 32) | (range_id & 0xFFFFFFFF)


@dataclass(frozen=True, slots=True)
class Pending:
    """A committed record to copy to the visibility table, with its write version."""

    record: VisibilityRecord
    version: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.record.domain_id, self.record.workflow_id, self.record.run_id)


def _columns(record: VisibilityRecord) -> tuple[Any, ...]:
    return (
        record.domain_id,
        record.workflow_id,
        record.run_id,
        record.workflow_type,
        record.start_time_ns,
        record.execution_time_ns,
        record.close_time_ns,
        record.close_status,
        record.history_length,
        record.task_list,
        record.is_cron,
        record.memo,
        # sort_keys: equal attribute sets give byte-equal rows (as in the SQLite store).
        json.dumps(record.search_attributes, sort_keys=True, separators=(",", ":")),
        record.parent,
    )


def _record(row: Sequence[Any]) -> VisibilityRecord:
    return VisibilityRecord(
        domain_id=row[0],
        workflow_id=row[1],
        run_id=row[2],
        workflow_type=row[3] or "",
        start_time_ns=row[4] or 0,
        execution_time_ns=row[5] or 0,
        close_time_ns=row[6],
        close_status=row[7] or 0,
        history_length=row[8] or 0,
        task_list=row[9] or "",
        is_cron=bool(row[10]),
        # Cassandra hands an empty blob back as b"" or None depending on the path.
        memo=row[11] or b"",
        search_attributes=json.loads(row[12]) if row[12] else {},
        parent=row[13] or b"",
    )


def encode_pending(record: VisibilityRecord) -> bytes:
    """The record as stored in the shard partition until it is copied."""
    return msgspec.msgpack.encode(_columns(record))


def decode_pending(data: bytes) -> VisibilityRecord:
    return _record(msgspec.msgpack.decode(data))


async def project(db: CqlSession, st: Statements, pending: Sequence[Pending]) -> None:
    """Copy committed records to the visibility table (idempotent, order-insensitive)."""
    await db.execute_all(
        [(st.upsert_visibility, (*_columns(p.record), p.version)) for p in pending]
    )


async def get(
    db: CqlSession, st: Statements, domain_id: str, workflow_id: str, run_id: str
) -> VisibilityRecord | None:
    rows = await db.execute(st.select_visibility, (domain_id, workflow_id, run_id))
    return _record(rows[0]) if rows else None


async def _domain_records(db: CqlSession, st: Statements, domain_id: str) -> list[Row]:
    return await db.fetch_all(st.select_domain_visibility, (domain_id,), fetch_size=_FETCH_SIZE)


def encode_token(offset: int) -> bytes:
    return _TOKEN_PREFIX + str(offset).encode("ascii")


def decode_token(token: bytes) -> int:
    if not token:
        return 0
    if not token.startswith(_TOKEN_PREFIX):
        raise BadRequestError("invalid visibility page token")
    try:
        offset = int(token[len(_TOKEN_PREFIX) :])
    except ValueError as exc:
        raise BadRequestError("invalid visibility page token") from exc
    if offset < 0:
        raise BadRequestError("invalid visibility page token")
    return offset


async def query(
    db: CqlSession, st: Statements, domain_id: str, parsed: Query, page_size: int, token: bytes
) -> tuple[list[VisibilityRecord], bytes]:
    if page_size < 1:
        raise ValueError(f"page_size must be positive, got {page_size}")
    offset = decode_token(token)
    records = [_record(r) for r in await _domain_records(db, st, domain_id)]
    selected = evaluate.select(records, parsed)
    page = selected[offset : offset + page_size]
    more = len(selected) > offset + page_size
    return page, encode_token(offset + page_size) if more else b""


async def count(db: CqlSession, st: Statements, domain_id: str, parsed: Query) -> int:
    records = [_record(r) for r in await _domain_records(db, st, domain_id)]
    return evaluate.count(records, parsed)
