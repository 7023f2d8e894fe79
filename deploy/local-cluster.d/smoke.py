"""End-to-end smoke test of a running deploy/local-cluster with the real client libraries.

Run by `deploy/local-cluster smoke` with the project's venv (needs the `distributed` extra:
aiokafka, cassandra-driver, redis). It touches only its own names: topic `local-cluster-smoke`,
keyspace `local_cluster_smoke`, Redis keys under `local-cluster-smoke:`; each is deleted at the end.

Kafka:     create an 8-partition topic, produce one record per partition, consume them back in a
           consumer group and commit offsets, read the committed offsets back.
Cassandra: create a keyspace and table, write and read a row, run a lightweight transaction
           (the conditional update Cadenza's shard fencing relies on).
Redis:     SET/GET, and a blocking pop served by a push (the long-poll pattern of matching).
"""

# ruff: noqa: T201  (a command-line helper: printing is its output)

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid

HOST = "127.0.0.1"
KAFKA_PORT = int(os.environ.get("LOCAL_CLUSTER_KAFKA_PORT", "9092"))
CASSANDRA_PORT = int(os.environ.get("LOCAL_CLUSTER_CASSANDRA_PORT", "9042"))
REDIS_PORT = int(os.environ.get("LOCAL_CLUSTER_REDIS_PORT", "6379"))
PARTITIONS = 8


def report(name: str, t0: float, detail: str) -> None:
    print(f"  {name:<10} ok in {time.monotonic() - t0:5.2f}s: {detail}", flush=True)


async def smoke_kafka() -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    t0 = time.monotonic()
    boot = f"{HOST}:{KAFKA_PORT}"
    topic = "local-cluster-smoke"
    group = f"local-cluster-smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=boot)
    await admin.start()
    try:
        if topic in await admin.list_topics():
            await admin.delete_topics([topic])
            await asyncio.sleep(1)
        await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
        producer = AIOKafkaProducer(bootstrap_servers=boot, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for p in range(PARTITIONS):
                await producer.send_and_wait(topic, f"record-{p}".encode(), partition=p)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=boot,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            got: set[bytes] = set()
            deadline = time.monotonic() + 60
            while len(got) < PARTITIONS and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    got.update(r.value for r in records if r.value is not None)
            if len(got) != PARTITIONS:
                raise RuntimeError(f"consumed {len(got)} of {PARTITIONS} records")
            await consumer.commit()
            committed = [
                await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)
            ]
            if committed != [1] * PARTITIONS:
                raise RuntimeError(f"committed offsets {committed}, expected 1 on each partition")
        finally:
            await consumer.stop()
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    report("kafka", t0, f"{PARTITIONS} partitions produced, consumed in a group, offsets committed")


def smoke_cassandra() -> None:
    from cassandra.cluster import Cluster

    t0 = time.monotonic()
    cluster = Cluster([HOST], port=CASSANDRA_PORT)
    session = cluster.connect()
    try:
        version = session.execute("SELECT release_version FROM system.local").one()[0]
        session.execute(
            "CREATE KEYSPACE IF NOT EXISTS local_cluster_smoke WITH replication = "
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        )
        session.execute(
            "CREATE TABLE IF NOT EXISTS local_cluster_smoke.shards "
            "(shard_id int PRIMARY KEY, range_id bigint, owner text)"
        )
        session.execute(
            "INSERT INTO local_cluster_smoke.shards (shard_id, range_id, owner) VALUES (1, 1, 'a')"
        )
        applied = session.execute(
            "UPDATE local_cluster_smoke.shards SET range_id = 2, owner = 'b' "
            "WHERE shard_id = 1 IF range_id = 1"
        ).one()[0]
        stale = session.execute(
            "UPDATE local_cluster_smoke.shards SET range_id = 3, owner = 'c' "
            "WHERE shard_id = 1 IF range_id = 1"
        ).one()[0]
        row = session.execute(
            "SELECT range_id, owner FROM local_cluster_smoke.shards WHERE shard_id = 1"
        ).one()
        if not applied or stale or (row.range_id, row.owner) != (2, "b"):
            raise RuntimeError(f"LWT fencing misbehaved: applied={applied} stale={stale} row={row}")
        session.execute("DROP KEYSPACE local_cluster_smoke")
    finally:
        cluster.shutdown()
    report("cassandra", t0, f"release {version}; keyspace, table, write/read, LWT fencing")


async def smoke_redis() -> None:
    import redis.asyncio as aredis

    t0 = time.monotonic()
    r = aredis.Redis(host=HOST, port=REDIS_PORT, db=0)
    try:
        key = "local-cluster-smoke:key"
        await r.set(key, "v")
        if await r.get(key) != b"v":
            raise RuntimeError("GET did not return what SET wrote")
        queue = "local-cluster-smoke:tasks"
        waiter = asyncio.create_task(r.blpop([queue], timeout=5))
        await asyncio.sleep(0.1)
        await aredis.Redis(host=HOST, port=REDIS_PORT, db=0).rpush(queue, "task-1")
        popped = await waiter
        if popped != (queue.encode(), b"task-1"):
            raise RuntimeError(f"BLPOP returned {popped!r}")
        await r.delete(key, queue)
        version = (await r.info("server"))["redis_version"]
    finally:
        await r.aclose()
    report("redis", t0, f"version {version}; SET/GET, BLPOP served by RPUSH")


def main() -> int:
    # The clients log transient, retried conditions (e.g. the group coordinator still being
    # elected right after the first consumer group is created); only errors matter here.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # failures surface as exceptions
    wanted = sys.argv[1:] or ["kafka", "cassandra", "redis"]
    failures = 0
    for name in wanted:
        try:
            if name == "kafka":
                asyncio.run(smoke_kafka())
            elif name == "cassandra":
                smoke_cassandra()
            elif name == "redis":
                asyncio.run(smoke_redis())
            else:
                print(f"  unknown service {name}", file=sys.stderr)
                failures += 1
        except ImportError as e:
            print(
                f"  {name:<10} SKIPPED: client library missing ({e}); "
                "install with: .venv/bin/pip install -e '.[distributed]'",
                file=sys.stderr,
            )
            failures += 1
        except Exception as e:  # noqa: BLE001  (report every failure, then exit non-zero)
            print(f"  {name:<10} FAILED: {type(e).__name__}: {e}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
