"""Schedules on Cassandra (the `ScheduleStore` half of the store).

One partition per domain, ordered by schedule id, so listing pages by id and every change is a
lightweight transaction: create is `IF NOT EXISTS`, update is `IF version = ?`, delete is
`IF EXISTS`, so two writers never lose each other's change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.errors import ConditionFailedError
from engine.persistence.cassandra.aio import CqlSession
from engine.persistence.cassandra.cql import Statements
from engine.persistence.paging import check_page_size, key_after, key_token
from engine.persistence.protocols import ScheduleRecord

TOKEN_TAG = b"s1:"


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(domain_id=row[0], schedule_id=row[1], data=row[2] or b"", version=row[3])


class Schedules:
    def __init__(self, db: CqlSession, st: Statements) -> None:
        self._db = db
        self._st = st

    async def create_schedule(self, record: ScheduleRecord) -> None:
        applied = await self._db.conditional(
            self._st.insert_schedule,
            (record.domain_id, record.schedule_id, record.data, record.version),
        )
        if not applied:
            raise ConditionFailedError(f"schedule {record.schedule_id!r} exists already")

    async def get_schedule(self, domain_id: str, schedule_id: str) -> ScheduleRecord | None:
        rows = await self._db.execute(self._st.select_schedule, (domain_id, schedule_id))
        return _schedule(rows[0]) if rows else None

    async def update_schedule(self, record: ScheduleRecord, expected_version: int) -> None:
        applied = await self._db.conditional(
            self._st.update_schedule,
            (record.data, record.version, record.domain_id, record.schedule_id, expected_version),
        )
        if not applied:
            raise ConditionFailedError(
                f"schedule {record.schedule_id!r}: expected version {expected_version}"
            )

    async def delete_schedule(self, domain_id: str, schedule_id: str) -> bool:
        return await self._db.conditional(self._st.delete_schedule, (domain_id, schedule_id))

    async def list_schedules(
        self, domain_id: str, page_size: int, token: bytes
    ) -> tuple[list[ScheduleRecord], bytes]:
        check_page_size(page_size)
        after = key_after(TOKEN_TAG, token, "schedule") or ""
        # One row past the page tells whether another page exists.
        rows = await self._db.execute(self._st.list_schedules, (domain_id, after, page_size + 1))
        page = [_schedule(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return page, key_token(TOKEN_TAG, page[-1].schedule_id) if more else b""
