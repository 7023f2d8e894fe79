"""`MemoryTaskMatcher`: the embedded `TaskMatcher`, task lists held in this process's memory.

Per task list key (domain_id, task_list, task_type) it keeps a FIFO backlog of tasks, a FIFO
of waiting pollers (each an asyncio future) and, for decision lists, a FIFO of pending query
offers. Everything runs on the event loop and every state change is synchronous, so a hand
out can never race with another one: a task is given to at most one poller.

- `add_task` sync-matches with the longest-waiting poller, else appends to the backlog.
- `poll` takes, in order: a pending query offer (decision lists only), the oldest unexpired
  backlog task, else waits as a poller until something is handed to it or `timeout` passes.
- `offer_query` hands the query to a waiting decision poller, or waits (never in the
  backlog) for one to arrive; it returns True only once a poller has taken the query.

Cancellation safety: a poller cancelled after a task was handed to it but before it resumed
still holds that task in its future; the poller gives it to the next waiting poller or back
to the head of the backlog (a query goes back to the head of the offers), so no task is lost.

Time: TTL expiry uses the injected `Clock` (engine time, so tests drive it with ManualClock);
poll and offer timeouts are network long-poll deadlines and use the event loop's real clock.
Expired tasks are dropped when they reach the head of the backlog or are handed out.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from engine.clock import Clock, SystemClock
from engine.matching.protocols import PolledTask, PollerInfo, TaskType

__all__ = ["MemoryTaskMatcher"]

_NS: Final = 1_000_000_000

_Key = tuple[str, str, TaskType]


@dataclass(slots=True)
class _Task:
    payload: bytes
    # Clock time (ns) from which the task must no longer be handed out; None: never expires.
    expires_ns: int | None


@dataclass(slots=True)
class _QueryOffer:
    payload: bytes
    # Resolved True when a poller takes the query, False when the offer times out, and
    # cancelled when the offering caller goes away. Once done, no poller may take it.
    taken: asyncio.Future[bool]


_Item = _Task | _QueryOffer


@dataclass(slots=True)
class _Waiter:
    # Resolved with the handed-out item, or None on timeout/stop.
    future: asyncio.Future[_Item | None]


@dataclass(slots=True)
class _TaskList:
    backlog: deque[_Task] = field(default_factory=deque)
    waiters: deque[_Waiter] = field(default_factory=deque)
    queries: deque[_QueryOffer] = field(default_factory=deque)
    # identity -> last access (clock ns), for DescribeTaskList.
    pollers: dict[str, int] = field(default_factory=dict)


class MemoryTaskMatcher:
    """An in-memory `TaskMatcher` (see module doc for ordering and cancellation guarantees).

    Args:
        clock: time source for task TTLs and poller bookkeeping.
        poller_ttl_seconds: how long a poller stays listed by `pollers()` after its last poll
            (Cadence's matching keeps poller history for 5 minutes).
    """

    def __init__(self, *, clock: Clock | None = None, poller_ttl_seconds: float = 300.0) -> None:
        self._clock: Clock = clock or SystemClock()
        self._poller_ttl_ns = int(poller_ttl_seconds * _NS)
        self._lists: dict[_Key, _TaskList] = {}
        # The backlog lives and dies with this object (and its process, whose shards are then
        # acquired afresh, which rebuilds them).
        self._epoch = uuid.uuid4().hex

    async def start(self) -> None:
        pass

    async def backlog_epoch(self) -> str:
        return self._epoch

    async def stop(self) -> None:
        """Wake every waiting poller (with None) and fail every pending query offer.

        Backlogs are kept: the matcher can be started again and they are still served.
        """
        for tl in self._lists.values():
            while tl.waiters:
                waiter = tl.waiters.popleft()
                if not waiter.future.done():
                    waiter.future.set_result(None)
            while tl.queries:
                offer = tl.queries.popleft()
                if not offer.taken.done():
                    offer.taken.set_result(False)

    async def __aenter__(self) -> MemoryTaskMatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- TaskMatcher ------------------------------------------------------------------------

    async def add_task(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        payload: bytes,
        ttl_seconds: float | None = None,
    ) -> None:
        expires = None if ttl_seconds is None else self._clock.now_ns() + int(ttl_seconds * _NS)
        self._offer(self._list((domain_id, task_list, task_type)), _Task(payload, expires))

    async def poll(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        timeout_seconds: float,
        identity: str = "",
    ) -> PolledTask | None:
        tl = self._list((domain_id, task_list, task_type))
        self._touch(tl, identity)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        try:
            while True:
                item = self._take_ready(tl)
                if item is None:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    item = await self._wait(tl, remaining)
                    if item is None:
                        return None
                polled = self._claim(item)
                if polled is not None:
                    return polled
                # A stale item (expired task, withdrawn query): keep polling.
        finally:
            self._touch(tl, identity)

    async def offer_query(
        self, domain_id: str, task_list: str, payload: bytes, timeout_seconds: float
    ) -> bool:
        tl = self._list((domain_id, task_list, TaskType.DECISION))
        loop = asyncio.get_running_loop()
        offer = _QueryOffer(payload, loop.create_future())
        self._offer(tl, offer)

        def expire() -> None:
            if not offer.taken.done():
                offer.taken.set_result(False)

        timer = loop.call_later(max(0.0, timeout_seconds), expire)
        try:
            # If our caller is cancelled, awaiting cancels `taken` too, which withdraws the
            # offer: pollers skip done offers.
            return await offer.taken
        finally:
            timer.cancel()
            try:
                tl.queries.remove(offer)
            except ValueError:
                pass

    async def pollers(
        self, domain_id: str, task_list: str, task_type: TaskType
    ) -> list[PollerInfo]:
        tl = self._lists.get((domain_id, task_list, task_type))
        if tl is None:
            return []
        horizon = self._clock.now_ns() - self._poller_ttl_ns
        for identity in [i for i, seen in tl.pollers.items() if seen < horizon]:
            del tl.pollers[identity]
        return sorted(
            (PollerInfo(identity, seen) for identity, seen in tl.pollers.items()),
            key=lambda p: p.last_access_ns,
            reverse=True,
        )

    async def backlog(self, domain_id: str, task_list: str, task_type: TaskType) -> int:
        tl = self._lists.get((domain_id, task_list, task_type))
        if tl is None:
            return 0
        now = self._clock.now_ns()
        live = deque(t for t in tl.backlog if not self._expired(t, now))
        tl.backlog = live
        return len(live)

    # --- internals --------------------------------------------------------------------------

    def _list(self, key: _Key) -> _TaskList:
        # Task lists are never dropped: there are few of them and an empty one costs little.
        tl = self._lists.get(key)
        if tl is None:
            tl = self._lists[key] = _TaskList()
        return tl

    def _touch(self, tl: _TaskList, identity: str) -> None:
        if identity:
            tl.pollers[identity] = self._clock.now_ns()

    @staticmethod
    def _expired(task: _Task, now_ns: int) -> bool:
        return task.expires_ns is not None and now_ns >= task.expires_ns

    def _hand_to_waiter(self, tl: _TaskList, item: _Item) -> bool:
        """Give `item` to the longest-waiting live poller; False if there is none."""
        while tl.waiters:
            waiter = tl.waiters.popleft()
            # Done futures belong to pollers that timed out or were cancelled.
            if not waiter.future.done():
                waiter.future.set_result(item)
                return True
        return False

    def _offer(self, tl: _TaskList, item: _Item) -> None:
        """A new item: sync match, else queue it behind what is already waiting."""
        if self._hand_to_waiter(tl, item):
            return
        if isinstance(item, _QueryOffer):
            tl.queries.append(item)
        else:
            tl.backlog.append(item)

    def _give_back(self, tl: _TaskList, item: _Item) -> None:
        """An item handed to a poller that was cancelled before taking it.

        It goes to the next waiting poller, else to the *head* of its queue: it was already
        first in line, and FIFO order among the others is kept.
        """
        if isinstance(item, _QueryOffer) and item.taken.done():
            return  # the offer timed out or was withdrawn meanwhile
        if self._hand_to_waiter(tl, item):
            return
        if isinstance(item, _QueryOffer):
            tl.queries.appendleft(item)
        else:
            tl.backlog.appendleft(item)

    def _take_ready(self, tl: _TaskList) -> _Item | None:
        """The next item a poller may take at once: queries before backlog tasks."""
        while tl.queries:
            offer = tl.queries.popleft()
            if not offer.taken.done():
                return offer
        if tl.backlog:
            now = self._clock.now_ns()
            while tl.backlog:
                task = tl.backlog.popleft()
                if not self._expired(task, now):
                    return task
        return None

    def _claim(self, item: _Item) -> PolledTask | None:
        """Turn a handed-out item into the poll's result; None if it went stale meanwhile."""
        if isinstance(item, _QueryOffer):
            if item.taken.done():
                return None
            item.taken.set_result(True)
            return PolledTask(item.payload, is_query=True)
        if self._expired(item, self._clock.now_ns()):
            return None
        return PolledTask(item.payload)

    async def _wait(self, tl: _TaskList, timeout: float) -> _Item | None:
        """Wait as a poller for up to `timeout` seconds; the handed item, or None."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future())
        tl.waiters.append(waiter)

        def expire() -> None:
            if not waiter.future.done():
                waiter.future.set_result(None)

        # A timer that resolves the same future (rather than asyncio.wait_for) keeps "handed
        # an item" and "timed out" mutually exclusive: whichever comes first wins.
        timer = loop.call_later(timeout, expire)
        try:
            return await waiter.future
        except asyncio.CancelledError:
            fut = waiter.future
            if fut.done() and not fut.cancelled():
                # Handed an item just before being cancelled: pass it on, never drop it.
                item = fut.result()
                if item is not None:
                    self._give_back(tl, item)
            raise
        finally:
            timer.cancel()
            try:
                tl.waiters.remove(waiter)
            except ValueError:
                pass  # already popped by a hand-out
