"""A Redis that lost its data (restarted empty, flushed) loses the task-list backlogs; the
engine notices (the matcher's backlog epoch changed) and dispatches every pending task again
from mutable state. On the real services of `deploy/local-cluster` (it must be up)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cadence import Client

from engine.config import EngineConfig
from engine.matching.protocols import TaskType
from engine.server import Server
from tests.e2e import backends
from tests.e2e.harness import DOMAIN, eventually, poll_decision, register_domain, start_raw

# A database of its own: the test empties it, as a Redis restart without its data would.
REDIS = "redis://127.0.0.1:6379/2"


@pytest.mark.timeout(120)
async def test_tasks_lost_with_redis_data_are_dispatched_again(tmp_path: Path) -> None:
    name = f"recovery_{uuid.uuid4().hex[:12]}"
    config = EngineConfig(
        persistence_url=f"cassandra://{backends.CASSANDRA}/{name}",
        queues_url=f"kafka://{backends.KAFKA}/{name}",
        matching_url=REDIS,
        num_shards=2,
        port=0,
    )
    await backends.prepare(config)
    redis = aioredis.Redis.from_url(REDIS)
    server = Server(config)
    try:
        await redis.flushdb()
        await server.start()
        client = Client(domain=DOMAIN, target=server.address)
        try:
            await register_domain(client)
            task_list = f"tl-{uuid.uuid4()}"
            execution = await start_raw(client, task_list)

            domain = await server.store.get_domain(name=DOMAIN)
            assert domain is not None
            domain_id = domain.id
            matcher = server.matcher
            assert matcher is not None

            async def in_redis() -> bool:
                return await matcher.backlog(domain_id, task_list, TaskType.DECISION) == 1

            # The decision task waits in Redis; nobody has polled it. Then Redis loses it.
            await eventually(in_redis)
            await redis.flushdb()
            task = await poll_decision(client, task_list, within=30)
            assert task.workflow_execution.run_id == execution.run_id
            assert task.started_event_id == 3
        finally:
            await client.close()
    finally:
        await server.stop()
        await redis.aclose()
        await backends.drop({config.persistence_url})
