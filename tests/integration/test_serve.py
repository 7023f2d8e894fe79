"""`cadenza serve` and `cadenza schema apply` as processes, on the real services of
`deploy/local-cluster` (it must be up): config errors, the missing-schema error, and two
processes with different roles sharing the shards, driven by the official client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cadence import Client, Registry, workflow
from cadence.api.v1 import service_domain_pb2
from cadence.error import EntityNotExistsError

from engine.execution.checker import check_history
from engine.ids import shard_for
from engine.persistence.cassandra.schema import SCHEMA_VERSION
from tests.e2e import backends
from tests.e2e.harness import close_event, eventually, full_history, register_domain, worker_for

CLI = [sys.executable, "-m", "engine.cli"]
PYTHON_ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}

reg = Registry()
DOMAIN = "serve-test"


@reg.activity()
async def twice(x: int) -> int:
    return 2 * x


@reg.workflow()
class Doubler:
    @workflow.run
    async def run(self, x: int) -> int:
        return await twice.with_options(schedule_to_close_timeout=timedelta(seconds=30)).execute(x)


@reg.workflow()
class Tally:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.items.append(value)

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True

    @workflow.query(name="items")
    def get_items(self) -> list[str]:
        return list(self.items)

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        return self.items


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def cluster_config(tmp_path: Path) -> Iterator[Path]:
    """A config file naming a keyspace and Kafka namespace of this test's own."""
    name = f"serve_{uuid.uuid4().hex[:12]}"
    path = tmp_path / "cluster.yaml"
    path.write_text(
        f"persistence_url: cassandra://{backends.CASSANDRA}/{name}\n"
        f"queues_url: kafka://{backends.KAFKA}/{name}\n"
        f"matching_url: {backends.REDIS}\n"
        "num_shards: 4\n"
    )
    yield path
    asyncio.run(backends.drop_namespace(name, 4))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=PYTHON_ENV
    )


def test_schema_apply_is_idempotent(cluster_config: Path) -> None:
    first = _run("schema", "apply", "--config", str(cluster_config))
    second = _run("schema", "apply", "--config", str(cluster_config))
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert f"schema version {SCHEMA_VERSION}" in first.stdout
    assert second.stdout == first.stdout


def test_serve_without_a_schema_says_to_apply_it(cluster_config: Path) -> None:
    result = _run("serve", "--config", str(cluster_config), "--port", "0")
    assert result.returncode == 1
    assert "cadenza schema apply" in result.stderr


@pytest.mark.parametrize(
    ("extra", "text", "message"),
    [
        (["--roles", "frontend,bogus"], "", "unknown role(s) bogus"),
        ([], "num_shard: 8\n", "num_shard"),
        ([], "num_shards: 0\n", "num_shards"),
        ([], "matching_url: [\n", "bad config"),
    ],
)
def test_bad_config_is_refused_with_a_clear_message(
    tmp_path: Path, extra: list[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = _run("serve", "--config", str(path), *extra)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    result = _run("schema", "apply", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


class Serve:
    """One `cadenza serve` process; its JSON log lines are kept for the test to read."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--config", str(config), *args],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=PYTHON_ENV,
        )

    def owned_shards(self) -> set[int]:
        owned: set[int] = set()
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "shard_acquired":
                    owned.add(int(record["shard_id"]))
                elif record.get("event") == "shard_released":
                    owned.discard(int(record["shard_id"]))
        return owned

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


@pytest.mark.timeout(240)
async def test_two_processes_with_different_roles_share_the_shards(
    cluster_config: Path, tmp_path: Path
) -> None:
    assert _run("schema", "apply", "--config", str(cluster_config)).returncode == 0
    port = _free_port()
    front = Serve(cluster_config, tmp_path / "front.log", "--port", str(port), "--node-id", "front")
    back: Serve | None = None
    client = Client(domain=DOMAIN, target=f"127.0.0.1:{port}")
    try:

        async def front_up() -> bool:
            assert front.proc.poll() is None, front.log.read_text()[-3000:]
            try:
                await client.domain_stub.DescribeDomain(
                    service_domain_pb2.DescribeDomainRequest(name="nope"), timeout=1
                )
            except EntityNotExistsError:
                return True  # it answers
            except Exception:  # noqa: BLE001 - not listening yet
                return False
            raise AssertionError("a domain nobody registered was described")

        await eventually(front_up, timeout=60, interval=0.5)
        # A second process takes a share of the shards.
        # Its API (no transfer or matching role) is for queries and signals below.
        back_port = _free_port()
        back = Serve(
            cluster_config,
            tmp_path / "back.log",
            "--roles",
            "frontend,history,timer",
            "--port",
            str(back_port),
            "--node-id",
            "back",
        )

        async def back_owns_shards() -> bool:
            assert back is not None
            assert back.proc.poll() is None, back.log.read_text()[-3000:]
            return bool(back.owned_shards())

        await eventually(back_owns_shards, timeout=60, interval=0.5)
        await register_domain(client, DOMAIN)
        async with worker_for(client, reg) as worker:
            runs = [
                await client.start_workflow(
                    "Doubler",
                    i,
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=120),
                    workflow_id=f"doubler-{i}-{uuid.uuid4().hex[:6]}",
                )
                for i in range(24)
            ]
            closes = [await asyncio.wait_for(close_event(client, run, DOMAIN), 90) for run in runs]
            # A query through the other frontend: the worker (polling the front process)
            # answers there, and the answer is forwarded to the caller's process.
            other = Client(domain=DOMAIN, target=f"127.0.0.1:{back_port}")
            try:
                tally = await client.start_workflow(
                    "Tally",
                    task_list=worker.task_list,
                    execution_start_to_close_timeout=timedelta(seconds=120),
                )
                await other.signal_workflow(tally.workflow_id, tally.run_id, "add", "x")
                await other.signal_workflow(tally.workflow_id, tally.run_id, "add", "y")

                async def both_seen() -> bool:
                    got = await other.query_workflow(
                        tally.workflow_id, tally.run_id, "items", result_type=list
                    )
                    return bool(got == ["x", "y"])

                await eventually(both_seen, timeout=30, interval=0.5)
                await other.signal_workflow(tally.workflow_id, tally.run_id, "finish")
                closed = await asyncio.wait_for(close_event(other, tally, DOMAIN), 60)
                assert json.loads(
                    closed.workflow_execution_completed_event_attributes.result.data
                ) == ["x", "y"]
            finally:
                await other.close()
        for i, (run, close) in enumerate(zip(runs, closes, strict=True)):
            assert close.HasField("workflow_execution_completed_event_attributes"), close
            result = close.workflow_execution_completed_event_attributes.result.data
            assert json.loads(result) == 2 * i
            check_history(await full_history(client, run, DOMAIN))
        # Both processes applied commands: the back process answered the front's callers
        # over the reply channel.
        owned = back.owned_shards()
        assert owned, back.log.read_text()[-3000:]
        assert any(shard_for(run.workflow_id, 4) in owned for run in runs)
    finally:
        await client.close()
        front.stop()
        if back is not None:
            back.stop()


def test_serve_with_an_unreachable_broker_says_so(cluster_config: Path) -> None:
    assert _run("schema", "apply", "--config", str(cluster_config)).returncode == 0
    broken = cluster_config.with_name("broken.yaml")
    text = cluster_config.read_text().replace(backends.KAFKA, "127.0.0.1:1")
    broken.write_text(text)
    result = _run("serve", "--config", str(broken), "--port", "0")
    assert result.returncode == 1
    assert "kafka at 127.0.0.1:1 is not reachable" in result.stderr
    assert "Traceback" not in result.stderr
