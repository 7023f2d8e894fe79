"""ShardContext: what a process holds while it owns a shard: its fencing token and its
task-id range (Cadence keeps both in its shard context).

Acquiring a shard in the store bumps its `range_id`. Every write of the shard carries it and
the store refuses a write whose `range_id` is not the stored one, so a stale owner is fenced
off. Task ids come from [range_id << TASK_ID_BITS, (range_id + 1) << TASK_ID_BITS): a new owner
always issues larger ids than any earlier one (Cadence's range-based task ids), so task ids
order the outbox across owners.
"""

from __future__ import annotations

TASK_ID_BITS = 32


class ShardContext:
    def __init__(self, shard_id: int, range_id: int) -> None:
        self.shard_id = shard_id
        self.range_id = range_id
        self._task_seq = 0

    def renew(self, range_id: int) -> None:
        """Carry on under a new fencing token: the shard was acquired again by this process."""
        self.range_id = range_id
        self._task_seq = 0

    def next_task_id(self) -> int:
        self._task_seq += 1
        return (self.range_id << TASK_ID_BITS) + self._task_seq
