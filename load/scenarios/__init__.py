"""The load scenarios W1..W5, by CLI name."""

from __future__ import annotations

from load.scenarios.base import Scenario
from load.scenarios.children import Children
from load.scenarios.echo import Echo
from load.scenarios.fanout import FanOut
from load.scenarios.signals import Signals
from load.scenarios.timers import Timers

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s for s in (Echo, Timers, Signals, FanOut, Children)
}

__all__ = ["SCENARIOS", "Scenario"]
