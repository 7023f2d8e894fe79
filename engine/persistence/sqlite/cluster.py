"""The `ClusterStore` half of `SqliteStore`: the recorded shard count and node leases.

Functions of a connection, run inside one transaction by `SqliteDatabase` (writes under
BEGIN IMMEDIATE, so a check and the write it guards are one step). Lease expiry is by the
wall clock of the writing process: all of a file's processes run on one machine.
"""

from __future__ import annotations

import sqlite3
import time

from engine.persistence.protocols import NodeLease


def get_num_shards(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT num_shards FROM cluster WHERE id = 0").fetchone()
    if row is not None:
        return int(row[0])
    # A file from before version 3: every shard a server ever ran has a row (a dev server
    # acquires all of them when it starts). The in-process log's topics (commands, transfer,
    # timer) all have one partition per shard.
    top = conn.execute("SELECT MAX(shard_id) FROM shards").fetchone()[0]
    log_top = conn.execute("SELECT MAX(partition) FROM log_partitions").fetchone()[0]
    found = [int(x) for x in (top, log_top) if x is not None]
    return max(found) + 1 if found else None


def record_num_shards(conn: sqlite3.Connection, num_shards: int) -> int:
    conn.execute("INSERT OR IGNORE INTO cluster (id, num_shards) VALUES (0, ?)", (num_shards,))
    return int(conn.execute("SELECT num_shards FROM cluster WHERE id = 0").fetchone()[0])


def claim_node(conn: sqlite3.Connection, lease: NodeLease, ttl_s: int) -> NodeLease | None:
    now = time.time_ns()
    row = conn.execute(
        "SELECT node_id, claim_token, host, pid, address, since_ns, expires_ns FROM node_leases "
        "WHERE node_id = ?",
        (lease.node_id,),
    ).fetchone()
    if row is not None and row[6] > now and row[1] != lease.token:
        return NodeLease(*row[:6])
    _put(conn, lease, now + ttl_s * 1_000_000_000)
    return None


def renew_node(conn: sqlite3.Connection, lease: NodeLease, ttl_s: int) -> bool:
    now = time.time_ns()
    row = conn.execute(
        "SELECT claim_token, expires_ns FROM node_leases WHERE node_id = ?", (lease.node_id,)
    ).fetchone()
    # An expired lease is not ours any more, even if nobody took it: the caller claims again.
    if row is None or row[0] != lease.token or row[1] <= now:
        return False
    _put(conn, lease, now + ttl_s * 1_000_000_000)
    return True


def release_node(conn: sqlite3.Connection, lease: NodeLease) -> None:
    conn.execute(
        "DELETE FROM node_leases WHERE node_id = ? AND claim_token = ?",
        (lease.node_id, lease.token),
    )


def _put(conn: sqlite3.Connection, lease: NodeLease, expires_ns: int) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO node_leases "
        "(node_id, claim_token, host, pid, address, since_ns, expires_ns) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            lease.node_id,
            lease.token,
            lease.host,
            lease.pid,
            lease.address,
            lease.since_ns,
            expires_ns,
        ),
    )
