"""Fault-test tooling: `cadenza serve` processes on the real services of `deploy/local-cluster`.

- `require_services()` fails (never skips) a test whose Kafka, Cassandra or Redis is down,
  naming the command that starts them.
- `FaultCluster` is one test's cluster: a config of its own (Cassandra keyspace and Kafka
  namespace `fault_<random>`, so several test runs share the services), its schema, the serve
  processes it started, and `cleanup()`, which kills them and drops everything it created
  (keyspace, topics, the Redis task lists of its domains).
- `ServeNode` is one `cadenza serve` process: kill -9, SIGSTOP/SIGCONT, and its structlog JSON
  log read back as records.
- `service_down(name)` stops one service with `deploy/local-cluster down NAME` for the body of
  an `async with` and always brings it back up, holding `RESTART_LOCK` meanwhile: other
  engineers' runs on the same cluster stay away while it exists.
- `after_test()` is the backstop for a test cut short (pytest-timeout stops the event loop
  where it stands, so `finally` blocks may not finish): it brings any stopped service back
  up and cleans up every cluster not cleaned up yet. Call it from a synchronous fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from cadence import Client
from cadence.api.v1 import service_domain_pb2

from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "deploy" / "local-cluster"
RESTART_LOCK = Path("/tmp/cluster-restart.lock")

CASSANDRA = "127.0.0.1"
KAFKA = "127.0.0.1:9092"
# Task lists are keyed by domain id (random per keyspace), so this database can be shared;
# it is not the one the distributed e2e run flushes (1).
REDIS = "redis://127.0.0.1:6379/0"
SERVICES = {"kafka": 9092, "cassandra": 9042, "redis": 6379}
NUM_SHARDS = 8
CLI = [sys.executable, "-m", "engine.cli"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
UP_HINT = "start them with `deploy/local-cluster up`"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def require_services() -> None:
    """Fail the test, naming `deploy/local-cluster up`, unless every service answers."""
    down = [f"{name} (127.0.0.1:{port})" for name, port in SERVICES.items() if not _port_open(port)]
    if down:
        raise AssertionError(f"{', '.join(down)} not reachable: {UP_HINT}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServeNode:
    """One `cadenza serve` process of a `FaultCluster`, logging JSON lines to `log`."""

    def __init__(self, config: Path, log: Path, node_id: str, port: int, domain: str) -> None:
        self.node_id = node_id
        self.port = port
        self.log = log
        self._out: IO[bytes] | None = log.open("ab")
        self.proc = subprocess.Popen(
            [
                *CLI, "serve", "--config", str(config), "--port", str(port),
                "--node-id", node_id, "--domain", domain,
            ],
            cwd=REPO,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=ENV,
        )  # fmt: skip

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    async def wait_ready(self, client: Client, domain: str, timeout: float = 60) -> None:
        """Until the frontend answers DescribeDomain for `domain` (registered at start)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        while True:
            if not self.alive():
                raise AssertionError(f"{self.node_id} exited: {self.tail()}")
            try:
                await client.domain_stub.DescribeDomain(
                    service_domain_pb2.DescribeDomainRequest(name=domain), timeout=2
                )
                return
            except Exception:  # noqa: BLE001 - not up yet (any status: we only wait)
                if loop.time() > until:
                    raise AssertionError(
                        f"{self.node_id} did not answer in {timeout} s: {self.tail()}"
                    ) from None
            await asyncio.sleep(0.3)

    def records(self) -> list[dict[str, Any]]:
        """The process's structlog records (JSON lines), oldest first."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == name]

    def owned_shards(self) -> set[int]:
        """Shards this process holds now, by its shard_acquired/shard_released/lost log."""
        owned: set[int] = set()
        for record in self.records():
            event = record.get("event")
            if event == "shard_acquired":
                owned.add(int(record["shard_id"]))
            elif event in ("shard_released", "shard_ownership_lost"):
                owned.discard(int(record["shard_id"]))
        return owned

    def kill(self) -> None:
        """kill -9: no clean-up of any kind happens in the process."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        assert self.proc.returncode == -signal.SIGKILL

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.alive():
            # A stopped process would never see SIGKILL's siblings; SIGCONT is harmless.
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._out is not None:
            self._out.close()
            self._out = None


# Clusters whose clean-up has not finished, for `after_test`.
_unclean: list[FaultCluster] = []


class FaultCluster:
    """One test's keyspace, Kafka namespace and serve processes (see the module docstring)."""

    def __init__(self, workdir: Path, domain: str, num_shards: int = NUM_SHARDS) -> None:
        require_services()
        _unclean.append(self)
        self.name = f"fault_{uuid.uuid4().hex[:12]}"
        self.workdir = workdir
        self.domain = domain
        self.num_shards = num_shards
        self.config = workdir / f"{self.name}.yaml"
        self.config.write_text(
            f"persistence_url: cassandra://{CASSANDRA}/{self.name}\n"
            f"queues_url: kafka://{KAFKA}/{self.name}\n"
            f"matching_url: {REDIS}\n"
            f"num_shards: {num_shards}\n"
        )
        self.nodes: list[ServeNode] = []
        self.domain_ids: set[str] = set()

    async def apply_schema(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *CLI, "schema", "apply", "--config", str(self.config),
            cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise AssertionError(f"schema apply failed ({UP_HINT}?): {out.decode()[-2000:]}")

    def start_node(self, node_id: str) -> ServeNode:
        node = ServeNode(
            self.config, self.workdir / f"{node_id}.log", node_id, free_port(), self.domain
        )
        self.nodes.append(node)
        return node

    async def remember_domain(self, client: Client) -> None:
        """Note the domain's id, so clean-up can find its Redis task lists."""
        resp = await client.domain_stub.DescribeDomain(
            service_domain_pb2.DescribeDomainRequest(name=self.domain), timeout=10
        )
        self.domain_ids.add(resp.domain.id)

    async def cleanup(self) -> None:
        """Kill every process, then drop the keyspace, the topics and the task lists."""
        for node in self.nodes:
            node.stop()
        errors: list[str] = []
        for step in (self._drop_keyspace, self._delete_topics, self._delete_task_lists):
            try:
                await asyncio.wait_for(step(), 120)
            except Exception as exc:  # noqa: BLE001 - try every step, report all
                errors.append(f"{step.__name__}: {exc!r}")
        if errors:
            raise AssertionError(f"clean-up of {self.name} failed: {errors}")
        with contextlib.suppress(ValueError):
            _unclean.remove(self)

    async def _drop_keyspace(self) -> None:
        from engine.persistence.cassandra.aio import CassandraUrl, CqlSession

        session = await CqlSession.connect(
            CassandraUrl.parse(f"cassandra://{CASSANDRA}/system"), admin=True
        )
        try:
            await session.execute(f"DROP KEYSPACE IF EXISTS {self.name}")
        finally:
            await session.close()

    async def _delete_topics(self) -> None:
        from engine.queues.factory import channel_topics
        from engine.queues.kafka import KafkaTaskLog

        url = f"kafka://{KAFKA}/{self.name}"
        n = self.num_shards
        topics = {COMMAND_TOPIC: n, TRANSFER_TOPIC: n, TIMER_TOPIC: n} | channel_topics(url)
        await KafkaTaskLog(url, topics).delete_topics()

    async def _delete_task_lists(self) -> None:
        from redis.asyncio import Redis

        redis = Redis.from_url(REDIS)
        try:
            for domain_id in self.domain_ids:
                # The matcher's key layout: <prefix>:tl:<len>:<domain id>:...
                pattern = f"cadenza:tl:{len(domain_id)}:{domain_id}:*"
                keys = [k async for k in redis.scan_iter(match=pattern, count=1000)]
                if keys:
                    await redis.delete(*keys)
        finally:
            await redis.aclose()


async def _local_cluster(action: str, service: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(LOCAL_CLUSTER), action, service,
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(
            f"deploy/local-cluster {action} {service} failed: {out.decode()[-2000:]}"
        )


def _write_lock(service: str) -> None:
    RESTART_LOCK.write_text(f"{os.getpid()} {service} {time.time():.0f}\n")


def _remove_lock() -> None:
    with contextlib.suppress(FileNotFoundError):
        RESTART_LOCK.unlink()


@contextlib.asynccontextmanager
async def service_down(service: str) -> AsyncIterator[None]:
    """Stop `service` for the body; always start it again and wait until it answers, even
    when the stop or the body fails. Holds `RESTART_LOCK` from before the stop until then."""
    assert service in SERVICES, service
    _write_lock(service)
    try:
        try:
            await _local_cluster("down", service)
            yield
        finally:
            await _local_cluster("up", service)
    finally:
        _remove_lock()


def after_test() -> None:
    """Backstop after every test (synchronous, outside any event loop): services up, lock
    released, leftover processes killed and leftover namespaces dropped."""
    for service, port in SERVICES.items():
        if not _port_open(port):
            subprocess.run([str(LOCAL_CLUSTER), "up", service], cwd=REPO, check=False)
    with contextlib.suppress(OSError, ValueError):
        if int(RESTART_LOCK.read_text().split()[0]) == os.getpid():
            _remove_lock()
    while _unclean:
        asyncio.run(_unclean[0].cleanup())
