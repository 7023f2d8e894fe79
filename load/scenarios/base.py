"""What a scenario is: its workflows for both drivers, how it drives them, what it measures.

A scenario supplies three things and the runner (`load.runner`) does the rest:

- the official-client definitions (`registry`: workflows and activities, run by
  `cadence.worker.Worker` in the client driver);
- a stateless decider for the protocol driver (`decide`): given a decision task's full
  history it returns precomputed decisions, with no replay and no per-run state, so any
  poller can take any task;
- `analyze`, which turns the histories of the finished runs into figures (counts, latency
  samples, event times for throughput), identically for both drivers.

`drive` is what the harness does while the workers run; the default starts each workflow
and waits for it to close, `concurrency` at a time. W3 overrides it to send signals.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from cadence import Registry
from cadence.api.v1 import common_pb2, decision_pb2, history_pb2, tasklist_pb2
from google.protobuf import duration_pb2

from load import codec
from load.api import event_seconds
from load.config import RunConfig
from load.result import Execution

if TYPE_CHECKING:
    from load.runner import Run

History = Sequence[history_pb2.HistoryEvent]

ACTIVITY_TIMEOUT = timedelta(seconds=60)
"""Schedule-to-close timeout of every activity, in both drivers."""
CHILD_TIMEOUT = timedelta(seconds=300)


@dataclass(frozen=True)
class DecisionTask:
    """What a protocol decider sees: the run, its input and its whole history so far."""

    workflow_type: str
    workflow_id: str
    task_list: str
    args: list[Any]
    events: History


@dataclass
class Analysis:
    """Figures a scenario derives from the histories of its finished runs."""

    counts: dict[str, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    event_times: dict[str, list[float]] = field(default_factory=dict)
    """Unix seconds of events worth a throughput curve (e.g. timers fired)."""
    rates: dict[str, float] = field(default_factory=dict)


class Scenario(ABC):
    """One load scenario (W1..W5); subclasses are small and declarative."""

    name: ClassVar[str]
    title: ClassVar[str]
    workflow_type: ClassVar[str]
    """Type of the workflows the harness starts (the parent, for W5)."""
    registry: ClassVar[Registry]
    """Official-client definitions of every workflow and activity type this scenario uses."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.params = config.params
        self.rng = random.Random(config.seed)

    @abstractmethod
    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        """Input of the index-th workflow the harness starts, under `workflow_id`."""

    @abstractmethod
    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        """Protocol driver: the decisions answering this task, from its history alone."""

    def param_dict(self) -> dict[str, int | str]:
        """The parameters this scenario reads, for the report."""
        return {"workflows": self.config.workflows, "concurrency": self.config.concurrency}

    async def drive(self, run: Run) -> None:
        """Default harness side: start each workflow and wait until it closes."""
        await run.for_each(self.config.workflows, run.start_and_wait, label="workflows")

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        """Figures from the finished runs' histories; none by default."""
        return Analysis()

    def related(self, history: History) -> list[Execution]:
        """Other runs whose histories belong to this one (W5's children), to check too."""
        return []


# -- history helpers ---------------------------------------------------------------------------


def kind(event: history_pb2.HistoryEvent) -> str:
    """The event's attribute field, e.g. 'timer_fired_event_attributes'."""
    return event.WhichOneof("attributes") or ""


def of_kind(
    events: Iterable[history_pb2.HistoryEvent], field_name: str
) -> list[history_pb2.HistoryEvent]:
    return [e for e in events if kind(e) == field_name]


def count(events: Iterable[history_pb2.HistoryEvent], field_name: str) -> int:
    return sum(1 for e in events if kind(e) == field_name)


def run_input(events: History) -> list[Any]:
    """The run's input, decoded from its WorkflowExecutionStarted event."""
    started = events[0].workflow_execution_started_event_attributes
    return codec.decode(started.input.data)


def activity_analysis(histories: Sequence[History]) -> Analysis:
    """Activities completed, their scheduled→completed latency and completion times."""
    latencies: list[float] = []
    times: list[float] = []
    for events in histories:
        scheduled = {
            e.event_id: event_seconds(e)
            for e in of_kind(events, "activity_task_scheduled_event_attributes")
        }
        for e in of_kind(events, "activity_task_completed_event_attributes"):
            t = event_seconds(e)
            sched = scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
            latencies.append((t - sched) * 1000)
            times.append(t)
    return Analysis(
        counts={"activities completed": len(times)},
        latencies_ms={"activity scheduled→completed": latencies},
        event_times={"activities completed": times},
    )


# -- decisions (protocol driver) ---------------------------------------------------------------


def duration(td: timedelta) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(td.total_seconds()))


def schedule_activity(
    activity_id: str, activity_type: str, task_list: str, args: Sequence[Any]
) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        schedule_activity_task_decision_attributes=decision_pb2.ScheduleActivityTaskDecisionAttributes(
            activity_id=activity_id,
            activity_type=common_pb2.ActivityType(name=activity_type),
            task_list=tasklist_pb2.TaskList(name=task_list),
            input=common_pb2.Payload(data=codec.encode(args)),
            schedule_to_close_timeout=duration(ACTIVITY_TIMEOUT),
        )
    )


def start_timer(timer_id: str, seconds: int) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        start_timer_decision_attributes=decision_pb2.StartTimerDecisionAttributes(
            timer_id=timer_id, start_to_fire_timeout=duration_pb2.Duration(seconds=seconds)
        )
    )


def start_child(
    domain: str, workflow_id: str, workflow_type: str, task_list: str, args: Sequence[Any]
) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        start_child_workflow_execution_decision_attributes=(
            decision_pb2.StartChildWorkflowExecutionDecisionAttributes(
                domain=domain,
                workflow_id=workflow_id,
                workflow_type=common_pb2.WorkflowType(name=workflow_type),
                task_list=tasklist_pb2.TaskList(name=task_list),
                input=common_pb2.Payload(data=codec.encode(args)),
                execution_start_to_close_timeout=duration(CHILD_TIMEOUT),
                task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
            )
        )
    )


def complete(result: Any) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        complete_workflow_execution_decision_attributes=(
            decision_pb2.CompleteWorkflowExecutionDecisionAttributes(
                result=common_pb2.Payload(data=codec.encode([result]))
            )
        )
    )
