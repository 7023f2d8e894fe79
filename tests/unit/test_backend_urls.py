"""The three backend factories choose by URL scheme the same way and refuse the same way:
an unknown scheme and a backend whose extra is not installed raise `BackendUrlError` (a
ValueError the CLI prints), worded alike; the node channel follows the queues URL's scheme."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from engine.backends import BackendUrlError
from engine.matching.factory import open_matcher
from engine.matching.memory import MemoryTaskMatcher
from engine.persistence.factory import open_store
from engine.queues.factory import channel_topics, open_node_channel, open_task_log

TOPICS = {"t": 1}

FACTORIES: dict[str, Callable[[str], Any]] = {
    "persistence": open_store,
    "queues": lambda url: open_task_log(url, TOPICS),
    "matching": open_matcher,
}
# One URL per factory whose backend comes with the distributed extra, and its module.
DISTRIBUTED = {
    "persistence": ("cassandra://h/ks", "engine.persistence.cassandra.store"),
    "queues": ("kafka://h:9092", "engine.queues.kafka"),
    "matching": ("redis://h:6379/0", "engine.matching.redis"),
}


@pytest.mark.parametrize("role", sorted(FACTORIES))
def test_an_unknown_scheme_is_refused_alike(role: str) -> None:
    with pytest.raises(BackendUrlError, match=rf"^unsupported {role} url 'amqp://x': expected "):
        FACTORIES[role]("amqp://x")
    with pytest.raises(BackendUrlError, match=rf"^unsupported {role} url 'no-scheme': "):
        FACTORIES[role]("no-scheme")


@pytest.mark.parametrize("role", sorted(FACTORIES))
def test_a_backend_without_its_extra_is_refused_alike(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, module = DISTRIBUTED[role]
    # None in sys.modules makes `import module` raise ImportError, as a missing driver does.
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendUrlError, match=rf"^{role} url {url!r}: the .* backend is not ins"):
        FACTORIES[role](url)
    with pytest.raises(BackendUrlError, match=r"pip install 'cadenza\[distributed\]'"):
        FACTORIES[role](url)


def test_schemes_are_case_insensitive() -> None:
    assert isinstance(open_matcher("MEMORY://"), MemoryTaskMatcher)


async def test_the_node_channel_follows_the_queues_scheme() -> None:
    log = open_task_log("memory://", TOPICS)
    assert open_node_channel("memory://", log, "n") is None
    assert channel_topics("memory://") == {}
    from engine.queues.kafka_channel import CHANNEL_TOPICS, KafkaNodeChannel

    url = "kafka://127.0.0.1:9092/ns"
    kafka_log = open_task_log(url, TOPICS)
    # Not started: choosing and building the channel needs no broker.
    assert isinstance(open_node_channel(url, kafka_log, "n"), KafkaNodeChannel)
    assert channel_topics(url) == dict(CHANNEL_TOPICS)
    with pytest.raises(BackendUrlError, match="unsupported queues url"):
        open_node_channel("amqp://x", log, "n")
