"""Which backends the end-to-end suite runs on, and their per-test isolation.

`CADENZA_E2E_BACKENDS=embedded` (the default) gives every server a SQLite file.
`CADENZA_E2E_BACKENDS=distributed` gives it the real services of `deploy/local-cluster`:
a Cassandra keyspace and a Kafka namespace of its own, named after the database path the test
chose, so a test that restarts "its server on the same file" gets the same state back, and
Redis database 1. The conftest drops what a test created once it ends.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from engine.config import EngineConfig
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC

BACKENDS = os.environ.get("CADENZA_E2E_BACKENDS", "embedded")
if BACKENDS not in ("embedded", "distributed"):
    raise ValueError(f"CADENZA_E2E_BACKENDS={BACKENDS!r}: expected embedded or distributed")
DISTRIBUTED = BACKENDS == "distributed"

CASSANDRA = "127.0.0.1"
KAFKA = "127.0.0.1:9092"
REDIS = "redis://127.0.0.1:6379/1"
NUM_SHARDS = 4
UNREACHABLE = "is deploy/local-cluster up? (the distributed e2e run needs Kafka, Cassandra, Redis)"

# Configs whose keyspace and topics exist, in creation order (for clean-up).
_created: dict[str, EngineConfig] = {}


def config_for(db: Path, **overrides: Any) -> EngineConfig:
    """The config of a test server whose state lives at `db` (or its distributed twin)."""
    values: dict[str, Any] = {"port": 0}
    if DISTRIBUTED:
        name = "e2e_" + hashlib.sha1(str(db.resolve()).encode()).hexdigest()[:16]
        values |= {
            "persistence_url": f"cassandra://{CASSANDRA}/{name}",
            "queues_url": f"kafka://{KAFKA}/{name}",
            "matching_url": REDIS,
            "num_shards": NUM_SHARDS,
        }
    else:
        values["persistence_url"] = f"sqlite:///{db}"
    return EngineConfig(**(values | overrides))


async def prepare(config: EngineConfig) -> None:
    """Create the config's keyspace (schema) once; the SQLite store creates its own."""
    if not config.persistence_url.startswith("cassandra://"):
        return
    if config.persistence_url in _created:
        return
    from engine.errors import PersistenceError
    from engine.persistence.cassandra.schema import apply_schema

    try:
        await apply_schema(config.persistence_url)
    except PersistenceError as exc:
        raise AssertionError(f"{exc}: {UNREACHABLE}") from exc
    _created[config.persistence_url] = config


def created() -> set[str]:
    return set(_created)


async def drop(urls: set[str]) -> None:
    """Drop the keyspaces and Kafka topics of these test servers (they must be stopped)."""
    for url in urls:
        config = _created.pop(url)
        await drop_namespace(url.rpartition("/")[2], config.num_shards)


async def drop_namespace(name: str, num_shards: int) -> None:
    """Drop keyspace `name` and the topics of Kafka namespace `name`."""
    from engine.persistence.cassandra.aio import CassandraUrl, CqlSession
    from engine.queues.factory import channel_topics
    from engine.queues.kafka import KafkaTaskLog

    session = await CqlSession.connect(
        CassandraUrl.parse(f"cassandra://{CASSANDRA}/system"), admin=True
    )
    try:
        await session.execute(f"DROP KEYSPACE IF EXISTS {name}")
    finally:
        await session.close()
    url = f"kafka://{KAFKA}/{name}"
    topics = {COMMAND_TOPIC: num_shards, TRANSFER_TOPIC: num_shards, TIMER_TOPIC: num_shards}
    await KafkaTaskLog(url, topics | channel_topics(url)).delete_topics()


async def flush_redis() -> None:
    """Empty the Redis database of the distributed e2e run (task lists of earlier runs)."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS)
    try:
        await client.flushdb()
    finally:
        await client.aclose()
