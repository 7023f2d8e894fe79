"""Evaluate a parsed visibility `Query` in Python, with the semantics of the SQLite backend.

Cassandra cannot run the list-filter language (no arbitrary predicates, no ORDER BY on
anything but clustering columns), so `CassandraStore` reads a domain's visibility rows and
filters, sorts and pages them here. That is linear in the domain's runs per query: fine for
development and modest domains, not for production scale, where the real answer is an index
built for it (Elasticsearch / OpenSearch, as Cadence uses) fed from the same records.

The results match `engine.visibility.sqlite_sql` (which documents the Elasticsearch-like
semantics), including SQLite's comparison rules for mixed types, because the two backends
must pass one conformance suite:
- values compare as SQLite does: NULL is unknown, numbers < text < blobs across types,
  numbers by value, text by code point (BINARY collation);
- JSON true/false read as 1/0 and arrays/objects as their JSON text, as `json_extract` does;
  KEYWORD custom keys holding an array match when any element does (`json_each`);
- CloseTime/CloseStatus of an open run are missing; `!=` and NOT match runs without the key;
- STRING (full-text) keys: `=`, `!=`, `IN` are ASCII-case-insensitive substring tests;
- ORDER BY puts runs without the key last in both directions; ties break by run_id.
Known divergences, all on CustomDatetimeField strings, and all SQLite's doing: strftime reads
'now', julian day numbers, bare times and out-of-range days ('2020-02-31') as times, where
they are no time here; and the SQLite expression mis-reads fractions without a zone
('...00.5' as 0 ns) and rounds fractions of .9995 s and more up a whole extra second, where
they read exactly here.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.persistence.protocols import VisibilityRecord
from engine.visibility.query import (
    QUERY_KEYS,
    And,
    Between,
    Comparison,
    Expr,
    In,
    KeySpec,
    Missing,
    Not,
    Or,
    OrderBy,
    Query,
    Value,
)

# A value as SQLite sees it: NULL, INTEGER, REAL, TEXT (BLOBs never occur here).
SqlValue = int | float | str | None

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# -- SQLite value rules -------------------------------------------------------------------


def _rank(value: int | float | str) -> int:
    return 2 if isinstance(value, str) else 1


def compare(a: SqlValue, b: SqlValue) -> int | None:
    """-1, 0 or 1 as SQLite orders `a` and `b` (no affinity); None if either is NULL."""
    if a is None or b is None:
        return None
    ra, rb = _rank(a), _rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    return -1 if a < b else (1 if a > b else 0)  # type: ignore[operator]


def _holds(op: str, a: SqlValue, b: SqlValue) -> bool:
    c = compare(a, b)
    if c is None:
        return False
    if op == "=":
        return c == 0
    if op == "!=":
        return c != 0
    if op == "<":
        return c < 0
    if op == "<=":
        return c <= 0
    if op == ">":
        return c > 0
    return c >= 0  # ">="


def _from_json(value: Any) -> SqlValue:
    """A decoded JSON value as `json_extract` returns it to SQL."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else float(value)
    if isinstance(value, float):
        return value
    # Arrays and objects come back as their (minified) JSON text.
    return json.dumps(value, separators=(",", ":"))


def _as_text(value: SqlValue) -> str | None:
    """SQLite's implicit conversion of a value to TEXT (as instr/lower apply it)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    text = f"{value:.15g}"
    if "." not in text and "e" not in text and "n" not in text:
        text += ".0"
    elif "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _param(value: Value) -> SqlValue:
    return int(value) if isinstance(value, bool) else value


_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?"
)


def datetime_ns(raw: SqlValue) -> int | None:
    """A stored CustomDatetimeField (int ns, or an RFC3339 string) as unix ns, else None."""
    if isinstance(raw, int):
        return raw
    if not isinstance(raw, str):
        return None
    m = _TIME.fullmatch(raw.upper())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    try:
        when = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0),
            int(second or 0), tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    if zone and zone != "Z":
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        when = when - offset if zone[0] == "+" else when + offset
    seconds = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(((frac or "") + "000000000")[:9])


# -- reading a key off a record -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """A visibility record with its search attributes decoded once per query."""

    record: VisibilityRecord

    def system(self, name: str) -> SqlValue:
        r = self.record
        match name:
            case "WorkflowID":
                return r.workflow_id
            case "RunID":
                return r.run_id
            case "WorkflowType":
                return r.workflow_type
            case "StartTime":
                return r.start_time_ns
            case "ExecutionTime":
                return r.execution_time_ns
            case "CloseTime":
                return r.close_time_ns
            case "CloseStatus":
                return r.close_status or None
            case "HistoryLength":
                return r.history_length
            case "TaskList":
                return r.task_list
            case _:  # IsCron
                return int(r.is_cron)

    def custom(self, name: str) -> tuple[bool, Any]:
        """(present in the JSON object, decoded value)."""
        attrs = self.record.search_attributes
        return (name in attrs, attrs.get(name))


def _each(row: Row, spec: KeySpec) -> list[SqlValue]:
    """The rows `json_each(search_attributes, '$.key')` yields: an array's elements, an
    object's member values, a scalar itself; nothing when the key is absent."""
    present, value = row.custom(spec.name)
    if not present:
        return []
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        return [_from_json(v) for v in value.values()]
    return [_from_json(value)]


def _scalar(row: Row, spec: KeySpec) -> SqlValue:
    """The key's value expression (NULL when missing) for non-array keys."""
    if not spec.custom:
        return row.system(spec.name)
    raw = _from_json(row.custom(spec.name)[1])
    return datetime_ns(raw) if spec.kind == "datetime" else raw


def _missing(row: Row, spec: KeySpec) -> bool:
    if not spec.custom:
        return spec.name in ("CloseTime", "CloseStatus") and row.system(spec.name) is None
    if spec.kind == "keyword":
        return all(v is None for v in _each(row, spec))
    return _from_json(row.custom(spec.name)[1]) is None


def _atom(row: Row, spec: KeySpec, cond: Callable[[SqlValue], bool]) -> bool:
    """`cond` over the key's value(s), never NULL: false when the key is missing."""
    if spec.custom and spec.kind == "keyword":
        return any(cond(v) for v in _each(row, spec))
    return cond(_scalar(row, spec))


def _contains(haystack: SqlValue, needle: SqlValue) -> bool:
    h, n = _as_text(haystack), _as_text(needle)
    if h is None or n is None:
        return False
    return n.translate(_ASCII_LOWER) in h.translate(_ASCII_LOWER)


def matches(expr: Expr | None, row: Row) -> bool:
    """Whether `row` satisfies `expr` (None matches every row)."""
    if expr is None:
        return True
    match expr:
        case And(operands):
            return all(matches(o, row) for o in operands)
        case Or(operands):
            return any(matches(o, row) for o in operands)
        case Not(operand):
            return not matches(operand, row)
        case Missing(key):
            return _missing(row, QUERY_KEYS[key])
        case Comparison(key, op, value):
            spec = QUERY_KEYS[key]
            p = _param(value)
            if spec.kind == "text" and op in ("=", "!="):
                found = _atom(row, spec, lambda v: _contains(v, p))
                return found if op == "=" else not found
            if op == "!=":
                return not _atom(row, spec, lambda v: _holds("=", v, p))
            return _atom(row, spec, lambda v: _holds(op, v, p))
        case Between(key, low, high):
            lo, hi = _param(low), _param(high)
            return _atom(
                row, QUERY_KEYS[key], lambda v: _holds(">=", v, lo) and _holds("<=", v, hi)
            )
        case In(key, values):
            spec = QUERY_KEYS[key]
            params = [_param(v) for v in values]
            if spec.kind == "text":
                return _atom(row, spec, lambda v: any(_contains(v, p) for p in params))
            return _atom(row, spec, lambda v: any(_holds("=", v, p) for p in params))
    raise TypeError(f"not a query expression: {expr!r}")


# -- ordering -----------------------------------------------------------------------------


def _order_value(row: Row, spec: KeySpec) -> SqlValue:
    if spec.custom and spec.kind == "keyword":
        return _from_json(row.custom(spec.name)[1])
    return _scalar(row, spec)


def _sorter(order_by: Sequence[OrderBy]) -> Callable[[Row, Row], int]:
    terms = [(QUERY_KEYS[o.key], o.descending) for o in order_by]
    if not terms:
        # The store's default: newest start first.
        terms = [(QUERY_KEYS["StartTime"], True)]

    def cmp(a: Row, b: Row) -> int:
        for spec, descending in terms:
            va, vb = _order_value(a, spec), _order_value(b, spec)
            if va is None or vb is None:
                # Runs without the key come last in either direction.
                if va is None and vb is None:
                    continue
                return 1 if va is None else -1
            c = compare(va, vb) or 0
            if c:
                return -c if descending else c
        # Tie-breakers: run_id as the SQLite store pages by, then workflow_id.
        ka = (a.record.run_id, a.record.workflow_id)
        kb = (b.record.run_id, b.record.workflow_id)
        return -1 if ka < kb else (1 if ka > kb else 0)

    return cmp


def select(records: Sequence[VisibilityRecord], query: Query) -> list[VisibilityRecord]:
    """The records matching `query`, in its order (default: start time, newest first)."""
    rows = [row for row in map(Row, records) if matches(query.where, row)]
    rows.sort(key=functools.cmp_to_key(_sorter(query.order_by)))
    return [row.record for row in rows]


def count(records: Sequence[VisibilityRecord], query: Query) -> int:
    return sum(1 for row in map(Row, records) if matches(query.where, row))
