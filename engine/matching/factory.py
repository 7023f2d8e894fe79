"""Chooses the matching backend by URL; backends are imported only when chosen."""

from __future__ import annotations

from engine.matching.protocols import TaskMatcher


def open_matcher(url: str) -> TaskMatcher:
    if url.startswith("memory://"):
        from engine.matching.memory import MemoryTaskMatcher

        return MemoryTaskMatcher()
    raise ValueError(f"unsupported matching url {url!r} (expected memory:// or redis://)")
