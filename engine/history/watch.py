"""RunWatcher: wakes long polls (GetWorkflowExecutionHistory wait_for_new_event) when a run
changes. The shard controller notifies after each group-commit write; waiters also re-check
on a timeout, so a missed notification (another process wrote) only delays them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

RunKey = tuple[str, str, str]


class RunWatcher:
    def __init__(self) -> None:
        self._events: dict[RunKey, asyncio.Event] = {}

    def notify(self, keys: Iterable[RunKey]) -> None:
        for key in keys:
            event = self._events.pop(key, None)
            if event is not None:
                event.set()

    async def wait(self, key: RunKey, timeout: float) -> None:
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
