"""Client driver: the official cadence-python-client, as a user runs it.

Workflows and activities are the scenario's `Registry` definitions, executed by
`cadence.worker.Worker` (which replays each workflow's history on every decision task: the
client has no workflow cache). Starts and signals go through `cadence.Client`; the result
wait is the long poll on the close event that the README's quickstart uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cadence import Client
from cadence.worker import Worker

from load import api
from load.config import RunConfig
from load.result import Execution

if TYPE_CHECKING:
    from load.scenarios.base import Scenario


class ClientDriver:
    name = "client"
    cadence_api = True

    def __init__(self, config: RunConfig) -> None:
        self._config = config
        self.client = Client(domain=config.domain, target=config.target)

    @contextlib.asynccontextmanager
    async def workers(self, scenario: Scenario, task_list: str) -> AsyncIterator[None]:
        worker = Worker(
            self.client,
            task_list,
            scenario.registry,
            decision_task_pollers=self._config.pollers,
            activity_task_pollers=self._config.pollers,
        )
        async with worker:
            yield

    async def start(
        self, workflow_type: str, args: list[Any], *, workflow_id: str, task_list: str
    ) -> Execution:
        e = await self.client.start_workflow(
            workflow_type,
            *args,
            task_list=task_list,
            workflow_id=workflow_id,
            execution_start_to_close_timeout=timedelta(seconds=self._config.workflow_timeout_s),
        )
        return Execution(e.workflow_id, e.run_id)

    async def signal(self, execution: Execution, name: str, args: list[Any]) -> None:
        await self.client.signal_workflow(execution.workflow_id, execution.run_id, name, *args)

    async def wait_closed(self, execution: Execution) -> str:
        # metadata=None: the client's own interceptor adds the YARPC headers.
        event = await api.wait_closed(
            self.client.workflow_stub, self._config.domain, execution, metadata=None
        )
        return api.close_kind(event)

    def stats(self) -> dict[str, int]:
        return {}

    async def close(self) -> None:
        await self.client.close()
