"""Pick the matching backend by URL; backends are imported only when their scheme is asked
for (the shape all three backend factories share: `engine.backends`).

    memory://                          MemoryTaskMatcher, in this process
    redis://host:6379/0  rediss://...  unix:///path/redis.sock
                                       RedisTaskMatcher (the distributed extra)
"""

from __future__ import annotations

from typing import cast

from engine.backends import import_backend, unsupported, url_scheme
from engine.matching.protocols import TaskMatcher

ROLE = "matching"


def open_matcher(url: str) -> TaskMatcher:
    """A matcher for `url`, not yet started.

    Raises:
        BackendUrlError: the URL names no known backend, or its backend is not installed.
    """
    scheme = url_scheme(url)
    if scheme == "memory":
        from engine.matching.memory import MemoryTaskMatcher

        return MemoryTaskMatcher()
    if scheme in ("redis", "rediss", "unix"):
        module = import_backend(ROLE, url, "engine.matching.redis")
        return cast(TaskMatcher, module.RedisTaskMatcher(url))
    raise unsupported(ROLE, url, "memory:// or redis://host:port/db")
