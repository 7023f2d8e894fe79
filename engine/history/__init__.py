"""History: the shard apply side. `ShardEngine` applies a batch of commands to runs with one
group-commit write; `handlers` say what each command kind does; `Batch` gathers a batch's
changes. Callers reach it only through the command log (`engine.routing`), and the shard
controller (`engine.shards`) feeds it the commands of the shards this process owns."""
