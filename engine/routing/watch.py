"""RunWatcher: wakes long polls (GetWorkflowExecutionHistory wait_for_new_event, queries
waiting for a decision) when a run changes the way they wait for.

The shard controller announces the runs of each group-commit write, with their next event id
and whether they are open; with a `NodeChannel` (distributed mode) the announcement reaches
the watchers of every process. A waiter names the change it waits for, so a long poll for the
close event is not woken (and does not reload the run) on every event. Waiters also re-check
on a timeout, so a lost notice only delays them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence

from engine.queues.channel import NodeChannel, RunChange, RunKey

Until = Callable[[RunChange], bool]


def _any_change(change: RunChange) -> bool:
    return True


class RunWatcher:
    def __init__(self, channel: NodeChannel | None = None) -> None:
        self._waiters: dict[RunKey, list[tuple[Until, asyncio.Future[None]]]] = {}
        self.channel = channel

    def announce(self, changes: Sequence[RunChange]) -> None:
        """These runs changed here: wake local waiters and tell the other processes."""
        self.notify(changes)
        if self.channel is not None:
            self.channel.publish_changes(changes)

    def notify(self, changes: Iterable[RunChange]) -> None:
        for change in changes:
            key = (change.domain_id, change.workflow_id, change.run_id)
            waiters = self._waiters.get(key)
            if not waiters:
                continue
            keep = []
            for until, fut in waiters:
                if fut.done():
                    continue
                if until(change):
                    fut.set_result(None)
                else:
                    keep.append((until, fut))
            if keep:
                self._waiters[key] = keep
            else:
                del self._waiters[key]

    async def wait(self, key: RunKey, timeout: float, until: Until = _any_change) -> None:
        """Return when a change of `key` satisfies `until`, or after `timeout` seconds."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append((until, fut))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fut, timeout)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters[:] = [w for w in waiters if w[1] is not fut]
                if not waiters:
                    del self._waiters[key]
