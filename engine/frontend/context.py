"""FrontendContext: what every frontend handler shares (reads, bus, matching, domains)."""

from __future__ import annotations

from dataclasses import dataclass

from cadence.api.v1 import history_pb2

from engine.clock import Clock
from engine.frontend.domain import DomainHandler
from engine.history.reader import RunReader
from engine.matching.protocols import TaskMatcher
from engine.model.state import MutableState
from engine.persistence.protocols import HistoryStore, VisibilityStore
from engine.routing.bus import CommandBus
from engine.routing.watch import RunWatcher


@dataclass
class FrontendContext:
    # Mutable state: from the shard owner when it runs in this process, else the store.
    runs: RunReader
    history: HistoryStore
    visibility: VisibilityStore
    bus: CommandBus
    matcher: TaskMatcher
    domains: DomainHandler
    watcher: RunWatcher
    clock: Clock
    allowed_search_attributes: frozenset[str]

    async def load_run(self, domain_id: str, workflow_id: str, run_id: str) -> MutableState:
        """A run's mutable state as last written (the shard writes before it replies); an
        empty `run_id` means the current run. Raises EntityNotExistsError (see RunReader)."""
        return await self.runs.load(domain_id, workflow_id, run_id)

    async def read_events(
        self,
        domain_id: str,
        workflow_id: str,
        run_id: str,
        first_event_id: int,
        max_events: int,
        before_event_id: int,
    ) -> list[history_pb2.HistoryEvent]:
        """Committed events in [first_event_id, before_event_id): `before_event_id` is a
        committed next_event_id the caller has (so the store need not look up where the
        history ends), and nothing at or past it is returned."""
        batches = await self.history.read_history(
            domain_id,
            workflow_id,
            run_id,
            first_event_id,
            max_events,
            before_event_id=before_event_id,
        )
        events: list[history_pb2.HistoryEvent] = []
        for b in batches:
            events.extend(history_pb2.History.FromString(b.events).events)
        return [e for e in events if e.event_id < before_event_id]
