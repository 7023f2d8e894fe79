"""Start-up guards through the real `cadenza` command: a second server on a taken port, on a
database file in use, or with a node id in use is refused with one line naming the first;
a shard count other than the cluster's is refused; bad flags get one readable line each.

The embedded cases run `cadenza dev` processes; the node id and the Cassandra/Kafka shard
counts run `cadenza serve` on the real services (tests/integration/cluster.py).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from engine.routing.topics import COMMAND_TOPIC
from tests.integration.cluster import (
    CLI,
    ENV,
    REPO,
    FaultCluster,
    ServeNode,
    after_test,
    free_port,
)

DOMAIN = "guards"


class Dev:
    """One `cadenza dev` process, its output in a file."""

    def __init__(self, tmp: Path, db: Path, port: int, *args: str) -> None:
        self.port = port
        self.out = tmp / f"dev-{port}-{time.monotonic_ns()}.log"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [*CLI, "dev", "--port", str(port), "--db", str(db), *args],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=ENV,
            )  # fmt: skip

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_serving(self, timeout: float = 30) -> str:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            line = next((x for x in self.text().splitlines() if "serving" in x), None)
            if line is not None:
                return line
            assert self.proc.poll() is None, f"cadenza dev exited: {self.text()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"cadenza dev did not serve in {timeout} s: {self.text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def devs(tmp_path: Path) -> Iterator[list[Dev]]:
    started: list[Dev] = []
    yield started
    for dev in started:
        if dev.proc.poll() is None:
            dev.kill()


def cadenza(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `cadenza ARGS` to its end: a refused start exits at once, a wrongly accepted one
    would keep serving (and fail the test with TimeoutExpired)."""
    return subprocess.run(
        [*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env or ENV
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints (stderr holds nothing else)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def shards_of(banner: str) -> int:
    found = re.search(r"(\d+) shards", banner)
    assert found, banner
    return int(found.group(1))


# -- one port, one database file -------------------------------------------------------------------


def test_a_second_dev_on_a_taken_port_is_refused(tmp_path: Path, devs: list[Dev]) -> None:
    port = free_port()
    first = Dev(tmp_path, tmp_path / "first.db", port)
    devs.append(first)
    first.wait_serving()
    second = cadenza("dev", "--port", str(port), "--db", str(tmp_path / "second.db"))
    assert second.returncode == 1
    assert refusal(second) == (
        f"cadenza: cannot start: port {port} on 127.0.0.1 is already in use "
        "(is another cadenza running?)"
    )
    # Refused before it touched anything; the first one still serves.
    assert not (tmp_path / "second.db").exists()
    assert first.proc.poll() is None


async def test_a_port_taken_after_the_check_still_fails_the_bind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers racing for one port: the loser's check passed, so its gRPC bind must fail
    (gRPC's default SO_REUSEPORT would let it share the port)."""
    import engine.server
    from engine.config import EngineConfig
    from engine.errors import InUseError
    from engine.server import Server
    from engine.startup import check_port_free

    first = Server(EngineConfig(persistence_url=f"sqlite:///{tmp_path / 'a.db'}", port=0))
    await first.start()
    try:
        checks: list[int] = []
        real_check = check_port_free

        def check_passes_once(host: str, port: int) -> None:
            checks.append(port)
            if len(checks) > 1:
                real_check(host, port)

        monkeypatch.setattr(engine.server, "check_port_free", check_passes_once)
        second = Server(
            EngineConfig(persistence_url=f"sqlite:///{tmp_path / 'b.db'}", port=first.port)
        )
        with pytest.raises(InUseError, match=f"port {first.port} on 127.0.0.1 is already in use"):
            await second.start()
        assert checks == [first.port, first.port]
        # What the loser had started is stopped: its file opens again.
        third = Server(EngineConfig(persistence_url=f"sqlite:///{tmp_path / 'b.db'}", port=0))
        await third.start()
        await third.stop()
    finally:
        await first.stop()


def test_a_second_dev_on_a_database_in_use_is_refused_naming_the_first(
    tmp_path: Path, devs: list[Dev]
) -> None:
    db = tmp_path / "shared.db"
    port = free_port()
    first = Dev(tmp_path, db, port)
    devs.append(first)
    first.wait_serving()
    second = cadenza("dev", "--port", str(free_port()), "--db", str(db))
    assert second.returncode == 1
    line = refusal(second)
    assert line.startswith(f"cadenza: cannot start: database {db} is in use by another cadenza")
    assert f"pid {first.proc.pid}" in line
    assert f"serving 127.0.0.1:{port}" in line
    assert re.search(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line), line

    # `schema apply` on the file in use is refused the same way, and changes nothing.
    config = tmp_path / "embedded.yaml"
    config.write_text(f"persistence_url: sqlite:///{db}\n")
    applied = cadenza("schema", "apply", "--config", str(config))
    assert applied.returncode == 1
    assert f"pid {first.proc.pid}" in refusal(applied)
    assert first.proc.poll() is None
    first.stop()
    assert first.proc.returncode == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_database_whose_server_was_killed_opens_again(tmp_path: Path, devs: list[Dev]) -> None:
    db = tmp_path / "killed.db"
    first = Dev(tmp_path, db, free_port())
    devs.append(first)
    first.wait_serving()
    first.kill()  # kill -9: no clean-up of any kind
    again = Dev(tmp_path, db, free_port())
    devs.append(again)
    again.wait_serving()


# -- the shard count -------------------------------------------------------------------------------


def test_another_shard_count_on_an_existing_database_is_refused(
    tmp_path: Path, devs: list[Dev]
) -> None:
    db = tmp_path / "four.db"
    first = Dev(tmp_path, db, free_port())
    devs.append(first)
    assert shards_of(first.wait_serving()) == 4
    first.stop()
    refused = cadenza("dev", "--port", str(free_port()), "--db", str(db), "--shards", "8")
    assert refused.returncode == 1
    assert refusal(refused) == (
        f"cadenza: cannot start: database {db} has 4 shards, not 8: partitions cannot be "
        "changed yet (see issue 11); start it with --shards 4 (num_shards: 4) or with no "
        "shard count"
    )
    # The same count, given or not, is fine.
    same = Dev(tmp_path, db, free_port(), "--shards", "4")
    devs.append(same)
    assert shards_of(same.wait_serving()) == 4


def test_without_shards_an_existing_database_keeps_its_count(
    tmp_path: Path, devs: list[Dev]
) -> None:
    db = tmp_path / "eight.db"
    first = Dev(tmp_path, db, free_port(), "--shards", "8")
    devs.append(first)
    assert shards_of(first.wait_serving()) == 8
    first.stop()
    again = Dev(tmp_path, db, free_port())
    devs.append(again)
    assert shards_of(again.wait_serving()) == 8


def make_old_format(db: Path) -> None:
    """Turn a file into what the build before recorded shard counts left: schema version 2,
    no `cluster` or `node_leases` table (its shards and log rows stay)."""
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE cluster")
        conn.execute("DROP TABLE node_leases")
        conn.execute("PRAGMA user_version = 2")


def test_a_database_from_before_shard_counts_were_recorded(tmp_path: Path, devs: list[Dev]) -> None:
    db = tmp_path / "old.db"
    first = Dev(tmp_path, db, free_port())
    devs.append(first)
    first.wait_serving()
    first.stop()
    make_old_format(db)
    # A wrong count is refused by what the file holds...
    refused = cadenza("dev", "--port", str(free_port()), "--db", str(db), "--shards", "8")
    assert refused.returncode == 1
    assert "has 4 shards, not 8" in refusal(refused)
    # ... and without one, the old file opens with its own, which is recorded from then on.
    again = Dev(tmp_path, db, free_port())
    devs.append(again)
    assert shards_of(again.wait_serving()) == 4
    again.stop()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT num_shards FROM cluster").fetchall() == [(4,)]
        assert conn.execute("PRAGMA user_version").fetchone() == (3,)


# -- flags and settings ----------------------------------------------------------------------------


def test_version() -> None:
    result = cadenza("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cadenza {metadata.version('cadenza')}"


@pytest.mark.parametrize(
    ("args", "env", "lines"),
    [
        (
            ["--port", "99999"],
            {},
            ["cadenza: --port 99999: input should be less than or equal to 65535"],
        ),
        (
            ["--shards", "0", "--port", "-1"],
            {},
            [
                "cadenza: --shards 0: input should be greater than or equal to 1",
                "cadenza: --port -1: input should be greater than or equal to 0",
            ],
        ),
        (
            [],
            {"CADENZA_MAX_BATCH": "lots", "CADENZA_NUM_SHARDS": "0"},
            [
                "cadenza: CADENZA_MAX_BATCH='lots': not a whole number",
                "cadenza: CADENZA_NUM_SHARDS 0: input should be greater than or equal to 1",
            ],
        ),
    ],
)
def test_bad_settings_get_one_readable_line_each(
    tmp_path: Path, args: list[str], env: dict[str, str], lines: list[str]
) -> None:
    result = cadenza(
        "dev", "--db", str(tmp_path / "never.db"), *args, env={**ENV, **env}, timeout=30
    )
    assert result.returncode == 2
    assert sorted(result.stderr.strip().splitlines()) == sorted(lines)
    assert not (tmp_path / "never.db").exists()


def test_bad_serve_settings_name_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("port: 70000\nnum_shard: 8\n")
    result = cadenza("serve", "--config", str(config), timeout=30)
    assert result.returncode == 2
    assert sorted(result.stderr.strip().splitlines()) == [
        f"cadenza: port (in {config}) 70000: input should be less than or equal to 65535",
        f"cadenza: unknown setting num_shard (in {config}); the settings are: "
        "persistence_url, queues_url, matching_url, num_shards, host, port, node_id, "
        "cluster_name, max_batch, roles",
    ]


# -- distributed: node ids, shard counts of the keyspace and the topics ----------------------------


@pytest.fixture
def _after_test() -> Iterator[None]:
    yield
    after_test()


@pytest.fixture
async def cluster(tmp_path: Path, _after_test: None) -> AsyncIterator[FaultCluster]:
    c = FaultCluster(tmp_path, DOMAIN, num_shards=4)
    try:
        await c.apply_schema()
        yield c
    finally:
        await c.cleanup()


async def wait_exit(node: ServeNode, timeout: float = 60) -> int:
    """The exit code of a serve process that must stop by itself (refused)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while (code := node.proc.poll()) is None:
        if loop.time() > until:
            raise AssertionError(f"{node.node_id} was not refused: {node.tail()}")
        await asyncio.sleep(0.2)
    return code


def refusal_of(node: ServeNode) -> str:
    lines = [x for x in node.log.read_text().splitlines() if x.startswith("cadenza:")]
    assert len(lines) == 1, node.tail()
    return lines[0]


@pytest.mark.timeout(240)
async def test_a_node_id_in_use_is_refused_naming_its_holder(cluster: FaultCluster) -> None:
    from cadence import Client

    first = cluster.start_node("node-1")
    client = Client(domain=DOMAIN, target=first.address)
    try:
        await first.wait_ready(client, DOMAIN)
    finally:
        await client.close()
    second = cluster.start_node("node-1")
    assert await wait_exit(second) == 1
    line = refusal_of(second)
    assert line.startswith("cadenza: cannot start: node id 'node-1' is in use by another cadenza")
    assert f"pid {first.proc.pid}" in line
    assert f"serving {first.address}" in line
    assert "within 30 s" in line
    assert first.alive()
    # A clean stop gives the id back at once.
    first.proc.send_signal(signal.SIGTERM)
    first.proc.wait(timeout=60)
    third = cluster.start_node("node-1")
    client = Client(domain=DOMAIN, target=third.address)
    try:
        await third.wait_ready(client, DOMAIN)
    finally:
        await client.close()


@pytest.mark.timeout(240)
async def test_serve_with_another_shard_count_than_the_keyspace_is_refused(
    cluster: FaultCluster,
) -> None:
    from cadence import Client

    first = cluster.start_node("node-1")
    client = Client(domain=DOMAIN, target=first.address)
    try:
        await first.wait_ready(client, DOMAIN)
    finally:
        await client.close()
    first.stop()
    keyspace = cluster.name
    cluster.config.write_text(cluster.config.read_text().replace("num_shards: 4", "num_shards: 8"))
    refused = cluster.start_node("node-2")
    assert await wait_exit(refused) == 1
    assert refusal_of(refused).startswith(
        f"cadenza: cannot start: cassandra://127.0.0.1/{keyspace} has 4 shards, not 8:"
    )


@pytest.mark.timeout(240)
async def test_serve_refuses_a_command_topic_with_another_partition_count(
    cluster: FaultCluster,
) -> None:
    from engine.queues.kafka import KafkaTaskLog

    # A command topic left by an earlier cluster of 2 partitions; the keyspace is new (4).
    url = f"kafka://127.0.0.1:9092/{cluster.name}"
    old = KafkaTaskLog(url, {COMMAND_TOPIC: 2})
    await old.start()
    await old.stop()
    refused = cluster.start_node("node-1")
    assert await wait_exit(refused) == 1
    line = refusal_of(refused)
    assert line.startswith(
        f"cadenza: cannot start: kafka topic '{cluster.name}.{COMMAND_TOPIC}' has 2 partitions "
        "but the log is configured with 4"
    ), line
