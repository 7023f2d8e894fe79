"""Routing: how a process reaches the shards and hears back (the caller side of history).

`CommandBus` puts a command on its shard's partition of the command log and waits for the
reply; `ReplySink` is how a shard owner hands a reply back to the process that waits for it;
`RunWatcher` wakes long polls when a group commit changed the runs they wait on; `topics`
names the topics of the cluster's log. The frontend, the transfer and timer processors and the
shard controller use this package; the shard apply side (`engine.history`) does not.
"""
