"""Partitioned logs (the shard command log and the transfer/timer task topics) and the node
channel between processes that the distributed log carries."""

from engine.queues.protocols import LogConsumer, RebalanceListener, Record, TaskLog

__all__ = ["LogConsumer", "RebalanceListener", "Record", "TaskLog"]
