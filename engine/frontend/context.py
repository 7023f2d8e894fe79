"""FrontendContext: what every frontend handler shares (store, bus, matching, domains)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cadence.api.v1 import history_pb2

from engine.clock import Clock
from engine.errors import EntityNotExistsError, quote
from engine.history.views import LocalState
from engine.ids import shard_for
from engine.matching.protocols import TaskMatcher
from engine.model.state import MutableState, decode_state
from engine.persistence.protocols import Store
from engine.routing.bus import CommandBus
from engine.routing.watch import RunWatcher


@dataclass
class FrontendContext:
    store: Store
    bus: CommandBus
    matcher: TaskMatcher
    domains: Any  # engine.frontend.domain.DomainHandler
    watcher: RunWatcher
    clock: Clock
    num_shards: int
    allowed_search_attributes: frozenset[str]
    # Set when the history role runs in this process: reads of its shards skip the store.
    local: LocalState | None = None

    def shard(self, workflow_id: str) -> int:
        return shard_for(workflow_id, self.num_shards)

    async def load_run(self, domain_id: str, workflow_id: str, run_id: str) -> MutableState:
        """A run's mutable state as last written (the shard writes before it replies)."""
        shard = self.shard(workflow_id)
        local = self.local
        if not run_id:
            known, cur = (
                local.current_run(shard, (domain_id, workflow_id))
                if local is not None
                else (False, None)
            )
            if not known:
                cur = await self.store.get_current_run(shard, domain_id, workflow_id)
            if cur is None:
                raise EntityNotExistsError(f"Workflow execution not found: {quote(workflow_id)}")
            run_id = cur.run_id
        raw = local.run_state(shard, (domain_id, workflow_id, run_id)) if local else None
        if raw is None:
            snap = await self.store.get_run(shard, domain_id, workflow_id, run_id)
            if snap is None:
                raise EntityNotExistsError(
                    f"Workflow execution not found: {quote(workflow_id)}/{quote(run_id)}"
                )
            raw = snap.state
        return decode_state(raw)

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
        batches = await self.store.read_history(
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
