"""EngineConfig: typed, frozen settings with embedded-friendly defaults.

Loaded from YAML (`deploy/config/*.yaml`) and overridden by `CADENZA_*` environment
variables (for example CADENZA_NUM_SHARDS=8). Validated once at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

ALL_ROLES = frozenset({"frontend", "history", "matching", "transfer", "timer"})


class EngineConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    persistence_url: str = "sqlite:///./cadenza.db"
    """Where state lives: sqlite:///path (embedded) or cassandra://host[,host]/keyspace."""

    queues_url: str = "memory://"
    """The shard log and task topics: memory:// (in-process, persisted in the SQLite file) or
    kafka://host:9092."""

    matching_url: str = "memory://"
    """Task-list matching: memory:// or redis://host:6379/0."""

    num_shards: int = Field(default=4, ge=1, le=16384)
    """History shards = partitions of every topic; fixed when the cluster is created."""

    host: str = "127.0.0.1"
    port: int = Field(default=7833, ge=0, le=65535)
    """gRPC frontend port (0 picks a free one)."""

    node_id: str = ""
    """This process's identity in shard ownership records; defaults to host:pid."""

    cluster_name: str = "cadenza"

    max_batch: int = Field(default=500, ge=1)
    """Commands applied per group commit at most."""

    roles: frozenset[str] = ALL_ROLES
    """The roles this process runs (a subset of ALL_ROLES); `cadenza dev` runs them all."""

    @field_validator("roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [r.strip() for r in value.split(",") if r.strip()]
        roles = frozenset(value)
        unknown = roles - ALL_ROLES
        if unknown:
            raise ValueError(
                f"unknown role(s) {', '.join(sorted(unknown))}: "
                f"choose from {', '.join(sorted(ALL_ROLES))}"
            )
        if not roles:
            raise ValueError("at least one role is needed")
        return roles

    @classmethod
    def load(cls, path: str | None = None, **overrides: Any) -> EngineConfig:
        data: dict[str, Any] = {}
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text())
            except yaml.YAMLError as exc:
                raise ValueError(f"{path} is not valid YAML: {exc}") from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ValueError(f"{path} must hold a mapping of settings, not {type(loaded)}")
            data.update(loaded or {})
        for name, field in cls.model_fields.items():
            env = os.environ.get(f"CADENZA_{name.upper()}")
            if env is not None:
                data[name] = int(env) if field.annotation is int else env
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)
