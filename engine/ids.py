"""Identifiers and the stable shard hash.

Cadence places a workflow with `Fingerprint32(workflow_id) % num_shards` (FarmHash). We use the
same function so shard placement matches the reference server and never depends on Python's
per-process `hash()` randomisation.
"""

from __future__ import annotations

import uuid

import farmhash


def shard_for(workflow_id: str, num_shards: int) -> int:
    """The shard (log partition) that owns every run of `workflow_id`."""
    return int(farmhash.fingerprint32(workflow_id)) % num_shards


def new_run_id() -> str:
    return str(uuid.uuid4())


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True
