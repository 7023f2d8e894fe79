-- Embedded-mode schema: one SQLite file holds the state of record (SqliteStore) and the
-- in-process partitioned log (InProcessTaskLog). Applied idempotently on every open, so every
-- statement must be safe to run again (IF NOT EXISTS). Bump PRAGMA user_version (set by
-- engine.persistence.sqlite.db) whenever a change needs a migration.

-- One row per history shard. range_id is the fencing token: acquire_shard bumps it, and
-- write_shard checks it inside the same transaction as the writes it guards.
CREATE TABLE IF NOT EXISTS shards (
    shard_id        INTEGER PRIMARY KEY,
    range_id        INTEGER NOT NULL,
    owner           TEXT    NOT NULL,
    applied_offset  INTEGER NOT NULL DEFAULT 0,
    outbox_ack      INTEGER NOT NULL DEFAULT 0
);

-- What the processes of the cluster agree on (one row, id 0): the shard count, recorded by
-- the first server to start on the file and fixed from then on. A file made before version 3
-- gets it from its shards rows on its next start.
CREATE TABLE IF NOT EXISTS cluster (
    id          INTEGER PRIMARY KEY CHECK (id = 0),
    num_shards  INTEGER NOT NULL
);

-- Node ids in use: one process per node id while its lease (expires_ns, wall clock) runs. The
-- file lock already admits one process per file; the table keeps the protocol of the
-- distributed store, so both pass one conformance suite.
CREATE TABLE IF NOT EXISTS node_leases (
    node_id     TEXT    PRIMARY KEY,
    claim_token TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    address     TEXT    NOT NULL,
    since_ns    INTEGER NOT NULL,
    expires_ns  INTEGER NOT NULL
);

-- Mutable state of every run. is_open mirrors the run's visibility close_status so that
-- list_open_runs (shard recovery) reads one narrow index instead of decoding every state blob.
CREATE TABLE IF NOT EXISTS executions (
    shard_id        INTEGER NOT NULL,
    domain_id       TEXT    NOT NULL,
    workflow_id     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    state           BLOB    NOT NULL,
    next_event_id   INTEGER NOT NULL,
    is_open         INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (shard_id, domain_id, workflow_id, run_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS executions_open
    ON executions (shard_id, domain_id, workflow_id, run_id) WHERE is_open = 1;

-- The current-run pointer per workflow id (Cadence's current_executions).
CREATE TABLE IF NOT EXISTS current_runs (
    shard_id           INTEGER NOT NULL,
    domain_id          TEXT    NOT NULL,
    workflow_id        TEXT    NOT NULL,
    run_id             TEXT    NOT NULL,
    create_request_id  TEXT    NOT NULL,
    close_status       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (shard_id, domain_id, workflow_id)
) WITHOUT ROWID;

-- History batches keyed by their first event id; rewriting a key replaces the batch.
CREATE TABLE IF NOT EXISTS history (
    domain_id       TEXT    NOT NULL,
    workflow_id     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    first_event_id  INTEGER NOT NULL,
    event_count     INTEGER NOT NULL,
    events          BLOB    NOT NULL,
    PRIMARY KEY (domain_id, workflow_id, run_id, first_event_id)
) WITHOUT ROWID;

-- Transfer/timer tasks written with the state change that produced them (transactional
-- outbox); rows at or below the shard's outbox_ack are deleted when the ack moves.
CREATE TABLE IF NOT EXISTS outbox (
    shard_id  INTEGER NOT NULL,
    task_id   INTEGER NOT NULL,
    queue     TEXT    NOT NULL,
    value     BLOB    NOT NULL,
    PRIMARY KEY (shard_id, task_id)
) WITHOUT ROWID;

-- The timer processor's durable index of pending timers.
CREATE TABLE IF NOT EXISTS timers (
    shard_id  INTEGER NOT NULL,
    task_id   INTEGER NOT NULL,
    fire_ns   INTEGER NOT NULL,
    value     BLOB    NOT NULL,
    PRIMARY KEY (shard_id, task_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS timers_due ON timers (shard_id, fire_ns, task_id);

-- Domains are unique by id (primary key) and by name.
CREATE TABLE IF NOT EXISTS domains (
    id                    TEXT    PRIMARY KEY,
    name                  TEXT    NOT NULL UNIQUE,
    info                  BLOB    NOT NULL,
    notification_version  INTEGER NOT NULL
);

-- Schedules (ScheduleAPI), by domain and id; updates are conditional on version.
CREATE TABLE IF NOT EXISTS schedules (
    domain_id    TEXT    NOT NULL,
    schedule_id  TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    version      INTEGER NOT NULL,
    PRIMARY KEY (domain_id, schedule_id)
) WITHOUT ROWID;

-- Visibility records. The column names are a contract with engine.visibility.sqlite_sql,
-- which compiles list-filter queries into WHERE/ORDER BY clauses over this table.
CREATE TABLE IF NOT EXISTS visibility (
    domain_id          TEXT    NOT NULL,
    workflow_id        TEXT    NOT NULL,
    run_id             TEXT    NOT NULL,
    workflow_type      TEXT    NOT NULL,
    start_time         INTEGER NOT NULL,
    execution_time     INTEGER NOT NULL,
    close_time         INTEGER,
    close_status       INTEGER NOT NULL DEFAULT 0,
    history_length     INTEGER NOT NULL DEFAULT 0,
    task_list          TEXT    NOT NULL,
    is_cron            INTEGER NOT NULL DEFAULT 0,
    memo               BLOB    NOT NULL,
    search_attributes  TEXT    NOT NULL DEFAULT '{}',
    parent             BLOB    NOT NULL,
    PRIMARY KEY (domain_id, workflow_id, run_id)
) WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS visibility_by_start ON visibility (domain_id, start_time DESC, run_id);
CREATE INDEX IF NOT EXISTS visibility_by_close ON visibility (domain_id, close_status, close_time);

-- In-process log: records per (topic, partition), offsets from 0.
CREATE TABLE IF NOT EXISTS log_records (
    topic      TEXT    NOT NULL,
    partition  INTEGER NOT NULL,
    offset     INTEGER NOT NULL,
    value      BLOB    NOT NULL,
    PRIMARY KEY (topic, partition, offset)
) WITHOUT ROWID;

-- Per-partition bounds. end_offset survives trimming every record, so offsets never restart
-- at 0; start_offset spares a full scan of log_records at startup.
CREATE TABLE IF NOT EXISTS log_partitions (
    topic         TEXT    NOT NULL,
    partition     INTEGER NOT NULL,
    start_offset  INTEGER NOT NULL DEFAULT 0,
    end_offset    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
) WITHOUT ROWID;

-- Consumer-group positions: the next offset each group reads per partition.
CREATE TABLE IF NOT EXISTS log_group_offsets (
    group_id     TEXT    NOT NULL,
    topic        TEXT    NOT NULL,
    partition    INTEGER NOT NULL,
    next_offset  INTEGER NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
) WITHOUT ROWID;
