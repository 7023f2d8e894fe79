"""Domains on Cassandra (the `DomainStore` half of the store), as Cadence keeps them.

The record lives in `domains_by_name`, one small partition ordered by name, so listing pages
by name and `update_domain` is one conditional update (`IF id = ? AND notification_version
= ?`). `domains` maps an id to its name and makes ids unique.

`create_domain` claims the id (LWT IF NOT EXISTS), then the name (LWT IF NOT EXISTS); when the
name is taken it releases the id again. A crash between the two leaves an id row without a
record: `get_domain(domain_id=...)` ignores it, and only a create reusing that exact id fails.
The name is the record's key: renaming a domain is not supported (Cadence has no rename), so
an update whose name is not the stored one fails its condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.errors import ConditionFailedError
from engine.persistence.cassandra.aio import CqlSession
from engine.persistence.cassandra.cql import Statements
from engine.persistence.paging import check_page_size, key_after, key_token
from engine.persistence.protocols import DomainRecord

TOKEN_TAG = b"d1:"


def _domain(row: Sequence[Any]) -> DomainRecord:
    return DomainRecord(id=row[0], name=row[1], info=row[2] or b"", notification_version=row[3])


class Domains:
    def __init__(self, db: CqlSession, st: Statements) -> None:
        self._db = db
        self._st = st

    async def create_domain(self, record: DomainRecord) -> None:
        applied = await self._db.conditional(self._st.insert_domain_id, (record.id, record.name))
        if not applied:
            raise ConditionFailedError(f"domain exists already (id {record.id!r})")
        applied = await self._db.conditional(
            self._st.insert_domain,
            (record.name, record.id, record.info, record.notification_version),
        )
        if not applied:
            # Conditional, so a concurrent create that won this id is never undone.
            await self._db.conditional(self._st.delete_domain_id, (record.id, record.name))
            raise ConditionFailedError(f"domain exists already (name {record.name!r})")

    async def get_domain(self, name: str, domain_id: str) -> DomainRecord | None:
        if not name and not domain_id:
            raise ValueError("get_domain needs a name or a domain_id")
        if domain_id:
            rows = await self._db.execute(self._st.select_domain_id, (domain_id,))
            if not rows or rows[0][0] is None or (name and rows[0][0] != name):
                return None
            name = rows[0][0]
        rows = await self._db.execute(self._st.select_domain, (name,))
        if not rows:
            return None
        found = _domain(rows[0])
        # An id row a failed create left behind may name a record of another domain.
        return None if domain_id and found.id != domain_id else found

    async def update_domain(self, record: DomainRecord, expected_version: int) -> None:
        applied = await self._db.conditional(
            self._st.update_domain,
            (record.info, record.notification_version, record.name, record.id, expected_version),
        )
        if not applied:
            raise ConditionFailedError(
                f"domain {record.id!r} ({record.name!r}): expected notification_version "
                f"{expected_version}"
            )

    async def list_domains(self, page_size: int, token: bytes) -> tuple[list[DomainRecord], bytes]:
        check_page_size(page_size)
        after = key_after(TOKEN_TAG, token, "domain") or ""
        # One row past the page tells whether another page exists.
        rows = await self._db.execute(self._st.list_domains, (after, page_size + 1))
        page = [_domain(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return page, key_token(TOKEN_TAG, page[-1].name) if more else b""
