"""NodeChannel: how shard owners reach the frontends of *other* processes.

A command carries the id of the node that waits for its reply. When that node is the shard
owner itself, the reply is handed over in memory (`CommandBus.send_reply`); when it is another
`cadenza serve` process, it travels over a `NodeChannel`. The same channel broadcasts which
runs a group commit changed, so long polls on GetWorkflowExecutionHistory in every process
wake at once instead of on their periodic re-check.

Both kinds of message are best effort: a lost reply makes its caller time out and retry with
the same request id (the shard dedupes it), and a lost change only delays a long poll until
its re-check. Embedded mode runs one process and needs no channel.

The channel is carried by the cluster's log backend and chosen with its URL
(`engine.queues.factory.open_node_channel`), so its protocol lives here with `TaskLog`'s; the
caller side that uses it (`engine.routing`) sits above this package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from engine.model.commands import Reply

RunKey = tuple[str, str, str]


class RunChange(NamedTuple):
    """A run after a group commit changed it: enough for a waiter to tell whether to reload."""

    domain_id: str
    workflow_id: str
    run_id: str
    next_event_id: int
    is_open: bool


ReplyHandler = Callable[[Reply], None]
ChangesHandler = Callable[[list[RunChange]], None]


class NodeChannel(Protocol):
    async def start(self, on_reply: ReplyHandler, on_changes: ChangesHandler) -> None:
        """Start receiving this node's replies and every node's run changes."""
        ...

    async def stop(self) -> None: ...

    def send_reply(self, node_id: str, reply: Reply) -> None:
        """Queue `reply` for the node `node_id`; never blocks the caller."""
        ...

    def publish_changes(self, changes: Sequence[RunChange]) -> None:
        """Queue a notice that these runs changed; never blocks the caller."""
        ...
