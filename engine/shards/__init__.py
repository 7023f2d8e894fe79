"""Shards: ownership of command-log partitions. `ShardController` takes the partitions the
consumer group gives this process, acquires each shard (its `ShardContext`: fencing token and
task-id range) and feeds its commands to the shard's engine, made by the `EngineFactory` it is
given (`engine.history` supplies the engine; this package does not import it)."""
