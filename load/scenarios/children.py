"""W5 children: one parent starts K child workflows at once and waits for all of them.

Each child completes in its first decision. Measures the parent's time to complete and
children per second; the children's histories are checked along with the parent's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cadence import Registry, workflow
from cadence.api.v1 import decision_pb2

from load.api import event_seconds
from load.result import Execution
from load.scenarios.base import (
    CHILD_TIMEOUT,
    Analysis,
    DecisionTask,
    History,
    Scenario,
    complete,
    count,
    of_kind,
    start_child,
)

if TYPE_CHECKING:
    from load.runner import Run

CHILD_TYPE = "W5Child"

registry = Registry()


@registry.workflow(name=CHILD_TYPE)
class W5Child:
    @workflow.run
    async def run(self, index: int) -> int:
        return index


@registry.workflow(name="W5Parent")
class W5Parent:
    @workflow.run
    async def run(self, children: int, id_prefix: str) -> int:
        # Child ids come from the input, not from a random source: replay must see the same.
        results = await asyncio.gather(
            *(
                workflow.execute_child_workflow(
                    CHILD_TYPE,
                    int,
                    i,
                    workflow_id=f"{id_prefix}-c{i}",
                    execution_start_to_close_timeout=CHILD_TIMEOUT,
                )
                for i in range(children)
            )
        )
        return len(results)


class Children(Scenario):
    name = "w5"
    title = "children"
    workflow_type = "W5Parent"
    registry = registry

    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        return [self.params.children, workflow_id]

    def param_dict(self) -> dict[str, int | str]:
        return {**super().param_dict(), "children": self.params.children}

    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        if task.workflow_type == CHILD_TYPE:
            return [complete(task.args[0])]
        total, prefix = task.args
        done = count(task.events, "child_workflow_execution_completed_event_attributes")
        if done >= total:
            return [complete(done)]
        if count(task.events, "start_child_workflow_execution_initiated_event_attributes"):
            return []  # all initiated already: wait for the rest
        domain = self.config.domain
        return [
            start_child(domain, f"{prefix}-c{i}", CHILD_TYPE, task.task_list, [i])
            for i in range(total)
        ]

    def related(self, history: History) -> list[Execution]:
        return [
            Execution(
                e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id,
                e.child_workflow_execution_started_event_attributes.workflow_execution.run_id,
            )
            for e in of_kind(history, "child_workflow_execution_started_event_attributes")
        ]

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        latencies: list[float] = []
        times: list[float] = []
        for events in histories:
            initiated = {
                e.event_id: event_seconds(e)
                for e in of_kind(
                    events, "start_child_workflow_execution_initiated_event_attributes"
                )
            }
            for e in of_kind(events, "child_workflow_execution_completed_event_attributes"):
                attrs = e.child_workflow_execution_completed_event_attributes
                times.append(event_seconds(e))
                latencies.append((times[-1] - initiated[attrs.initiated_event_id]) * 1000)
        return Analysis(
            counts={"children completed": len(times)},
            latencies_ms={"child initiated→completed": latencies},
            event_times={"children completed": times},
            rates={"children": len(times) / run.elapsed_s} if run.elapsed_s else {},
        )
