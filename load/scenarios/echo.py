"""W1 echo: start a workflow that runs one activity and completes.

Protocol driver, per run: start -> decision poll -> ScheduleActivityTask -> activity poll ->
activity completed -> decision poll -> CompleteWorkflowExecution. Measures completed
workflows per second and start-to-close latency as the harness sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cadence import Registry, workflow
from cadence.api.v1 import decision_pb2

from load import codec
from load.scenarios.base import (
    ACTIVITY_TIMEOUT,
    Analysis,
    DecisionTask,
    History,
    Scenario,
    activity_analysis,
    complete,
    of_kind,
    schedule_activity,
)

if TYPE_CHECKING:
    from load.runner import Run

registry = Registry()


@registry.activity(name="w1_echo")
async def w1_echo(message: str) -> str:
    return message


@registry.workflow(name="W1Echo")
class W1Echo:
    @workflow.run
    async def run(self, message: str) -> str:
        return await w1_echo.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(
            message
        )


class Echo(Scenario):
    name = "w1"
    title = "echo"
    workflow_type = "W1Echo"
    registry = registry

    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        return [f"m{index}"]

    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        done = of_kind(task.events, "activity_task_completed_event_attributes")
        if done:
            result = done[0].activity_task_completed_event_attributes.result.data
            return [complete(codec.decode(result)[0])]
        return [schedule_activity("echo", "w1_echo", task.task_list, task.args)]

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        return activity_analysis(histories)
