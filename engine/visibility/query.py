"""Parse Cadence's advanced-visibility query (the WHERE clause of ListWorkflowExecutions,
CountWorkflowExecutions and ScanWorkflowExecutions) into a typed `Query`.

The frontend calls `parse_query` on the request's `query` string, or `open_filter` /
`closed_filter` for the basic ListOpen/ListClosed APIs, and hands the `Query` to the
visibility store, which compiles it for its backend (`engine.visibility.sqlite_sql`).

Grammar (keywords case-insensitive, keys case-sensitive):

    query     := [or_expr] [ORDER BY order_key {"," order_key}]
    or_expr   := and_expr {OR and_expr}
    and_expr  := not_expr {AND not_expr}
    not_expr  := NOT not_expr | "(" or_expr ")" | predicate
    predicate := key ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") value
               | key [NOT] BETWEEN value AND value
               | key [NOT] IN "(" value {"," value} ")"
               | key ("=" | "!=") missing
    order_key := key [ASC | DESC]
    value     := 'string' | "string" | number | true | false | close-status name

Values are checked against the key's type and normalised here, so a `Query` only holds
clean values: times (StartTime, ExecutionTime, CloseTime, CustomDatetimeField) become int
unix nanoseconds (from an int or an RFC3339 string); CloseStatus becomes the
`uber.cadence.api.v1.WorkflowExecutionCloseStatus` value, from a name (case-insensitive) or
that enum's number (1 = COMPLETED ... 6 = TIMED_OUT; note Cadence's ES index uses 0-based
numbers, the v1 enum does not). `key != value` also matches runs where the key is missing,
as in Elasticsearch. Every problem raises `BadRequestError` naming what and where; no other
exception escapes `parse_query` for any input string.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, TypeAlias

from cadence.api.v1 import workflow_pb2

from engine.errors import BadRequestError, quote

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "QUERY_KEYS",
    "RFC3339",
    "SEARCH_ATTRIBUTE_TYPES",
    "And",
    "Between",
    "CompareOp",
    "Comparison",
    "Expr",
    "In",
    "KeyKind",
    "KeySpec",
    "Missing",
    "Not",
    "Or",
    "OrderBy",
    "Query",
    "Value",
    "close_status_value",
    "closed_filter",
    "format_query",
    "open_filter",
    "parse_query",
]

# -- keys ---------------------------------------------------------------------------------

KeyKind: TypeAlias = Literal["keyword", "text", "int", "double", "bool", "datetime", "close_status"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A key a query may name."""

    name: str
    kind: KeyKind
    # True for search attributes stored in the `search_attributes` JSON (may carry `Attr.`).
    custom: bool


_SYSTEM_KEYS: dict[str, KeyKind] = {
    "WorkflowID": "keyword",
    "RunID": "keyword",
    "WorkflowType": "keyword",
    "StartTime": "datetime",
    "ExecutionTime": "datetime",
    "CloseTime": "datetime",
    "CloseStatus": "close_status",
    "HistoryLength": "int",
    "TaskList": "keyword",
    "IsCron": "bool",
}
_CUSTOM_KEYS: dict[str, KeyKind] = {
    "CustomStringField": "text",
    "CustomKeywordField": "keyword",
    "CustomIntField": "int",
    "CustomBoolField": "bool",
    "CustomDoubleField": "double",
    "CustomDatetimeField": "datetime",
    "CadenceChangeVersion": "keyword",
    "BinaryChecksums": "keyword",
}

QUERY_KEYS: Mapping[str, KeySpec] = MappingProxyType(
    {k: KeySpec(k, kind, False) for k, kind in _SYSTEM_KEYS.items()}
    | {k: KeySpec(k, kind, True) for k, kind in _CUSTOM_KEYS.items()}
)
"""The allow-list: every key a query may name, without the `Attr.` prefix."""

# GetSearchAttributes types, as Cadence reports them (`common/definition/indexedKeys.go`):
# system times and CloseStatus are INT there even though queries accept richer forms.
# DomainID is listed (Cadence lists it) but may not be queried.
SEARCH_ATTRIBUTE_TYPES: dict[str, str] = {
    "DomainID": "KEYWORD",
    "WorkflowID": "KEYWORD",
    "RunID": "KEYWORD",
    "WorkflowType": "KEYWORD",
    "StartTime": "INT",
    "ExecutionTime": "INT",
    "CloseTime": "INT",
    "CloseStatus": "INT",
    "HistoryLength": "INT",
    "TaskList": "KEYWORD",
    "IsCron": "BOOL",
    "CustomStringField": "STRING",
    "CustomKeywordField": "KEYWORD",
    "CustomIntField": "INT",
    "CustomBoolField": "BOOL",
    "CustomDoubleField": "DOUBLE",
    "CustomDatetimeField": "DATETIME",
    "CadenceChangeVersion": "KEYWORD",
    "BinaryChecksums": "KEYWORD",
}

_CLOSE_STATUS_PREFIX = "WORKFLOW_EXECUTION_CLOSE_STATUS_"
_CLOSE_STATUSES: dict[str, int] = {
    name.removeprefix(_CLOSE_STATUS_PREFIX): number
    for name, number in workflow_pb2.WorkflowExecutionCloseStatus.items()
    if number != 0
}
_CLOSE_STATUS_NAMES: dict[int, str] = {v: k for k, v in _CLOSE_STATUSES.items()}

# Limits keep any accepted query compilable (SQLite caps expression depth at 1000 and bound
# parameters at 32766) and keep the recursive parser far from Python's recursion limit.
MAX_DEPTH = 32
MAX_CONDITIONS = 200
MAX_VALUES = 1000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# -- AST ----------------------------------------------------------------------------------

CompareOp: TypeAlias = Literal["=", "!=", "<", "<=", ">", ">="]
Value: TypeAlias = bool | int | float | str
"""keyword/text: str; int, datetime (unix ns), close_status (v1 enum): int; double: float;
bool: bool."""


@dataclass(frozen=True, slots=True)
class Comparison:
    key: str
    op: CompareOp
    value: Value


@dataclass(frozen=True, slots=True)
class Between:
    """`key BETWEEN low AND high`, both ends inclusive."""

    key: str
    low: Value
    high: Value


@dataclass(frozen=True, slots=True)
class In:
    key: str
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    """`key = missing`: the run has no value for `key` (`CloseTime = missing` is "open")."""

    key: str


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


Expr: TypeAlias = Comparison | Between | In | Missing | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderBy:
    key: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed visibility query. `where` None matches every run; an empty `order_by`
    leaves the order to the store (newest start time first)."""

    where: Expr | None = None
    order_by: tuple[OrderBy, ...] = ()


# -- tokens -------------------------------------------------------------------------------

_TokKind: TypeAlias = Literal["ident", "string", "number", "op", "(", ")", ",", "end"]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _TokKind
    text: str  # the source text; for strings, the unquoted and unescaped value
    pos: int


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"-?[0-9]+")
# Longest first, so "<=" is not read as "<" then "=".
_OPS: dict[str, CompareOp] = {
    "<=": "<=", ">=": ">=", "!=": "!=", "<>": "!=", "=": "=", "<": "<", ">": ">",
}  # fmt: skip
_PUNCTUATION: dict[str, _TokKind] = {"(": "(", ")": ")", ",": ","}


def _show(text: str) -> str:
    """`text` quoted for an error message, cut short if long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _bad(message: str, pos: int | None = None) -> BadRequestError:
    where = "" if pos is None else f" at position {pos}"
    return BadRequestError(f"Invalid visibility query{where}: {message}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "(),":
            tokens.append(_Token(_PUNCTUATION[c], c, i))
            i += 1
        elif c in "'\"`":
            value, end = _read_quoted(text, i)
            # Backticks quote a key (MySQL style); quotes make a string value.
            tokens.append(_Token("ident" if c == "`" else "string", value, i))
            i = end
        elif (m := _NUMBER.match(text, i)) is not None:
            tokens.append(_Token("number", m.group(), i))
            i = m.end()
        elif (m := _IDENT.match(text, i)) is not None:
            tokens.append(_Token("ident", m.group(), i))
            i = m.end()
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise _bad(f"unexpected character {c!r}", i)
            tokens.append(_Token("op", _OPS[op], i))
            i += len(op)
    tokens.append(_Token("end", "", n))
    return tokens


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """The value of the quoted run starting at `start` and the index after it. Inside,
    a backslash escapes the next character and a doubled quote stands for one."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif c == quote:
            if text.startswith(quote, i + 1):
                out.append(quote)
                i += 2
            else:
                return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise _bad(f"unterminated string starting with {quote}", start)


# -- parser -------------------------------------------------------------------------------


def parse_query(text: str) -> Query:
    """Parse an advanced-visibility query; an empty (or blank) string matches every run.

    Raises:
        BadRequestError: for any syntax error, unknown or forbidden key, or value that does
            not fit its key's type; the message gives the position.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _bad("the query is not valid UTF-8", e.start) from None
    return _Parser(_tokenize(text)).parse()


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._i = 0
        self._depth = 0
        self._conditions = 0
        self._values = 0

    # token helpers

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _next(self) -> _Token:
        tok = self._tokens[self._i]
        if tok.kind != "end":
            self._i += 1
        return tok

    def _is_word(self, tok: _Token, *words: str) -> bool:
        return tok.kind == "ident" and tok.text.upper() in words

    def _accept_word(self, word: str) -> bool:
        if self._is_word(self._peek(), word):
            self._i += 1
            return True
        return False

    def _expect_word(self, word: str) -> None:
        if not self._accept_word(word):
            raise self._unexpected(f"expected {word}")

    def _expect(self, kind: _TokKind, what: str) -> _Token:
        if self._peek().kind != kind:
            raise self._unexpected(f"expected {what}")
        return self._next()

    def _unexpected(self, expected: str) -> BadRequestError:
        tok = self._peek()
        got = "end of query" if tok.kind == "end" else _show(tok.text)
        return _bad(f"{expected}, got {got}", tok.pos)

    # grammar

    def parse(self) -> Query:
        where: Expr | None = None
        if self._peek().kind != "end" and not self._is_word(self._peek(), "ORDER"):
            where = self._or()
        order_by: list[OrderBy] = []
        if self._accept_word("ORDER"):
            self._expect_word("BY")
            order_by.append(self._order_key())
            while self._peek().kind == ",":
                self._next()
                order_by.append(self._order_key())
        if self._peek().kind != "end":
            raise self._unexpected("expected AND, OR, ORDER BY or end of query")
        return Query(where, tuple(order_by))

    def _order_key(self) -> OrderBy:
        tok = self._peek()
        spec = self._key()
        if spec.kind == "text":
            raise _bad(f"cannot ORDER BY {spec.name}: it is a full-text (STRING) key", tok.pos)
        descending = False
        if self._accept_word("DESC"):
            descending = True
        else:
            self._accept_word("ASC")
        return OrderBy(spec.name, descending)

    def _or(self) -> Expr:
        operands = [self._and()]
        while self._accept_word("OR"):
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def _and(self) -> Expr:
        operands = [self._not()]
        while self._accept_word("AND"):
            operands.append(self._not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def _not(self) -> Expr:
        tok = self._peek()
        if self._is_word(tok, "NOT"):
            self._next()
            self._enter(tok)
            operand = self._not()
            self._depth -= 1
            return Not(operand)
        if tok.kind == "(":
            self._next()
            self._enter(tok)
            inner = self._or()
            self._expect(")", "')'")
            self._depth -= 1
            return inner
        return self._predicate()

    def _enter(self, tok: _Token) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _bad(f"nested more than {MAX_DEPTH} levels deep", tok.pos)

    def _key(self) -> KeySpec:
        tok = self._peek()
        if tok.kind != "ident" or tok.text.upper() in _RESERVED:
            raise self._unexpected("expected a search attribute key")
        self._next()
        return _resolve_key(tok)

    def _predicate(self) -> Expr:
        key_tok = self._peek()
        spec = self._key()
        self._conditions += 1
        if self._conditions > MAX_CONDITIONS:
            raise _bad(f"more than {MAX_CONDITIONS} conditions", key_tok.pos)
        negated = self._accept_word("NOT")
        if negated and not self._is_word(self._peek(), "BETWEEN", "IN"):
            raise self._unexpected("expected BETWEEN or IN after NOT")
        expr: Expr
        if self._accept_word("BETWEEN"):
            low = self._value(spec)
            self._expect_word("AND")
            high = self._value(spec)
            expr = Between(spec.name, low, high)
        elif self._accept_word("IN"):
            self._expect("(", "'(' after IN")
            values = [self._value(spec)]
            while self._peek().kind == ",":
                self._next()
                values.append(self._value(spec))
            self._expect(")", "',' or ')'")
            expr = In(spec.name, tuple(values))
        else:
            op_tok = self._expect("op", "a comparison operator, BETWEEN or IN")
            op = _OPS[op_tok.text]
            if self._is_word(self._peek(), "MISSING"):
                if op not in ("=", "!="):
                    raise _bad(f"'missing' needs = or !=, not {op}", op_tok.pos)
                self._next()
                missing = Missing(spec.name)
                return missing if op == "=" else Not(missing)
            value = self._value(spec)
            if spec.kind == "bool" and op not in ("=", "!="):
                raise _bad(f"{spec.name} is BOOL and supports only = and !=", op_tok.pos)
            expr = Comparison(spec.name, op, value)
        return Not(expr) if negated else expr

    def _value(self, spec: KeySpec) -> Value:
        tok = self._peek()
        if tok.kind not in ("string", "number", "ident"):
            raise self._unexpected(f"expected a value for {spec.name}")
        self._next()
        self._values += 1
        if self._values > MAX_VALUES:
            raise _bad(f"more than {MAX_VALUES} values", tok.pos)
        if tok.kind == "ident" and tok.text.upper() == "MISSING":
            raise _bad(f"'missing' can only follow = or != (key {spec.name})", tok.pos)
        return _coerce(spec, tok)


_RESERVED = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "ORDER", "BY", "ASC", "DESC"})


def _resolve_key(tok: _Token) -> KeySpec:
    name = tok.text
    prefixed = name.startswith("Attr.")
    if prefixed:
        name = name.removeprefix("Attr.")
    spec = QUERY_KEYS.get(name)
    if spec is None or (prefixed and not spec.custom):
        if name == "DomainID":
            raise _bad("DomainID cannot be used in a query", tok.pos)
        hint = next((k for k in QUERY_KEYS if k.lower() == name.lower()), None)
        suffix = f" (did you mean {hint}?)" if hint else ""
        raise _bad(f"unknown search attribute {_show(tok.text)}{suffix}", tok.pos)
    return spec


# -- values -------------------------------------------------------------------------------

RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _coerce(spec: KeySpec, tok: _Token) -> Value:
    """Check `tok` against the key's type and return the normalised value."""
    kind, text = spec.kind, tok.text
    expected: str
    if kind in ("keyword", "text"):
        if tok.kind != "ident":
            return text
        expected = "a quoted string"
    elif kind == "int":
        if tok.kind != "ident" and _INTEGER.fullmatch(text):
            return _int64(spec, tok, text)
        expected = "an integer"
    elif kind == "double":
        if tok.kind != "ident" and _NUMBER.fullmatch(text):
            value = float(text)
            if math.isfinite(value):
                return value
        expected = "a finite number"
    elif kind == "bool":
        if text.lower() in ("true", "false") and tok.kind != "number":
            return text.lower() == "true"
        expected = "true or false"
    elif kind == "datetime":
        if tok.kind != "ident" and _INTEGER.fullmatch(text):
            return _int64(spec, tok, text)
        if tok.kind == "string" and (m := RFC3339.fullmatch(text)) is not None:
            return _int64(spec, tok, _rfc3339_ns(m, spec, tok))
        expected = "unix nanoseconds or an RFC3339 time"
    else:  # close_status
        number = _CLOSE_STATUSES.get(text.upper()) if tok.kind != "number" else None
        if number is None and tok.kind != "ident" and _INTEGER.fullmatch(text):
            number = int(text) if len(text) < 4 and int(text) in _CLOSE_STATUS_NAMES else None
        if number is not None:
            return number
        expected = f"one of {', '.join(_CLOSE_STATUSES)} (or 1-6)"
    raise _bad(f"invalid value {_show(text)} for {spec.name}: expected {expected}", tok.pos)


def _int64(spec: KeySpec, tok: _Token, value: int | str) -> int:
    # Check the length first: int() refuses strings of more than 4300 digits.
    if isinstance(value, str):
        value = int(value) if len(value) <= 20 else INT64_MAX + 1
    if not INT64_MIN <= value <= INT64_MAX:
        raise _bad(f"value {_show(tok.text)} for {spec.name} is out of the int64 range", tok.pos)
    return value


def _rfc3339_ns(m: re.Match[str], spec: KeySpec, tok: _Token) -> int:
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    try:
        offset = dt.timedelta(0)
        if not zulu:
            offset = dt.timedelta(hours=int(off_h), minutes=int(off_m))
            if offset >= dt.timedelta(days=1):
                raise ValueError("offset out of range")
            offset = -offset if sign == "-" else offset
        when = dt.datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            tzinfo=dt.timezone(offset),
        )  # fmt: skip
    except ValueError as e:
        raise _bad(f"invalid time {_show(tok.text)} for {spec.name}: {e}", tok.pos) from None
    whole_seconds = (when - _EPOCH) // dt.timedelta(seconds=1)
    # Exact to the nanosecond (datetime stops at microseconds); digits past 9 are dropped.
    return whole_seconds * 1_000_000_000 + int(((frac or "") + "000000000")[:9])


def close_status_value(status: int | str) -> int:
    """A close status (v1 enum number or case-insensitive name) as its v1 enum value."""
    if isinstance(status, str):
        number = _CLOSE_STATUSES.get(status.upper())
    else:
        number = status if status in _CLOSE_STATUS_NAMES else None
    if number is None:
        raise BadRequestError(f"Invalid close status {quote(repr(status))}.")
    return number


# -- basic list APIs ----------------------------------------------------------------------


def open_filter(
    earliest_ns: int,
    latest_ns: int,
    workflow_id: str | None = None,
    workflow_type: str | None = None,
) -> Query:
    """The query ListOpenWorkflowExecutions means: open runs whose StartTime is in
    [earliest_ns, latest_ns], optionally one workflow id or type; newest start first."""
    conditions: list[Expr] = [
        Between("StartTime", earliest_ns, latest_ns),
        Missing("CloseTime"),
    ]
    conditions += _execution_conditions(workflow_id, workflow_type)
    _check_range(earliest_ns, latest_ns)
    return Query(And(tuple(conditions)), (OrderBy("StartTime", descending=True),))


def closed_filter(
    earliest_ns: int,
    latest_ns: int,
    workflow_id: str | None = None,
    workflow_type: str | None = None,
    close_status: int | str | None = None,
) -> Query:
    """The query ListClosedWorkflowExecutions means: closed runs whose **CloseTime** is in
    [earliest_ns, latest_ns], optionally one workflow id, type or close status; most recently
    closed first.

    The request field is called `start_time_filter`, but Cadence's Cassandra and SQL
    visibility stores apply it to the close time (Cassandra reads `closed_executions_v2`
    with `close_time >= ? AND close_time <= ?`), and so do we.
    """
    conditions: list[Expr] = [Between("CloseTime", earliest_ns, latest_ns)]
    conditions += _execution_conditions(workflow_id, workflow_type)
    if close_status is not None:
        conditions.append(Comparison("CloseStatus", "=", close_status_value(close_status)))
    _check_range(earliest_ns, latest_ns)
    expr = conditions[0] if len(conditions) == 1 else And(tuple(conditions))
    return Query(expr, (OrderBy("CloseTime", descending=True),))


def _execution_conditions(workflow_id: str | None, workflow_type: str | None) -> list[Expr]:
    conditions: list[Expr] = []
    if workflow_id is not None:
        conditions.append(Comparison("WorkflowID", "=", workflow_id))
    if workflow_type is not None:
        conditions.append(Comparison("WorkflowType", "=", workflow_type))
    return conditions


def _check_range(earliest_ns: int, latest_ns: int) -> None:
    if earliest_ns > latest_ns:
        raise BadRequestError("EarliestTime in StartTimeFilter is later than LatestTime.")


# -- formatting ---------------------------------------------------------------------------


def format_query(query: Query) -> str:
    """Canonical query text; `parse_query(format_query(q)) == q` for any well-typed `q`."""
    parts: list[str] = []
    if query.where is not None:
        parts.append(_format_expr(query.where))
    if query.order_by:
        keys = ", ".join(f"{o.key} {'DESC' if o.descending else 'ASC'}" for o in query.order_by)
        parts.append(f"ORDER BY {keys}")
    return " ".join(parts)


def _format_expr(expr: Expr) -> str:
    match expr:
        case Comparison(key, op, value):
            return f"{key} {op} {_format_value(key, value)}"
        case Between(key, low, high):
            return f"{key} BETWEEN {_format_value(key, low)} AND {_format_value(key, high)}"
        case In(key, values):
            return f"{key} IN ({', '.join(_format_value(key, v) for v in values)})"
        case Missing(key):
            return f"{key} = missing"
        case Not(operand):
            return f"NOT ({_format_expr(operand)})"
        case And(operands):
            return " AND ".join(f"({_format_expr(o)})" for o in operands)
        case Or(operands):
            return " OR ".join(f"({_format_expr(o)})" for o in operands)


def _format_value(key: str, value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, int) and QUERY_KEYS[key].kind == "close_status":
        return _CLOSE_STATUS_NAMES.get(value, str(value))
    return repr(value)
