"""The driver seam: how the harness starts, signals and waits on workflows, and who works them.

A driver owns one connection to the server and, while `workers()` is entered, the
processes that poll and complete tasks for one scenario on one task list. The runner
(`load.runner`) only talks to this protocol, so every scenario runs on every driver.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

from load.result import Execution

if TYPE_CHECKING:
    from load.scenarios.base import Scenario


class Driver(Protocol):
    name: str
    """Label in reports: 'client', 'protocol', or a peer's SDK."""
    cadence_api: bool
    """True when the server speaks Cadence's API, so histories can be read and checked."""

    def workers(self, scenario: Scenario, task_list: str) -> AbstractAsyncContextManager[None]:
        """Poll and complete `scenario`'s tasks on `task_list` until the context exits."""
        ...

    async def start(
        self, workflow_type: str, args: list[Any], *, workflow_id: str, task_list: str
    ) -> Execution: ...

    async def signal(self, execution: Execution, name: str, args: list[Any]) -> None: ...

    async def wait_closed(self, execution: Execution) -> str:
        """Block until the run closes; its close kind ('completed', 'failed', ...)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters the driver kept (tasks handled, errors), for the report."""
        ...

    async def close(self) -> None: ...
