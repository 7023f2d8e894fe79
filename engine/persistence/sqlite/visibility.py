"""SQLite statements for visibility records: row mapping, upsert and list-filter queries.

Rows are written by `executions.write_shard` (in the same transaction as the run they
describe) and read here. Queries arrive already parsed (`engine.visibility.query`) and are
compiled to SQL over the `visibility` table by `engine.visibility.sqlite_sql.compile_sqlite`,
imported lazily so the persistence layer does not depend on the query language at import time.
Page tokens are opaque: the row offset of the next page, b"" after the last.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import BadRequestError
from engine.persistence.protocols import VisibilityRecord

if TYPE_CHECKING:
    from engine.visibility.query import Query

_COLUMNS = (
    "domain_id, workflow_id, run_id, workflow_type, start_time, execution_time, close_time, "
    "close_status, history_length, task_list, is_cron, memo, search_attributes, parent"
)

UPSERT = f"INSERT OR REPLACE INTO visibility ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"

DEFAULT_ORDER = "start_time DESC, run_id"

_TOKEN_PREFIX = b"v1:"


def encode(record: VisibilityRecord) -> tuple[Any, ...]:
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
        int(record.is_cron),
        record.memo,
        # sort_keys: equal attribute sets give byte-equal rows.
        json.dumps(record.search_attributes, sort_keys=True, separators=(",", ":")),
        record.parent,
    )


def decode(row: Sequence[Any]) -> VisibilityRecord:
    return VisibilityRecord(
        domain_id=row[0],
        workflow_id=row[1],
        run_id=row[2],
        workflow_type=row[3],
        start_time_ns=row[4],
        execution_time_ns=row[5],
        close_time_ns=row[6],
        close_status=row[7],
        history_length=row[8],
        task_list=row[9],
        is_cron=bool(row[10]),
        memo=row[11],
        search_attributes=json.loads(row[12]),
        parent=row[13],
    )


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


def _compile(parsed: Query) -> tuple[str, list[Any], str]:
    # Imported at call time: the query language is another package, needed only when a list
    # query runs, and the store must not depend on it at import time.
    from engine.visibility.sqlite_sql import compile_sqlite

    where, params, order_by = compile_sqlite(parsed)
    # The compiled order has no tie-breaker; run_id makes offset paging deterministic.
    order = f"{order_by}, run_id" if order_by else DEFAULT_ORDER
    return where or "1=1", list(params), order


def query(
    conn: sqlite3.Connection, domain_id: str, parsed: Query, page_size: int, token: bytes
) -> tuple[list[VisibilityRecord], bytes]:
    if page_size < 1:
        raise ValueError(f"page_size must be positive, got {page_size}")
    offset = decode_token(token)
    where, params, order_by = _compile(parsed)
    # One row past the page tells whether another page exists without a COUNT.
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM visibility WHERE domain_id = ? AND ({where}) "
        f"ORDER BY {order_by} LIMIT ? OFFSET ?",
        [domain_id, *params, page_size + 1, offset],
    ).fetchall()
    records = [decode(r) for r in rows[:page_size]]
    next_token = encode_token(offset + page_size) if len(rows) > page_size else b""
    return records, next_token


def count(conn: sqlite3.Connection, domain_id: str, parsed: Query) -> int:
    where, params, _ = _compile(parsed)
    row = conn.execute(
        f"SELECT COUNT(*) FROM visibility WHERE domain_id = ? AND ({where})",
        [domain_id, *params],
    ).fetchone()
    return int(row[0])


def get(
    conn: sqlite3.Connection, domain_id: str, workflow_id: str, run_id: str
) -> VisibilityRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM visibility WHERE domain_id = ? AND workflow_id = ? AND run_id = ?",
        (domain_id, workflow_id, run_id),
    ).fetchone()
    return None if row is None else decode(row)
