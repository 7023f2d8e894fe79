"""LocalState: runs of the shards this process owns, as last written.

The shard owner (`ShardController`) keeps the encoded state of the runs it wrote recently.
Components in the same process (frontend, transfer and timer processors) read those instead
of the store: the same bytes, without a round trip. A run not found there is read from the
store as before; in distributed mode a shard may well be owned by another process.
"""

from __future__ import annotations

from typing import Protocol

from engine.persistence.protocols import CurrentRun


class LocalState(Protocol):
    def run_state(self, shard_id: int, key: tuple[str, str, str]) -> bytes | None:
        """The run's encoded state as last written here, or None when not known here."""
        ...

    def current_run(self, shard_id: int, wkey: tuple[str, str]) -> tuple[bool, CurrentRun | None]:
        """(known here, the workflow's current run)."""
        ...

    def known_closed(self, shard_id: int, key: tuple[str, str, str]) -> bool:
        """True only if the run is certainly closed (closed runs never reopen)."""
        ...
