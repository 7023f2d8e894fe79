"""BacklogRecovery: rebuilds task-list backlogs that matching lost.

Decision and activity tasks wait in matching's backlog (Redis in distributed mode) until a
worker polls them. If that storage loses its contents (Redis restarted without its data, or
was flushed), the tasks are gone while mutable state still says they are scheduled. The
matcher's `backlog_epoch` changes then; on seeing that, this asks every open run of the shards
whose transfer queue this process owns to dispatch its pending tasks again (REFRESH_TASKS).
Dispatch is at-least-once and RecordStarted dedupes, so a task that survived is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from engine.errors import EngineError
from engine.matching.protocols import TaskMatcher
from engine.model.commands import refresh_tasks
from engine.persistence.protocols import ExecutionStore
from engine.routing.bus import CommandBus

log = structlog.get_logger(__name__)


class BacklogRecovery:
    def __init__(
        self,
        matcher: TaskMatcher,
        store: ExecutionStore,
        bus: CommandBus,
        owned: Callable[[], set[int]],
        interval_s: float = 2.0,
    ) -> None:
        self.matcher = matcher
        self.store = store
        self.bus = bus
        self.owned = owned
        self.interval_s = interval_s
        self.epoch = ""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Backlogs at start are rebuilt when the shards are acquired; only later losses count.
        self.epoch = await self.matcher.backlog_epoch()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def check(self) -> int:
        """Compare the epoch; on a change, refresh the owned shards. Returns runs refreshed."""
        epoch = await self.matcher.backlog_epoch()
        if epoch == self.epoch:
            return 0
        shards = sorted(self.owned())
        log.warning("matching_backlog_lost", old=self.epoch, new=epoch, shards=shards)
        refreshed = 0
        for shard_id in shards:
            async for page in self.store.open_runs(shard_id):
                for run in page:
                    await self.bus.post(refresh_tasks(run.domain_id, run.workflow_id, run.run_id))
                refreshed += len(page)
        # Only once every owned shard was refreshed: a failure above retries all of it.
        self.epoch = epoch
        return refreshed

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except (EngineError, OSError) as exc:
                # Redis or the store is down: the next round tries again.
                log.warning("matching_backlog_check_failed", error=repr(exc))
