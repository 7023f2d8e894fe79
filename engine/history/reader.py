"""RunReader: a run's mutable state as last written, for components outside the shard.

The one read path of mutable state for the frontend (describe, history, queries, polls) and
the transfer executor: the shard owner's `LocalState` when the history role runs in this
process and owns the run's shard, else the store. Both hold the same bytes (the owner's view
is what it last *wrote*, never a batch's changes before its write is durable), so a caller
cannot tell where a read was served from; the local view only saves the store round trip.

A run is read by id; `load` also resolves an empty run id to the workflow's current run.
`find` answers None for a run that does not exist (a stale task's run), `load` raises
EntityNotExistsError (a client named it).
"""

from __future__ import annotations

from engine.errors import EntityNotExistsError, quote
from engine.history.views import LocalState
from engine.ids import shard_for
from engine.model.state import MutableState, decode_state
from engine.persistence.protocols import RunStore


class RunReader:
    """Reads runs from the local shard owner, else from the store.

    Args:
        store: where runs are read when this process does not know them.
        num_shards: the cluster's shard count (a run's shard is its workflow id's).
        local: the shard owner of this process, when it runs the history role.
    """

    def __init__(self, store: RunStore, num_shards: int, local: LocalState | None = None) -> None:
        self.store = store
        self.num_shards = num_shards
        self.local = local

    def shard(self, workflow_id: str) -> int:
        return shard_for(workflow_id, self.num_shards)

    async def find(self, domain_id: str, workflow_id: str, run_id: str) -> MutableState | None:
        """The run's state as last written, or None when the run does not exist."""
        raw = await self._raw(self.shard(workflow_id), domain_id, workflow_id, run_id)
        return decode_state(raw) if raw is not None else None

    async def load(self, domain_id: str, workflow_id: str, run_id: str) -> MutableState:
        """The run's state as last written; an empty `run_id` means the current run.

        Raises:
            EntityNotExistsError: no such workflow (no current run) or no such run.
        """
        shard = self.shard(workflow_id)
        if not run_id:
            known, cur = (
                self.local.current_run(shard, (domain_id, workflow_id))
                if self.local is not None
                else (False, None)
            )
            # Known here with no current run is an answer too: the store is not asked.
            if not known:
                cur = await self.store.get_current_run(shard, domain_id, workflow_id)
            if cur is None:
                raise EntityNotExistsError(f"Workflow execution not found: {quote(workflow_id)}")
            run_id = cur.run_id
        raw = await self._raw(shard, domain_id, workflow_id, run_id)
        if raw is None:
            raise EntityNotExistsError(
                f"Workflow execution not found: {quote(workflow_id)}/{quote(run_id)}"
            )
        return decode_state(raw)

    async def _raw(self, shard: int, domain_id: str, workflow_id: str, run_id: str) -> bytes | None:
        if self.local is not None:
            raw = self.local.run_state(shard, (domain_id, workflow_id, run_id))
            if raw is not None:
                return raw
        snap = await self.store.get_run(shard, domain_id, workflow_id, run_id)
        return snap.state if snap is not None else None
