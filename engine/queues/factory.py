"""Pick the partitioned-log backend, and the node channel it carries, by URL; backends are
imported only when their scheme is asked for (the shape all three backend factories share:
`engine.backends`).

    memory://            InProcessTaskLog on the embedded store's SQLite file (durable);
                         no node channel (one process)
    kafka://host:9092[,host:9092][/namespace]
                         KafkaTaskLog and KafkaNodeChannel (the distributed extra); the
                         namespace prefixes its topic and group names
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from engine.backends import BackendUrlError, import_backend, unsupported, url_scheme
from engine.persistence.protocols import Store
from engine.queues.channel import NodeChannel
from engine.queues.protocols import TaskLog

ROLE = "queues"
EXPECTED = "memory:// or kafka://host:port"


def open_task_log(url: str, topics: Mapping[str, int], store: Store | None = None) -> TaskLog:
    """A log for `url` with the given partition count per topic, not yet started.

    For `memory://` the log lives in the `SqliteStore`'s file and shares its writer thread, so
    embedded mode keeps everything in one durable file. Without a store it uses a private
    in-memory SQLite database: real semantics, but nothing survives the process.

    Raises:
        BackendUrlError: unknown scheme, a memory:// log with a non-SQLite store, or a backend
            that is not installed.
    """
    scheme = url_scheme(url)
    if scheme == "memory":
        from engine.persistence.sqlite.store import SqliteStore
        from engine.queues.inprocess import InProcessTaskLog

        if store is None:
            return InProcessTaskLog(":memory:", topics)
        if not isinstance(store, SqliteStore):
            raise BackendUrlError(
                f"{ROLE} url {url!r}: the in-process log needs the sqlite store, "
                f"got {type(store).__name__}"
            )
        return InProcessTaskLog(store, topics)
    if scheme == "kafka":
        module = import_backend(ROLE, url, "engine.queues.kafka")
        return cast(TaskLog, module.KafkaTaskLog(url, topics))
    raise unsupported(ROLE, url, EXPECTED)


def channel_topics(url: str) -> dict[str, int]:
    """Extra topics the log at `url` needs for its `NodeChannel` (none for the in-process log)."""
    scheme = url_scheme(url)
    if scheme == "memory":
        return {}
    if scheme == "kafka":
        module = import_backend(ROLE, url, "engine.queues.kafka_channel")
        return dict(module.CHANNEL_TOPICS)
    raise unsupported(ROLE, url, EXPECTED)


def open_node_channel(url: str, task_log: TaskLog, node_id: str) -> NodeChannel | None:
    """The channel to other processes over the log `task_log` opened for `url`: None for the
    in-process log, whose process is alone (replies and change notices stay in memory)."""
    scheme = url_scheme(url)
    if scheme == "memory":
        return None
    if scheme == "kafka":
        module = import_backend(ROLE, url, "engine.queues.kafka_channel")
        return cast(NodeChannel, module.KafkaNodeChannel(task_log, node_id))
    raise unsupported(ROLE, url, EXPECTED)
