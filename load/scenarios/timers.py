"""W2 timers: N workflows each sleep a random 1..10 s, then complete.

Fire lateness is read from each history, so both drivers are measured the same way:
due = TimerStarted time + start_to_fire_timeout; "timer fired late" = TimerFired time -
due; "decision after fire late" = DecisionTaskStarted after the TimerFired - due (when a
worker actually got to act on the timer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cadence import Registry, workflow
from cadence.api.v1 import decision_pb2

from load.api import event_seconds
from load.config import RunConfig
from load.scenarios.base import (
    Analysis,
    DecisionTask,
    History,
    Scenario,
    complete,
    count,
    kind,
    start_timer,
)

if TYPE_CHECKING:
    from load.runner import Run

registry = Registry()


@registry.workflow(name="W2Timer")
class W2Timer:
    @workflow.run
    async def run(self, seconds: int) -> int:
        await workflow.sleep(timedelta(seconds=seconds))
        return seconds


class Timers(Scenario):
    name = "w2"
    title = "timers"
    workflow_type = "W2Timer"
    registry = registry

    def __init__(self, config: RunConfig) -> None:
        super().__init__(config)
        # Drawn up front from the seeded rng: the same seed gives every index the same timer,
        # whatever order the concurrent starts happen in.
        low, high = self.params.timer_min_s, self.params.timer_max_s
        self.durations = [self.rng.randint(low, high) for _ in range(config.workflows)]

    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        return [self.durations[index]]

    def param_dict(self) -> dict[str, int | str]:
        return {
            **super().param_dict(),
            "timer_min_s": self.params.timer_min_s,
            "timer_max_s": self.params.timer_max_s,
        }

    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        if count(task.events, "timer_fired_event_attributes"):
            return [complete(task.args[0])]
        return [start_timer("sleep", task.args[0])]

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        fired_late: list[float] = []
        decision_late: list[float] = []
        fired_at: list[float] = []
        for events in histories:
            due = None
            fired = False
            for e in events:
                k = kind(e)
                if k == "timer_started_event_attributes":
                    timeout = e.timer_started_event_attributes.start_to_fire_timeout
                    due = event_seconds(e) + timeout.seconds + timeout.nanos / 1e9
                elif k == "timer_fired_event_attributes" and due is not None:
                    fired = True
                    fired_at.append(event_seconds(e))
                    fired_late.append((event_seconds(e) - due) * 1000)
                elif k == "decision_task_started_event_attributes" and fired and due is not None:
                    decision_late.append((event_seconds(e) - due) * 1000)
                    break
        return Analysis(
            counts={"timers fired": len(fired_late)},
            latencies_ms={
                "timer fired late": fired_late,
                "decision after fire late": decision_late,
            },
            event_times={"timers fired": fired_at},
        )
