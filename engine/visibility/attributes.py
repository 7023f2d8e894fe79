"""Search-attribute values: is a value of the type its key is declared with?

Clients send search attributes as JSON (`SearchAttributes.indexed_fields`, a map of key to
Payload). A value of the wrong type (a string for CustomIntField) would be stored and then
matched by the query language's typed comparisons in ways nobody meant, so the start request,
the UpsertWorkflowSearchAttributes, ContinueAsNew and StartChildWorkflowExecution decisions all
check values with `value_problem` before anything is recorded.

The accepted forms are what the visibility query side reads (`engine.visibility.query`,
`engine.visibility.sqlite_sql`): KEYWORD a string or an array of strings (Cadence's keyword
lists such as BinaryChecksums), STRING a string, INT an int64, DOUBLE a finite number, BOOL
true or false, DATETIME int64 unix nanoseconds or an RFC3339 string.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Final

from engine.visibility.query import INT64_MAX, INT64_MIN, RFC3339, SEARCH_ATTRIBUTE_TYPES

__all__ = ["value_problem"]

_EXPECTED: Final = {
    "KEYWORD": "a string or a list of strings",
    "STRING": "a string",
    "INT": "an integer (int64)",
    "DOUBLE": "a finite number",
    "BOOL": "true or false",
    "DATETIME": "unix nanoseconds (int64) or an RFC3339 time string",
}


def _is_int64(value: object) -> bool:
    return (
        isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    )


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
        return False
    try:
        # The pattern fixes the shape; this catches month 13, day 32, hour 25 and the like.
        dt.datetime.fromisoformat(value.upper().replace(" ", "T").replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _fits(kind: str, value: object) -> bool:
    if kind == "KEYWORD":
        return isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        )
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "INT":
        return _is_int64(value)
    if kind == "DOUBLE":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "BOOL":
        return isinstance(value, bool)
    if kind == "DATETIME":
        return _is_int64(value) or _is_rfc3339(value)
    return True


def _reject_constant(name: str) -> object:
    # Python's json reads NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not JSON")


def value_problem(key: str, data: bytes) -> str | None:
    """What is wrong with `data` as the value of search attribute `key`, or None.

    `key` must already be known (the allow-list is checked by the caller)."""
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return f"{key} value is not valid JSON"
    kind = SEARCH_ATTRIBUTE_TYPES.get(key, "")
    if not _fits(kind, value):
        return f"{key} is of type {kind}: its value must be {_EXPECTED[kind]}"
    return None
