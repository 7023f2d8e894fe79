"""Compile a visibility `Query` to a parameterised WHERE / ORDER BY for SQLite.

The SQLite visibility store calls `compile_sqlite` and runs, for example,

    SELECT ... FROM visibility WHERE domain_id = ? AND ({where}) ORDER BY {order or default}

against this table (one row per run):

    visibility(domain_id TEXT, workflow_id TEXT, run_id TEXT, workflow_type TEXT,
               start_time INTEGER ns, execution_time INTEGER ns, close_time INTEGER NULL,
               close_status INTEGER (0 = open), history_length INTEGER, task_list TEXT,
               is_cron INTEGER, memo BLOB, search_attributes TEXT (JSON object), parent BLOB)

Values always travel as parameters. Only key names from the allow-list
(`engine.visibility.query.QUERY_KEYS`) reach the SQL text, as column names or JSON paths.

Semantics follow Cadence's Elasticsearch visibility where SQLite allows:
- Every compiled condition is true or false, never NULL, so NOT behaves as in ES
  (`CloseTime != 5`, `NOT CloseTime > 5` and `CustomIntField != 1` match runs without the key).
- An open run has `close_time` NULL and `close_status` 0; both count as missing.
- Custom keys are read with `json_extract(search_attributes, '$."Key"')`. KEYWORD custom keys
  (CustomKeywordField, CadenceChangeVersion, BinaryChecksums) may hold a JSON array, as in
  ES: a condition holds if any element satisfies it (via `json_each`).
- CustomDatetimeField may be stored as int unix ns or as an RFC3339 string (what clients
  send); both are converted to ns in SQL, exactly.
- STRING (full-text) keys approximate ES phrase matching: `=`, `!=` and `IN` test for a
  case-insensitive (ASCII) substring. Range operators compare the whole text.
- `ORDER BY` puts runs without the key last, as ES does. It adds no tie-breaker: callers
  that page should append one (e.g. run_id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

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
    Query,
    Value,
)

__all__ = ["compile_sqlite"]

_COLUMNS: dict[str, str] = {
    "WorkflowID": "workflow_id",
    "RunID": "run_id",
    "WorkflowType": "workflow_type",
    "StartTime": "start_time",
    "ExecutionTime": "execution_time",
    "CloseTime": "close_time",
    "CloseStatus": "close_status",
    "HistoryLength": "history_length",
    "TaskList": "task_list",
    "IsCron": "is_cron",
}


@dataclass(frozen=True, slots=True)
class _Target:
    """How one key reads in SQL, and how a condition on it is kept from being NULL."""

    # The value expression; "value" (a json_each row) when `each_path` is set.
    expr: str
    # The condition for `key = missing`.
    missing: str
    # The expression to sort by.
    order: str
    # When set, the column can be missing and conditions are guarded with this.
    present: str | None = None
    # When true, `expr` may be NULL and conditions are wrapped in IFNULL(..., 0).
    nullable: bool = False
    # For array-capable keys: the JSON path iterated with json_each.
    each_path: str | None = None
    # Full-text (STRING) key: = / != / IN are substring tests.
    text: bool = False

    @property
    def never_null(self) -> bool:
        return self.present is None and not self.nullable and self.each_path is None


def _target(spec: KeySpec) -> _Target:
    if not spec.custom:
        column = _COLUMNS[spec.name]
        if spec.name == "CloseTime":
            return _Target(column, "close_time IS NULL", column, present="close_time IS NOT NULL")
        if spec.name == "CloseStatus":
            order = "NULLIF(close_status, 0)"
            return _Target(column, "close_status = 0", order, present="close_status != 0")
        return _Target(column, "0", column)
    # The key is an allow-listed identifier ([A-Za-z]+), so quoting it in the path is safe.
    path = f"'$.\"{spec.name}\"'"
    raw = f"json_extract(search_attributes, {path})"
    if spec.kind == "keyword":
        # An empty array is missing too, as in ES.
        each = f"json_each(search_attributes, {path})"
        missing = f"NOT EXISTS (SELECT 1 FROM {each} WHERE value IS NOT NULL)"
        return _Target("value", missing, raw, each_path=path)
    expr = _datetime_ns(raw) if spec.kind == "datetime" else raw
    return _Target(expr, f"{raw} IS NULL", expr, nullable=True, text=spec.kind == "text")


def _datetime_ns(raw: str) -> str:
    """SQL turning a JSON int (ns) or RFC3339 string into int unix ns, else NULL.

    strftime('%s') gives whole seconds (and understands 'T', 'Z' and +hh:mm once upper-cased);
    the fraction is the text between the '.' at index 20 and the zone suffix, padded to 9
    digits.
    """
    zone = "CASE WHEN substr(u, -1) = 'Z' THEN 1 ELSE 6 END"
    frac = f"substr(u, 21, length(u) - 20 - {zone})"
    nanos = (
        "CASE WHEN substr(u, 20, 1) = '.' "
        f"THEN CAST(substr({frac} || '000000000', 1, 9) AS INTEGER) ELSE 0 END"
    )
    parsed = f"CAST(strftime('%s', u) AS INTEGER) * 1000000000 + {nanos}"
    return (
        f"(SELECT CASE typeof(r) WHEN 'integer' THEN r WHEN 'text' THEN {parsed} END "
        f"FROM (SELECT {raw} AS r, upper({raw}) AS u))"
    )


def compile_sqlite(query: Query) -> tuple[str, list[Any], str]:
    """Compile `query` to `(where_sql, params, order_by_sql)`.

    `where_sql` is "1=1" for an empty query; `order_by_sql` (without the ORDER BY keyword)
    is "" when the query has no ORDER BY, so the caller applies its default.
    """
    params: list[Any] = []
    where = "1=1" if query.where is None else _expr(query.where, params)
    order = ", ".join(_order(QUERY_KEYS[o.key], o.descending) for o in query.order_by)
    return where, params, order


def _order(spec: KeySpec, descending: bool) -> str:
    target = _target(spec)
    direction = "DESC" if descending else "ASC"
    # ES sorts runs without the key last in either direction; SQLite puts NULLs first in ASC.
    nulls = "" if target.never_null else " NULLS LAST"
    return f"{target.order} {direction}{nulls}"


def _expr(expr: Expr, params: list[Any]) -> str:
    match expr:
        case And(operands):
            return "(" + " AND ".join(_expr(o, params) for o in operands) + ")"
        case Or(operands):
            return "(" + " OR ".join(_expr(o, params) for o in operands) + ")"
        case Not(operand):
            return f"NOT {_expr(operand, params)}"
        case Missing(key):
            return f"({_target(QUERY_KEYS[key]).missing})"
        case Comparison(key, "!=", value):
            return _not_equal(_target(QUERY_KEYS[key]), value, params)
        case Comparison(key, op, value):
            target = _target(QUERY_KEYS[key])
            if op == "=" and target.text:
                params.append(_param(value))
                return _atom(target, f"instr(lower({target.expr}), lower(?)) > 0")
            params.append(_param(value))
            return _atom(target, f"{target.expr} {op} ?")
        case Between(key, low, high):
            params.extend((_param(low), _param(high)))
            target = _target(QUERY_KEYS[key])
            return _atom(target, f"{target.expr} BETWEEN ? AND ?")
        case In(key, values):
            target = _target(QUERY_KEYS[key])
            if target.text:
                # One JSON-array parameter: a long list must not deepen the SQL expression.
                params.append(json.dumps([_param(v) for v in values]))
                cond = (
                    "EXISTS (SELECT 1 FROM json_each(?) AS q "
                    f"WHERE instr(lower({target.expr}), lower(q.value)) > 0)"
                )
                return _atom(target, cond)
            params.extend(_param(v) for v in values)
            marks = ", ".join("?" * len(values))
            return _atom(target, f"{target.expr} IN ({marks})")


def _not_equal(target: _Target, value: Value, params: list[Any]) -> str:
    params.append(_param(value))
    if target.never_null:
        return f"{target.expr} != ?"
    if target.text:
        return f"NOT {_atom(target, f'instr(lower({target.expr}), lower(?)) > 0')}"
    return f"NOT {_atom(target, f'{target.expr} = ?')}"


def _atom(target: _Target, cond: str) -> str:
    """`cond` (written against `target.expr`) as a condition that is never NULL."""
    if target.each_path is not None:
        each = f"json_each(search_attributes, {target.each_path})"
        return f"EXISTS (SELECT 1 FROM {each} WHERE {cond})"
    if target.present is not None:
        return f"({target.present} AND {cond})"
    if target.nullable:
        return f"IFNULL({cond}, 0)"
    return f"({cond})"


def _param(value: Value) -> Any:
    # SQLite has no booleans: is_cron and JSON true/false read back as 1/0.
    return int(value) if isinstance(value, bool) else value
