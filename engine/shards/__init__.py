"""Shards: ownership of command-log partitions and the loop that applies their commands."""
