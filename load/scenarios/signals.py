"""W3 signals: signal throughput to running workflows.

M workflows start and wait; the harness then sends S signals round-robin, `concurrency` in
flight; each workflow completes once it has received its share. Each signal carries its
send time (Unix seconds). A signal counts as processed when the first decision task that
started after it was written completes; "signal sent→processed" is that completion time
minus the send time, read from the histories, so both drivers are measured alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cadence import Registry, workflow
from cadence.api.v1 import decision_pb2

from load import codec
from load.api import event_seconds, wall_now
from load.scenarios.base import (
    Analysis,
    DecisionTask,
    History,
    Scenario,
    complete,
    count,
    kind,
)

if TYPE_CHECKING:
    from load.runner import Run

SIGNAL = "tick"

registry = Registry()


@registry.workflow(name="W3Signals")
class W3Signals:
    def __init__(self) -> None:
        self.received = 0

    @workflow.signal(name=SIGNAL)
    def tick(self, sent_at: float) -> None:
        self.received += 1

    @workflow.run
    async def run(self, share: int) -> int:
        await workflow.wait_condition(lambda: self.received >= share)
        return self.received


class Signals(Scenario):
    name = "w3"
    title = "signals"
    workflow_type = "W3Signals"
    registry = registry

    def share(self, index: int) -> int:
        """Signals workflow `index` receives: signal j goes to workflow j mod M."""
        m, s = self.config.workflows, self.params.signals
        return s // m + (1 if index < s % m else 0)

    def workflow_args(self, index: int, workflow_id: str) -> list[Any]:
        return [self.share(index)]

    def param_dict(self) -> dict[str, int | str]:
        return {**super().param_dict(), "signals": self.params.signals}

    def decide(self, task: DecisionTask) -> list[decision_pb2.Decision]:
        received = count(task.events, "workflow_execution_signaled_event_attributes")
        if received >= task.args[0]:
            return [complete(received)]
        return []  # nothing to do until the rest of the share arrives

    async def drive(self, run: Run) -> None:
        m = self.config.workflows
        await run.for_each(m, run.start, label="started")

        async def send(j: int) -> None:
            await run.signal(j % m, SIGNAL, [wall_now()])

        run.marks["signals begin"] = wall_now()
        await run.for_each(self.params.signals, send, label="signals")
        run.marks["signals sent"] = wall_now()
        await run.for_each(m, run.wait, label="workflows")

    def analyze(self, histories: Sequence[History], run: Run) -> Analysis:
        latencies: list[float] = []
        processed_at: list[float] = []
        received = 0
        for events in histories:
            received += count(events, "workflow_execution_signaled_event_attributes")
            for sent, done in _processed(events):
                latencies.append((done - sent) * 1000)
                processed_at.append(done)
        begin, all_sent = run.marks.get("signals begin"), run.marks.get("signals sent")
        rates: dict[str, float] = {}
        if begin is not None and all_sent is not None and all_sent > begin:
            rates["signals sent"] = run.sent_signals / (all_sent - begin)
        if begin is not None and processed_at and max(processed_at) > begin:
            rates["signals processed"] = len(processed_at) / (max(processed_at) - begin)
        return Analysis(
            counts={
                "signals sent": run.sent_signals,
                "signals received": received,
                "signals processed": len(latencies),
            },
            latencies_ms={"signal sent→processed": latencies},
            event_times={"signals processed": processed_at},
            rates=rates,
        )


def _processed(events: History) -> list[tuple[float, float]]:
    """(send time, processed time) of each signal in one history.

    Signals written before a decision task started are handed to that task; its completion
    processes them. A task that fails or times out hands them back to the next one.
    """
    waiting: list[float] = []
    in_task: list[float] = []
    out: list[tuple[float, float]] = []
    for e in events:
        k = kind(e)
        if k == "workflow_execution_signaled_event_attributes":
            waiting.append(
                codec.decode(e.workflow_execution_signaled_event_attributes.input.data)[0]
            )
        elif k == "decision_task_started_event_attributes":
            in_task, waiting = in_task + waiting, []
        elif k == "decision_task_completed_event_attributes":
            out += [(sent, event_seconds(e)) for sent in in_task]
            in_task = []
        elif k in (
            "decision_task_failed_event_attributes",
            "decision_task_timed_out_event_attributes",
        ):
            waiting, in_task = in_task + waiting, []
    return out
