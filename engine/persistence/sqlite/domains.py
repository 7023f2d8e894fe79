"""SQLite statements for domains: unique by id and by name, conditional on the version.

Run by `SqliteStore` on the database thread, one transaction per call. The store keeps the
record as given, including its `notification_version`: the caller (the domain manager) bumps
it and passes the version it read as `expected_version`. Pages go by name; the token is the
last name of the previous page, wrapped so callers treat it as opaque.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.errors import ConditionFailedError
from engine.persistence.paging import check_page_size, key_after, key_token
from engine.persistence.protocols import DomainRecord

TOKEN_TAG = b"d1:"


def _domain(row: Sequence[Any]) -> DomainRecord:
    return DomainRecord(id=row[0], name=row[1], info=row[2], notification_version=row[3])


def create_domain(conn: sqlite3.Connection, record: DomainRecord) -> None:
    # Checked explicitly rather than by catching IntegrityError, so the error says which key
    # clashed and no driver exception is used for control flow.
    clash = conn.execute(
        "SELECT id, name FROM domains WHERE id = ? OR name = ? LIMIT 1", (record.id, record.name)
    ).fetchone()
    if clash is not None:
        raise ConditionFailedError(f"domain exists already (id {clash[0]!r}, name {clash[1]!r})")
    conn.execute(
        "INSERT INTO domains (id, name, info, notification_version) VALUES (?, ?, ?, ?)",
        (record.id, record.name, record.info, record.notification_version),
    )


def get_domain(conn: sqlite3.Connection, name: str, domain_id: str) -> DomainRecord | None:
    if domain_id:
        row = conn.execute(
            "SELECT id, name, info, notification_version FROM domains WHERE id = ?", (domain_id,)
        ).fetchone()
    elif name:
        row = conn.execute(
            "SELECT id, name, info, notification_version FROM domains WHERE name = ?", (name,)
        ).fetchone()
    else:
        raise ValueError("get_domain needs a name or a domain_id")
    if row is None:
        return None
    found = _domain(row)
    # Both given: they must name the same domain.
    if name and domain_id and found.name != name:
        return None
    return found


def update_domain(conn: sqlite3.Connection, record: DomainRecord, expected_version: int) -> None:
    if record.name:
        clash = conn.execute(
            "SELECT id FROM domains WHERE name = ? AND id <> ?", (record.name, record.id)
        ).fetchone()
        if clash is not None:
            raise ConditionFailedError(f"domain name {record.name!r} belongs to {clash[0]!r}")
    updated = conn.execute(
        """UPDATE domains SET name = ?, info = ?, notification_version = ?
           WHERE id = ? AND notification_version = ?""",
        (record.name, record.info, record.notification_version, record.id, expected_version),
    ).rowcount
    if updated != 1:
        raise ConditionFailedError(
            f"domain {record.id!r}: expected notification_version {expected_version}"
        )


def list_domains(
    conn: sqlite3.Connection, page_size: int, token: bytes
) -> tuple[list[DomainRecord], bytes]:
    check_page_size(page_size)
    after = key_after(TOKEN_TAG, token, "domain")
    # Keyset paging by the unique name: stable while domains are added or removed.
    if after is None:
        rows = conn.execute(
            "SELECT id, name, info, notification_version FROM domains ORDER BY name LIMIT ?",
            (page_size + 1,),
        ).fetchall()
    else:
        rows = conn.execute(
            """SELECT id, name, info, notification_version FROM domains
               WHERE name > ? ORDER BY name LIMIT ?""",
            (after, page_size + 1),
        ).fetchall()
    page = [_domain(r) for r in rows[:page_size]]
    more = len(rows) > page_size
    return page, key_token(TOKEN_TAG, page[-1].name) if more else b""
