"""Every CQL statement `CassandraStore` runs, prepared once when the store starts.

The texts name their keyspace (`{ks}`), so the session is never bound to one. Row kinds of the
`executions` table and the layout of each table are described in `schema.cql`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, fields
from typing import Any

from engine.persistence.cassandra.aio import CqlSession, Prepared

# Row kinds of the `executions` table (its `type` clustering column).
SHARD, CURRENT, RUN, OUTBOX, OPEN_RUN, VISIBILITY = 0, 1, 2, 3, 4, 5
# Row kinds of the `timers` table.
TIMER_DUE, TIMER_INDEX = 0, 1
# The single partition of `domains_by_name`.
DOMAINS_PARTITION = 0

_SHARD_KEY = "shard_id = ? AND type = 0 AND domain_id = '' AND workflow_id = '' AND run_id = '' \
AND task_id = 0"
_CURRENT_KEY = "shard_id = ? AND type = 1 AND domain_id = ? AND workflow_id = ? AND run_id = '' \
AND task_id = 0"
_RUN_KEY = "shard_id = ? AND type = 2 AND domain_id = ? AND workflow_id = ? AND run_id = ? \
AND task_id = 0"
_FLAG_KEY = "shard_id = ? AND type = ? AND domain_id = ? AND workflow_id = ? AND run_id = ? \
AND task_id = 0"
_OUTBOX_RANGE = "shard_id = ? AND type = 3 AND domain_id = '' AND workflow_id = '' \
AND run_id = ''"

_VIS_COLUMNS = (
    "domain_id, workflow_id, run_id, workflow_type, start_time, execution_time, close_time, "
    "close_status, history_length, task_list, is_cron, memo, search_attributes, parent"
)

TEXTS: dict[str, str] = {
    # --- shards ---
    "select_shard": f"SELECT range_id, owner, applied_offset, outbox_ack FROM {{ks}}.executions "
    f"WHERE {_SHARD_KEY}",
    "insert_shard": "INSERT INTO {ks}.executions (shard_id, type, domain_id, workflow_id, run_id, "
    "task_id, range_id, owner, applied_offset, outbox_ack) "
    "VALUES (?, 0, '', '', '', 0, ?, ?, 0, 0) IF NOT EXISTS",
    # Conditional on the offsets too: the returned row must be exactly what the bump fenced.
    "acquire_shard": "UPDATE {ks}.executions SET range_id = ?, owner = ? "
    f"WHERE {_SHARD_KEY} IF range_id = ? AND applied_offset = ? AND outbox_ack = ?",
    # The fence of every write_shard batch (range_id is set to itself when nothing else moves).
    "fence": f"UPDATE {{ks}}.executions SET range_id = ? WHERE {_SHARD_KEY} IF range_id = ?",
    "fence_offset": "UPDATE {ks}.executions SET range_id = ?, applied_offset = ? "
    f"WHERE {_SHARD_KEY} IF range_id = ?",
    "fence_ack": "UPDATE {ks}.executions SET range_id = ?, outbox_ack = ? "
    f"WHERE {_SHARD_KEY} IF range_id = ?",
    "fence_offset_ack": "UPDATE {ks}.executions SET range_id = ?, applied_offset = ?, "
    f"outbox_ack = ? WHERE {_SHARD_KEY} IF range_id = ?",
    # --- runs and current runs ---
    "select_run": f"SELECT state, next_event_id FROM {{ks}}.executions WHERE {_RUN_KEY}",
    "select_current": "SELECT current_run_id, create_request_id, close_status "
    f"FROM {{ks}}.executions WHERE {_CURRENT_KEY}",
    "insert_run": "INSERT INTO {ks}.executions (shard_id, type, domain_id, workflow_id, run_id, "
    "task_id, state, next_event_id) VALUES (?, 2, ?, ?, ?, 0, ?, ?) IF NOT EXISTS",
    "update_run": "UPDATE {ks}.executions SET state = ?, next_event_id = ? "
    f"WHERE {_RUN_KEY} IF next_event_id = ?",
    "insert_current": "INSERT INTO {ks}.executions (shard_id, type, domain_id, workflow_id, "
    "run_id, task_id, current_run_id, create_request_id, close_status) "
    "VALUES (?, 1, ?, ?, '', 0, ?, ?, ?) IF NOT EXISTS",
    "update_current": "UPDATE {ks}.executions SET current_run_id = ?, create_request_id = ?, "
    f"close_status = ? WHERE {_CURRENT_KEY} IF current_run_id = ?",
    "set_current": "UPDATE {ks}.executions SET current_run_id = ?, create_request_id = ?, "
    f"close_status = ? WHERE {_CURRENT_KEY}",
    "select_next_event_id": f"SELECT next_event_id FROM {{ks}}.executions WHERE {_RUN_KEY}",
    # Open-run rows (kind 4) are bare keys; pending-visibility rows (kind 5) carry the record.
    "insert_open": "INSERT INTO {ks}.executions (shard_id, type, domain_id, workflow_id, run_id, "
    "task_id) VALUES (?, 4, ?, ?, ?, 0)",
    "insert_pending_visibility": "INSERT INTO {ks}.executions (shard_id, type, domain_id, "
    "workflow_id, run_id, task_id, data, version) VALUES (?, 5, ?, ?, ?, 0, ?, ?)",
    "delete_flag": f"DELETE FROM {{ks}}.executions WHERE {_FLAG_KEY}",
    "select_flags": "SELECT domain_id, workflow_id, run_id, data, version FROM {ks}.executions "
    "WHERE shard_id = ? AND type = ?",
    # --- outbox ---
    "insert_outbox": "INSERT INTO {ks}.executions (shard_id, type, domain_id, workflow_id, "
    "run_id, task_id, queue, data) VALUES (?, 3, '', '', '', ?, ?, ?)",
    "delete_outbox_upto": f"DELETE FROM {{ks}}.executions WHERE {_OUTBOX_RANGE} AND task_id <= ?",
    "select_outbox": "SELECT task_id, queue, data FROM {ks}.executions "
    f"WHERE {_OUTBOX_RANGE} AND task_id > ?",
    # --- history ---
    "insert_history": "INSERT INTO {ks}.history (domain_id, workflow_id, run_id, shard_id, "
    "first_event_id, range_id, event_count, events) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "select_history": "SELECT shard_id, first_event_id, event_count, events FROM {ks}.history "
    "WHERE domain_id = ? AND workflow_id = ? AND run_id = ? AND first_event_id >= ?",
    # --- timers ---
    "select_timer_index": "SELECT task_id, indexed_fire_ns FROM {ks}.timers "
    "WHERE shard_id = ? AND kind = 1 AND fire_ns = 0 AND task_id IN ?",
    "insert_timer": "INSERT INTO {ks}.timers (shard_id, kind, fire_ns, task_id, value) "
    "VALUES (?, 0, ?, ?, ?)",
    "insert_timer_index": "INSERT INTO {ks}.timers (shard_id, kind, fire_ns, task_id, "
    "indexed_fire_ns) VALUES (?, 1, 0, ?, ?)",
    "delete_timer": "DELETE FROM {ks}.timers WHERE shard_id = ? AND kind = ? AND fire_ns = ? "
    "AND task_id = ?",
    "select_due_timers": "SELECT fire_ns, task_id, value FROM {ks}.timers "
    "WHERE shard_id = ? AND kind = 0 AND fire_ns <= ? LIMIT ?",
    # --- domains ---
    "insert_domain_id": "INSERT INTO {ks}.domains (id, name) VALUES (?, ?) IF NOT EXISTS",
    "delete_domain_id": "DELETE FROM {ks}.domains WHERE id = ? IF name = ?",
    "select_domain_id": "SELECT name FROM {ks}.domains WHERE id = ?",
    "insert_domain": "INSERT INTO {ks}.domains_by_name (domains_partition, name, id, info, "
    "notification_version) VALUES (0, ?, ?, ?, ?) IF NOT EXISTS",
    "update_domain": "UPDATE {ks}.domains_by_name SET info = ?, notification_version = ? "
    "WHERE domains_partition = 0 AND name = ? IF id = ? AND notification_version = ?",
    "select_domain": "SELECT id, name, info, notification_version FROM {ks}.domains_by_name "
    "WHERE domains_partition = 0 AND name = ?",
    "list_domains": "SELECT id, name, info, notification_version FROM {ks}.domains_by_name "
    "WHERE domains_partition = 0 AND name > ? LIMIT ?",
    # --- schedules ---
    "insert_schedule": "INSERT INTO {ks}.schedules (domain_id, schedule_id, data, version) "
    "VALUES (?, ?, ?, ?) IF NOT EXISTS",
    "select_schedule": "SELECT domain_id, schedule_id, data, version FROM {ks}.schedules "
    "WHERE domain_id = ? AND schedule_id = ?",
    "update_schedule": "UPDATE {ks}.schedules SET data = ?, version = ? "
    "WHERE domain_id = ? AND schedule_id = ? IF version = ?",
    "delete_schedule": "DELETE FROM {ks}.schedules WHERE domain_id = ? AND schedule_id = ? "
    "IF EXISTS",
    "list_schedules": "SELECT domain_id, schedule_id, data, version FROM {ks}.schedules "
    "WHERE domain_id = ? AND schedule_id > ? LIMIT ?",
    # --- visibility ---
    "upsert_visibility": f"INSERT INTO {{ks}}.visibility ({_VIS_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    "select_visibility": f"SELECT {_VIS_COLUMNS} FROM {{ks}}.visibility "
    "WHERE domain_id = ? AND workflow_id = ? AND run_id = ?",
    "select_domain_visibility": f"SELECT {_VIS_COLUMNS} FROM {{ks}}.visibility WHERE domain_id = ?",
    # --- schema ---
    "select_schema_version": "SELECT version FROM {ks}.schema_version WHERE keyspace_name = ?",
    # --- cluster: the recorded shard count, node leases ---
    "select_num_shards": "SELECT num_shards FROM {ks}.cluster WHERE id = 0",
    "insert_num_shards": "INSERT INTO {ks}.cluster (id, num_shards) VALUES (0, ?) IF NOT EXISTS",
    # Partition keys only: a token-range walk over the shards' partitions, not their rows.
    "select_shard_ids": "SELECT DISTINCT shard_id FROM {ks}.executions",
    "insert_node_lease": "INSERT INTO {ks}.node_leases "
    "(node_id, claim_token, host, pid, address, since_ns) VALUES (?, ?, ?, ?, ?, ?) "
    "IF NOT EXISTS USING TTL ?",
    # Every column again: each cell carries its own TTL, so all of them must be renewed.
    "renew_node_lease": "UPDATE {ks}.node_leases USING TTL ? "
    "SET claim_token = ?, host = ?, pid = ?, address = ?, since_ns = ? "
    "WHERE node_id = ? IF claim_token = ?",
    "delete_node_lease": "DELETE FROM {ks}.node_leases WHERE node_id = ? IF claim_token = ?",
}


@dataclass(frozen=True, slots=True)
class Statements:
    """The prepared form of every text in `TEXTS`, by the same name."""

    select_shard: Prepared
    insert_shard: Prepared
    acquire_shard: Prepared
    fence: Prepared
    fence_offset: Prepared
    fence_ack: Prepared
    fence_offset_ack: Prepared
    select_run: Prepared
    select_current: Prepared
    insert_run: Prepared
    update_run: Prepared
    insert_current: Prepared
    update_current: Prepared
    set_current: Prepared
    select_next_event_id: Prepared
    insert_open: Prepared
    insert_pending_visibility: Prepared
    delete_flag: Prepared
    select_flags: Prepared
    insert_outbox: Prepared
    delete_outbox_upto: Prepared
    select_outbox: Prepared
    insert_history: Prepared
    select_history: Prepared
    select_timer_index: Prepared
    insert_timer: Prepared
    insert_timer_index: Prepared
    delete_timer: Prepared
    select_due_timers: Prepared
    insert_domain_id: Prepared
    delete_domain_id: Prepared
    select_domain_id: Prepared
    insert_domain: Prepared
    update_domain: Prepared
    select_domain: Prepared
    list_domains: Prepared
    insert_schedule: Prepared
    select_schedule: Prepared
    update_schedule: Prepared
    delete_schedule: Prepared
    list_schedules: Prepared
    upsert_visibility: Prepared
    select_visibility: Prepared
    select_domain_visibility: Prepared
    select_schema_version: Prepared
    select_num_shards: Prepared
    insert_num_shards: Prepared
    select_shard_ids: Prepared
    insert_node_lease: Prepared
    renew_node_lease: Prepared
    delete_node_lease: Prepared

    @classmethod
    async def prepare(cls, session: CqlSession, keyspace: str) -> Statements:
        """Prepare every statement (concurrently) against `keyspace`."""
        names = [f.name for f in fields(cls)]
        prepared: list[Any] = await asyncio.gather(
            *(session.prepare(TEXTS[name].format(ks=keyspace)) for name in names)
        )
        return cls(**dict(zip(names, prepared, strict=True)))
