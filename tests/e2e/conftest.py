"""Fixtures: a fresh in-process server per test, a registered domain, an official client.

With CADENZA_E2E_BACKENDS=distributed the same tests run on Cassandra, Kafka and Redis (see
tests/e2e/backends.py); tests marked `embedded_only` (they exercise `cadenza dev` itself) are
deselected then, and each test's keyspace and topics are dropped when it ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cadence import Client

from engine.server import Server
from tests.e2e import backends
from tests.e2e.harness import DOMAIN, register_domain, running_server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not backends.DISTRIBUTED:
        return
    keep = [i for i in items if i.get_closest_marker("embedded_only") is None]
    dropped = [i for i in items if i.get_closest_marker("embedded_only") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def _distributed_session() -> Iterator[None]:
    if backends.DISTRIBUTED:
        asyncio.run(backends.flush_redis())
    yield
    if backends.DISTRIBUTED:
        asyncio.run(backends.drop(backends.created()))


@pytest.fixture(autouse=True)
async def _drop_test_backends() -> AsyncIterator[None]:
    """Drop the keyspaces and topics this test created (module fixtures keep theirs)."""
    before = backends.created()
    yield
    await backends.drop(backends.created() - before)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path / "cadenza.db") as srv:
        yield srv


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    c = Client(domain=DOMAIN, target=server.address)
    await register_domain(c)
    yield c
    await c.close()
