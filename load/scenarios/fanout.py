"""W4 fan-out: one workflow schedules K activities at once and completes when all are done.

Measures time to complete (the workflow latency) and activities per second: activities
completed over the measured phase. Every completion wakes the decider (a decision task
per completion batch), so this also loads decision dispatch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cadence import Registry, workflow
from cadence.api.v1 import decision_pb2

from load.scenarios.base import (
    ACTIVITY_TIMEOUT,
    Analysis,
    DecisionTask,
    History,
    Scenario,
    activity_analysis,
    complete,
    count,
    schedule_activity,
)

if TYPE_CHECKING:
    from load.runner import Run

registry = Registry()


@registry.activity(name="w4_work")
async def w4_work(item: int) -> int:
    return item


@registry.workflow(name="W4FanOut")
class W4FanOut:
    @workflow.run
    async def run(self, activities: int) -> int:
        work = w4_work.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT)
        results = await asyncio.gather(*(work.execute(i) for i in range(activities)))
        return len(results)


class FanOut(Scenario):
    name = "w4"
    title = "fan-out"
    workflow_type = "W4FanOut"
    registry = registry

    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        return [self.params.activities]

    def param_dict(self) -> dict[str, int | str]:
        return {**super().param_dict(), "activities": self.params.activities}

    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        total: int = task.args[0]
        done = count(task.events, "activity_task_completed_event_attributes")
        if done >= total:
            return [complete(done)]
        if count(task.events, "activity_task_scheduled_event_attributes"):
            return []  # all scheduled already: wait for the rest
        return [schedule_activity(f"a{i}", "w4_work", task.task_list, [i]) for i in range(total)]

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        analysis = activity_analysis(histories)
        if run.elapsed_s:
            done = analysis.counts["activities completed"]
            analysis.rates["activities"] = done / run.elapsed_s
        return analysis
