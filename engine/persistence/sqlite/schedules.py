"""SQLite statements for schedules: unique by (domain_id, schedule_id), conditional on version.

Run by `SqliteStore` on the database thread, one transaction per call. Pages go by schedule
id within a domain (keyset paging on the primary key).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.errors import ConditionFailedError
from engine.persistence.paging import check_page_size, key_after, key_token
from engine.persistence.protocols import ScheduleRecord

TOKEN_TAG = b"s1:"
_COLUMNS = "domain_id, schedule_id, data, version"


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(domain_id=row[0], schedule_id=row[1], data=row[2], version=row[3])


def create_schedule(conn: sqlite3.Connection, record: ScheduleRecord) -> None:
    inserted = conn.execute(
        f"INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (record.domain_id, record.schedule_id, record.data, record.version),
    ).rowcount
    if inserted != 1:
        raise ConditionFailedError(f"schedule {record.schedule_id!r} exists already")


def get_schedule(
    conn: sqlite3.Connection, domain_id: str, schedule_id: str
) -> ScheduleRecord | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM schedules WHERE domain_id = ? AND schedule_id = ?",
        (domain_id, schedule_id),
    ).fetchone()
    return None if row is None else _schedule(row)


def update_schedule(
    conn: sqlite3.Connection, record: ScheduleRecord, expected_version: int
) -> None:
    updated = conn.execute(
        """UPDATE schedules SET data = ?, version = ?
           WHERE domain_id = ? AND schedule_id = ? AND version = ?""",
        (record.data, record.version, record.domain_id, record.schedule_id, expected_version),
    ).rowcount
    if updated != 1:
        raise ConditionFailedError(
            f"schedule {record.schedule_id!r}: expected version {expected_version}"
        )


def delete_schedule(conn: sqlite3.Connection, domain_id: str, schedule_id: str) -> bool:
    deleted = conn.execute(
        "DELETE FROM schedules WHERE domain_id = ? AND schedule_id = ?", (domain_id, schedule_id)
    ).rowcount
    return deleted == 1


def list_schedules(
    conn: sqlite3.Connection, domain_id: str, page_size: int, token: bytes
) -> tuple[list[ScheduleRecord], bytes]:
    check_page_size(page_size)
    after = key_after(TOKEN_TAG, token, "schedule") or ""
    # One row past the page tells whether another page exists.
    rows = conn.execute(
        f"""SELECT {_COLUMNS} FROM schedules WHERE domain_id = ? AND schedule_id > ?
            ORDER BY schedule_id LIMIT ?""",
        (domain_id, after, page_size + 1),
    ).fetchall()
    page = [_schedule(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    return page, key_token(TOKEN_TAG, page[-1].schedule_id) if more else b""
