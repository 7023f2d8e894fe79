"""BatchRecovery: what a loop over a log partition does after a batch it could not apply.

Used by the shard's apply loop (`engine.shards.controller`: a batch whose store write failed)
and by the transfer and timer queue loops (`engine.queues.workers`: a batch of tasks whose
handler failed). The words below are the shard's; for a queue loop read "task" for
"command" and "handle" for "write".

Two kinds of failure, told apart by `engine.errors.can_pass`:

- **An outage** (retryable: the store or the network is down, a deadline passed). Trying the
  same batch again is right, after a pause that doubles up to a cap. Nothing is ever skipped
  for an outage: the commands are fine, the store is not.
- **A refusal** (not retryable: the store refused this data). Trying the same batch again
  will fail the same way, and usually one command is to blame. The failed batch's offset
  range is bisected at once, with no pause: the next batch takes the first half of the range
  known to hold a refusal; when it fails, its own range is the new suspect; when it is
  written, the suspect is what remains. So the healthy commands around a bad one are
  written in about log2(batch) writes, and the bad one ends up alone. A single command that
  is refused is tried `SKIP_AFTER` times in all (a short pause between: the loop reloads the
  shard and drops its cache after every failure, which cures a stale cache or a write whose
  outcome was unknown) and is then skipped: the loop answers it with an error and writes the
  shard's applied offset past it. Past the suspect range, batches are full again.

Any success or skip resets the pause and the count, so a second bad command costs what the
first did instead of inheriting its backoff. The policy only decides; its loop does the
reading, writing, pausing and answering.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import can_pass
from engine.queues.protocols import Record

# Pause after the first outage of a streak, doubling to the cap.
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0
# Attempts of one refused command, in all, before it is skipped; the pause before the n-th
# retry is n x RETRY_PAUSE_S.
SKIP_AFTER = 3
RETRY_PAUSE_S = 0.05


@dataclass(frozen=True)
class Step:
    """The loop's next move after a failure: pause this long, then skip or try again."""

    pause_s: float
    skip: bool = False
    # Whether the failure was an outage (the store is down) rather than a refusal.
    outage: bool = False


class BatchRecovery:
    """The failure state of one shard's loop: its backoff, the offset range being isolated
    and the strikes against the command at the head of the log."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self._backoff = BACKOFF_BASE_S
        # The end of the smallest offset range known to hold a refused command: from the
        # applied offset up to it, batches are halved.
        self._suspect_end: int | None = None
        self._strikes = 0
        self._strike_offset = -1

    def limit(self, applied_offset: int) -> int:
        """How many commands the next batch may hold, given the shard's applied offset."""
        if self._suspect_end is not None and applied_offset >= self._suspect_end:
            self._suspect_end = None
        if self._suspect_end is None:
            return self.max_batch
        return max(1, (self._suspect_end - applied_offset) // 2)

    def succeeded(self) -> None:
        """A batch was written (or a refused command skipped): no pause and no strikes
        carry over to the next failure."""
        self._backoff = BACKOFF_BASE_S
        self._strikes = 0
        self._strike_offset = -1

    def outage(self) -> Step:
        """Something other than the batch's own write failed (a publish, a read, a skip's
        write): pause and try again, never skip."""
        pause = self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return Step(pause, outage=True)

    def failed(self, exc: BaseException, pending: Sequence[Record]) -> Step:
        """The write of `pending` (the batch's records not yet applied, in log order)
        failed with `exc`."""
        if can_pass(exc) or not pending:
            return self.outage()
        # The failed batch holds the refused command: it is the new suspect range (inside
        # any earlier one, since batches never reach past the suspect range's end).
        self._suspect_end = pending[-1].offset + 1
        if len(pending) > 1:
            return Step(0.0)
        offset = pending[0].offset
        if offset != self._strike_offset:
            self._strike_offset = offset
            self._strikes = 0
        self._strikes += 1
        if self._strikes >= SKIP_AFTER:
            return Step(0.0, skip=True)
        return Step(RETRY_PAUSE_S * self._strikes)
