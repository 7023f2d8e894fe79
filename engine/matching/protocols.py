"""The matching protocol: add tasks to task lists, long-poll them, sync-offer queries.

Guarantees every backend (memory embedded, Redis distributed) keeps:
- A task added is handed to at most one poller at a time, and to a waiting poller at once
  (sync match) when there is one; otherwise it waits in the backlog until polled or until its
  TTL passes (then it is dropped silently).
- `poll` returns None when `timeout` passes with nothing to hand out (never an error).
- Tasks are at-least-once: the engine dedupes (RecordStarted) so a task handed out twice is
  harmless. The engine can always rebuild a lost backlog from mutable state; `backlog_epoch`
  tells it when one was lost.
- Queries are never stored: `offer_query` succeeds only if a poller takes it within the
  timeout; pollers of a decision task list receive queries before backlog tasks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol


class TaskType(enum.IntEnum):
    DECISION = 0
    ACTIVITY = 1


@dataclass(frozen=True, slots=True)
class PolledTask:
    payload: bytes
    # True when the payload is a query offered with `offer_query`.
    is_query: bool = False


@dataclass(frozen=True, slots=True)
class PollerInfo:
    identity: str
    last_access_ns: int


class TaskMatcher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def add_task(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        payload: bytes,
        ttl_seconds: float | None = None,
    ) -> None: ...

    async def poll(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        timeout_seconds: float,
        identity: str = "",
    ) -> PolledTask | None: ...

    async def offer_query(
        self, domain_id: str, task_list: str, payload: bytes, timeout_seconds: float
    ) -> bool: ...

    async def pollers(
        self, domain_id: str, task_list: str, task_type: TaskType
    ) -> list[PollerInfo]:
        """Recent pollers of the task list (for DescribeTaskList)."""
        ...

    async def backlog(self, domain_id: str, task_list: str, task_type: TaskType) -> int: ...

    async def backlog_epoch(self) -> str:
        """An id of the storage holding the backlogs. It changes when that storage lost its
        contents (Redis restarted empty or was flushed), telling the engine to rebuild every
        backlog from mutable state."""
        ...
