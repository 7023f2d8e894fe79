"""Run configuration: what one `python -m load <scenario>` invocation asks for.

The CLI (`load.cli`) builds a `RunConfig`; the runner (`load.runner`), the drivers and the
scenarios only read it. Scenario-specific knobs live in `ScenarioParams` so that every
scenario takes the same configuration type and the runner stays scenario-agnostic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

DriverName = Literal["client", "protocol"]
DRIVERS: tuple[DriverName, ...] = ("client", "protocol")


@dataclass(frozen=True)
class ScenarioParams:
    """Knobs that only some scenarios read; the others ignore them."""

    timer_min_s: int = 1
    """W2: shortest timer, whole seconds (Cadence timers have second granularity)."""
    timer_max_s: int = 10
    """W2: longest timer, whole seconds."""
    signals: int = 1000
    """W3: signals sent in total, spread round-robin over the running workflows."""
    activities: int = 100
    """W4: activities the fan-out workflow schedules in its first decision."""
    children: int = 50
    """W5: child workflows the parent starts in its first decision."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """One benchmark run: a scenario, a driver and the server it targets."""

    scenario: str
    """Scenario name: w1 .. w5."""
    target: str = "127.0.0.1:7833"
    """host:port of the server's gRPC frontend."""
    domain: str = "default"
    """Domain (namespace) the workflows run in; registered if missing."""
    workflows: int = 1000
    """Workflows started by the harness (parents only for W5)."""
    concurrency: int = 50
    """Harness-side calls in flight at once (start+wait per workflow, or signal sends)."""
    driver: DriverName = "client"
    """`client`: the official cadence-python-client; `protocol`: raw gRPC pollers."""
    pollers: int = 16
    """Decision pollers and activity pollers (each) the driver's worker runs."""
    params: ScenarioParams = field(default_factory=ScenarioParams)
    warmup: int = 0
    """Workflows run (start and wait) before the clock starts and not counted; scenarios
    with the default drive only (W1 uses it for the peer comparison: both servers warm)."""
    seed: int = 1
    """Seeds every random choice (timer durations), so two runs start the same work."""
    workflow_timeout_s: int = 300
    """Execution start-to-close timeout of each workflow: a stuck run ends as timed out."""
    progress: bool = True
    """Draw a progress bar on stderr."""
    check_histories: bool = True
    """Fetch every history after the run and validate it with the engine's checker."""
    out: Path | None = Path("load/out")
    """Folder for JSON, Markdown and PNG results; None writes nothing."""
