"""The topics of the cluster's partitioned log, one partition per shard each.

Commands go to a shard's partition of COMMAND_TOPIC; the shard owner publishes the transfer
and timer tasks its writes produced to the same partition of TRANSFER_TOPIC and TIMER_TOPIC.
"""

COMMAND_TOPIC = "cadenza-commands"
TRANSFER_TOPIC = "cadenza-transfer"
TIMER_TOPIC = "cadenza-timer"
