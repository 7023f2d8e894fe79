"""Checks of start and decision attributes that the frontend and the history service share.

Pure functions that return what is wrong in words, or None. The frontend turns a problem into
BadRequestError; `decisions.py` fails the decision task with the decision's cause, as Cadence
does for bad decision attributes. Kept apart from `decisions.py` so that both sides apply the
same rules: a cron schedule, a search-attribute map, the Durations of a decision.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import UTC, datetime
from typing import Final

from cadence.api.v1 import common_pb2
from croniter import croniter
from google.protobuf import duration_pb2
from google.protobuf.message import Message

from engine.errors import quote
from engine.execution.protos import is_negative, retry_policy_problem
from engine.visibility.attributes import value_problem

__all__ = [
    "cron_period_seconds",
    "cron_problem",
    "negative_duration_problem",
    "search_attributes_problem",
    "workflow_options_problem",
]

# Cron descriptors that robfig/cron's standard parser and croniter both understand.
# "@every <duration>" is robfig-only; croniter (which runs our cron) cannot evaluate it.
_CRON_DESCRIPTORS: Final = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# The base Cadence measures a cron period from when bounding jitter: the zero time.Time,
# 0001-01-01 00:00 UTC. 2001-01-01 is also a Monday and croniter handles it reliably.
_CRON_PERIOD_BASE: Final = datetime(2001, 1, 1, tzinfo=UTC)
_DURATION: Final = duration_pb2.Duration.DESCRIPTOR


def cron_problem(schedule: str) -> str | None:
    """A standard 5-field cron expression (or a fixed descriptor such as @daily) that fires
    at least once: "0 0 30 2 *" (February 30th) parses but never comes."""
    expr = schedule.strip()
    if expr.startswith("@"):
        return None if expr in _CRON_DESCRIPTORS else "Invalid CronSchedule."
    # croniter also takes 6 and 7 fields (seconds, year); Cadence's parser does not.
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        return "Invalid CronSchedule."
    try:
        croniter(expr, _CRON_PERIOD_BASE).get_next(datetime)
    except (ValueError, OverflowError, KeyError):
        # croniter gives up (CroniterBadDateError, a ValueError) on dates that never exist.
        return "Invalid CronSchedule: it never fires."
    return None


def cron_period_seconds(schedule: str) -> int:
    """Seconds from the period base to the schedule's first fire time (a valid schedule)."""
    it = croniter(schedule.strip(), _CRON_PERIOD_BASE)
    nxt: datetime = it.get_next(datetime)
    return int((nxt - _CRON_PERIOD_BASE).total_seconds())


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def negative_duration_problem(attrs: Message) -> str | None:
    """The first Duration of `attrs` (or of its retry policy) that is below zero, also by its
    nanos alone: the frontend lets them through so that the decision fails with its cause."""
    for fd, value in attrs.ListFields():
        if fd.message_type is _DURATION and is_negative(value):
            return f"{_camel(fd.name)} cannot be negative."
        if fd.name == "retry_policy":
            problem = negative_duration_problem(value)
            if problem:
                return problem
    return None


def search_attributes_problem(
    fields: Mapping[str, common_pb2.Payload], allowed: Container[str]
) -> str | None:
    """Keys a client may set (the allow-list has no system keys), values of their types."""
    for key, value in fields.items():
        if key not in allowed:
            return f"{quote(key)} is not a valid search attribute key."
        problem = value_problem(key, value.data)
        if problem:
            return f"{problem}."
    return None


def workflow_options_problem(attrs: Message, allowed: Container[str]) -> str | None:
    """What the start of another run asks for (StartChildWorkflowExecution,
    ContinueAsNewWorkflowExecution): a valid retry policy, cron schedule and search
    attributes, as the frontend requires of a start request."""
    if attrs.HasField("retry_policy"):
        problem = retry_policy_problem(attrs.retry_policy)  # type: ignore[attr-defined]
        if problem:
            return problem
    cron: str = attrs.cron_schedule  # type: ignore[attr-defined]
    if cron:
        problem = cron_problem(cron)
        if problem:
            return problem
    if attrs.HasField("search_attributes"):
        fields = attrs.search_attributes.indexed_fields  # type: ignore[attr-defined]
        return search_attributes_problem(fields, allowed)
    return None
