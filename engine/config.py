"""EngineConfig: typed, frozen settings with embedded-friendly defaults.

Loaded from YAML (`deploy/config/*.yaml`) and overridden by `CADENZA_*` environment
variables (for example CADENZA_NUM_SHARDS=8), then by command-line flags. Validated once at
start-up: `load` raises `ConfigError` with one line per problem, each naming where the value
came from (the flag, the variable, or the file), never the validator's raw report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.errors import quote

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
    """History shards = partitions of every topic; fixed when the cluster is created (the
    store records it). Left unset, a process takes the recorded count (4 for a new cluster);
    set, it must equal the recorded one."""

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
    def load(
        cls, path: str | None = None, flags: dict[str, str] | None = None, **overrides: Any
    ) -> EngineConfig:
        """The file's settings, then `CADENZA_<NAME>` variables, then `overrides` (None: not
        given). `flags` names the command-line flag of an override, for messages.

        Raises:
            ConfigError: unreadable file, or settings that do not validate (one problem per
                line, each naming the flag, variable or file entry it came from).
        """
        data: dict[str, Any] = {}
        origin: dict[str, str] = {}
        problems: list[str] = []
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text())
            except OSError as exc:
                raise ConfigError([f"cannot read config {path!r}: {exc.strerror}"]) from None
            except yaml.YAMLError as exc:
                raise ConfigError([f"bad config {path!r}: not valid YAML: {exc}"]) from None
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(
                    [f"bad config {path!r}: must hold a mapping of settings, not {type(loaded)}"]
                )
            for name, value in (loaded or {}).items():
                data[name] = value
                origin[str(name)] = f"{name} (in {path})"
        for name, field in cls.model_fields.items():
            var = f"CADENZA_{name.upper()}"
            env = os.environ.get(var)
            if env is None:
                continue
            origin[name] = var
            if field.annotation is int:
                try:
                    data[name] = int(env)
                except ValueError:
                    problems.append(f"{var}={env!r}: not a whole number")
                    data.pop(name, None)
                continue
            data[name] = env
        for name, value in overrides.items():
            if value is not None:
                data[name] = value
                origin[name] = (flags or {}).get(name, name)
        try:
            config = cls(**data)
        except ValidationError as exc:
            problems.extend(_describe(exc, data, origin))
        if problems:
            raise ConfigError(problems)
        return config


class ConfigError(ValueError):
    """Settings that cannot be used; `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _describe(exc: ValidationError, data: dict[str, Any], origin: dict[str, str]) -> list[str]:
    lines = []
    known = ", ".join(EngineConfig.model_fields)
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        where = origin.get(name, name)
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting {where}; the settings are: {known}")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        value = data.get(name)
        shown = repr(value) if isinstance(value, str) else str(value)
        lines.append(f"{where} {quote(shown, 60)}: {message}")
    return lines
