"""Chooses the matching backend by URL; backends are imported only when chosen."""

from __future__ import annotations

from engine.matching.protocols import TaskMatcher


def open_matcher(url: str) -> TaskMatcher:
    if url.startswith("memory://"):
        from engine.matching.memory import MemoryTaskMatcher

        return MemoryTaskMatcher()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from engine.matching.redis import RedisTaskMatcher

        return RedisTaskMatcher(url)
    raise ValueError(f"unsupported matching url {url!r} (expected memory:// or redis://)")
