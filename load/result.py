"""The outcome of one run, in the form every writer (JSON, Markdown, PNG) reads.

`RunResult` holds reduced figures (latency summaries, throughput buckets, counts), not raw
samples, so the JSON stays small at any run size. The executions are kept on the object for
callers that want to inspect histories themselves (the end-to-end tests) but not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from load.stats import Bucket, Summary

JSONValue = Any  # json.dumps input; kept loose on purpose (nested dicts of numbers/strings)


@dataclass(frozen=True)
class Execution:
    """A started workflow run, independent of the driver that started it."""

    workflow_id: str
    run_id: str


@dataclass
class RunResult:
    """Figures of one scenario run by one driver against one server."""

    scenario: str
    title: str
    driver: str
    target: str
    domain: str
    params: dict[str, int | str]
    started_at: str
    """ISO 8601 UTC time the measured phase began."""
    elapsed_s: float
    """Wall time of the measured phase (workers already polling, histories not yet fetched)."""
    workflows_started: int
    workflows_completed: int
    workflows_failed: int
    """Closed otherwise than completed (failed, timed out, terminated, ...)."""
    errors: list[str]
    """Harness-side errors (a start or wait that raised), the first few kept verbatim."""
    error_count: int
    counts: dict[str, int]
    rates: dict[str, float]
    latency_ms: dict[str, Summary]
    throughput: dict[str, list[Bucket]]
    histories_checked: int
    violations: list[str]
    harness_cpu_s: float = 0.0
    """CPU seconds the harness process (driver, workers, SDK) used in the measured phase:
    next to elapsed_s it shows whether the client side, not the server, was the limit."""
    load_average: float = 0.0
    """1-minute load average of the machine when the run began (other work skews figures)."""
    executions: list[Execution] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """Every workflow completed, no harness error, every checked history valid."""
        return (
            self.workflows_completed == self.workflows_started
            and self.error_count == 0
            and not self.violations
        )

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "driver": self.driver,
            "target": self.target,
            "domain": self.domain,
            "params": self.params,
            "started_at": self.started_at,
            "load_average_1m": round(self.load_average, 2),
            "elapsed_s": round(self.elapsed_s, 3),
            "harness_cpu_s": round(self.harness_cpu_s, 3),
            "workflows": {
                "started": self.workflows_started,
                "completed": self.workflows_completed,
                "failed": self.workflows_failed,
            },
            "errors": {"count": self.error_count, "first": self.errors},
            "counts": self.counts,
            "rates_per_s": {k: round(v, 2) for k, v in self.rates.items()},
            "latency_ms": {
                k: {n: round(v, 2) for n, v in s.as_dict().items()}
                for k, s in self.latency_ms.items()
            },
            "throughput_per_s": {
                k: [{"t": b.start, "count": b.count, "per_s": b.per_s} for b in buckets]
                for k, buckets in self.throughput.items()
            },
            "histories": {"checked": self.histories_checked, "violations": self.violations},
        }
