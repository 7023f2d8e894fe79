"""Pick the partitioned-log backend by URL; backends are imported only when asked for.

    memory://            InProcessTaskLog on the embedded store's SQLite file (durable)
    kafka://host:9092[,host:9092][/namespace]
                         KafkaTaskLog (the distributed extra); the namespace prefixes
                         its topic and group names

Nothing registers at import time, so `cadenza dev` never imports aiokafka.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import cast

from engine.persistence.protocols import Store
from engine.queues.channel import NodeChannel
from engine.queues.protocols import TaskLog


def open_task_log(url: str, topics: Mapping[str, int], store: Store | None = None) -> TaskLog:
    """A log for `url` with the given partition count per topic, not yet started.

    For `memory://` the log lives in the `SqliteStore`'s file and shares its writer thread, so
    embedded mode keeps everything in one durable file. Without a store it uses a private
    in-memory SQLite database: real semantics, but nothing survives the process.

    Raises:
        ValueError: unknown scheme, a memory:// log with a non-SQLite store, or a backend that
            is not installed.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme == "memory":
        from engine.persistence.sqlite.store import SqliteStore
        from engine.queues.inprocess import InProcessTaskLog

        if store is None:
            return InProcessTaskLog(":memory:", topics)
        if not isinstance(store, SqliteStore):
            raise ValueError(
                f"queues url {url!r}: the in-process log needs the sqlite store, "
                f"got {type(store).__name__}"
            )
        return InProcessTaskLog(store, topics)
    if scheme == "kafka":
        # By name, so neither mypy nor the import system needs the distributed extra here.
        try:
            module = importlib.import_module("engine.queues.kafka")
        except ImportError as exc:
            raise ValueError(
                f"queues url {url!r}: the kafka backend is not available ({exc})"
            ) from exc
        return cast(TaskLog, module.KafkaTaskLog(url, topics))
    raise ValueError(f"unsupported queues url {url!r}: expected memory:// or kafka://host:port")


def channel_topics(url: str) -> dict[str, int]:
    """Extra topics the log at `url` needs for its `NodeChannel` (none for the in-process log)."""
    if url.partition("://")[0].lower() != "kafka":
        return {}
    module = importlib.import_module("engine.queues.kafka_channel")
    return dict(module.CHANNEL_TOPICS)


def open_node_channel(task_log: TaskLog, node_id: str) -> NodeChannel | None:
    """The channel to other processes for a distributed log; None for the in-process log,
    whose processes are alone (replies and change notices stay in memory)."""
    if type(task_log).__name__ != "KafkaTaskLog":
        return None
    module = importlib.import_module("engine.queues.kafka_channel")
    return cast(NodeChannel, module.KafkaNodeChannel(task_log, node_id))
