"""Fixtures: a fresh in-process server per test, a registered domain, an official client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cadence import Client

from engine.server import Server
from tests.e2e.harness import DOMAIN, register_domain, running_server


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
