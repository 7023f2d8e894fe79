"""Time, injected: every wait and every timestamp in the engine goes through a Clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Wall-clock time in unix nanoseconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, deadline_ns: int) -> None:
        """Wait until `now_ns()` reaches `deadline_ns` (at once if it has).

        For a deadline worked out before an await: a relative sleep computed from an earlier
        `now` would wait too long by however much time that await took.
        """
        ...


class SystemClock:
    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, deadline_ns: int) -> None:
        await asyncio.sleep(max(0.0, (deadline_ns - time.time_ns()) / 1e9))


class ManualClock:
    """A clock tests move by hand; sleepers wake when `advance` passes their deadline."""

    def __init__(self, start_ns: int = 1_700_000_000 * 10**9) -> None:
        self._now = start_ns
        self._changed = asyncio.Event()

    def now_ns(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += int(seconds * 1e9)
        self._changed.set()
        self._changed = asyncio.Event()

    def sleep(self, seconds: float) -> Coroutine[Any, Any, None]:
        # The deadline is fixed at the call, not when the coroutine first runs: a caller that
        # wraps it in a task must not lose an `advance` that lands before the task starts.
        return self._sleep_until(self._now + int(seconds * 1e9))

    def sleep_until(self, deadline_ns: int) -> Coroutine[Any, Any, None]:
        return self._sleep_until(deadline_ns)

    async def _sleep_until(self, deadline: int) -> None:
        while self._now < deadline:
            await self._changed.wait()
