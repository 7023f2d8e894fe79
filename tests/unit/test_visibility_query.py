"""The visibility query language: parsing, errors, formatting, and SQLite compilation run
against a real in-memory `visibility` table."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from cadence.api.v1 import visibility_pb2, workflow_pb2
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.errors import BadRequestError
from engine.visibility import (
    SEARCH_ATTRIBUTE_TYPES,
    Query,
    closed_filter,
    format_query,
    open_filter,
    parse_query,
)
from engine.visibility.query import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    QUERY_KEYS,
    And,
    Between,
    Comparison,
    Expr,
    In,
    Missing,
    Not,
    Or,
    OrderBy,
    Value,
    close_status_value,
)
from engine.visibility.sqlite_sql import compile_sqlite

COMPLETED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED
FAILED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED
CANCELED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED
TIMED_OUT = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TIMED_OUT
NS_2020 = 1_577_836_800_000_000_000  # 2020-01-01T00:00:00Z


def wid(value: str) -> Comparison:
    return Comparison("WorkflowID", "=", value)


def wtype(value: str) -> Comparison:
    return Comparison("WorkflowType", "=", value)


# -- parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_query_matches_everything(text: str) -> None:
    assert parse_query(text) == Query()
    assert compile_sqlite(parse_query(text)) == ("1=1", [], "")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # AND binds tighter than OR; NOT tighter than AND.
        (
            "WorkflowID = 'a' OR WorkflowID = 'b' AND WorkflowType = 'c'",
            Or((wid("a"), And((wid("b"), wtype("c"))))),
        ),
        (
            "(WorkflowID = 'a' OR WorkflowID = 'b') AND WorkflowType = 'c'",
            And((Or((wid("a"), wid("b"))), wtype("c"))),
        ),
        ("NOT WorkflowID = 'a' AND WorkflowType = 'c'", And((Not(wid("a")), wtype("c")))),
        ("not (WorkflowID = 'a' or WorkflowType = 'c')", Not(Or((wid("a"), wtype("c"))))),
        ("((WorkflowID = 'a'))", wid("a")),
        (
            "WorkflowID = 'a' and WorkflowID = 'b' AND WorkflowID = 'c'",
            And((wid("a"), wid("b"), wid("c"))),
        ),
        # Operators.
        ("HistoryLength != 3", Comparison("HistoryLength", "!=", 3)),
        ("HistoryLength <> 3", Comparison("HistoryLength", "!=", 3)),
        ("HistoryLength<3", Comparison("HistoryLength", "<", 3)),
        ("HistoryLength<=3", Comparison("HistoryLength", "<=", 3)),
        ("HistoryLength >-3", Comparison("HistoryLength", ">", -3)),
        ("HistoryLength >= '3'", Comparison("HistoryLength", ">=", 3)),
        ("HistoryLength BETWEEN 1 AND 5", Between("HistoryLength", 1, 5)),
        ("HistoryLength not between 1 and 5", Not(Between("HistoryLength", 1, 5))),
        ("WorkflowID IN ('a', \"b\",'c')", In("WorkflowID", ("a", "b", "c"))),
        ("WorkflowID NOT IN ('a')", Not(In("WorkflowID", ("a",)))),
        # Quoting.
        ('WorkflowID = "it\'s"', wid("it's")),
        ("WorkflowID = 'it''s'", wid("it's")),
        ("WorkflowID = 'say \\\"hi\\\" \\\\ bye'", wid('say "hi" \\ bye')),
        ("WorkflowID = ''", wid("")),
        ("WorkflowID = 'AND OR ) ('", wid("AND OR ) (")),
        ("WorkflowID = 'ünïcödé ✓'", wid("ünïcödé ✓")),
        ("WorkflowID = 123", wid("123")),
        ("`WorkflowID` = 'a'", wid("a")),
        # Custom keys, with or without Attr.
        ("CustomIntField = 5", Comparison("CustomIntField", "=", 5)),
        ("Attr.CustomIntField = 5", Comparison("CustomIntField", "=", 5)),
        ("CustomDoubleField = 5", Comparison("CustomDoubleField", "=", 5.0)),
        ("CustomDoubleField < -1.5e3", Comparison("CustomDoubleField", "<", -1500.0)),
        ("CustomBoolField = TRUE", Comparison("CustomBoolField", "=", True)),
        ("IsCron = 'false'", Comparison("IsCron", "=", False)),
        ("CustomKeywordField = 'k'", Comparison("CustomKeywordField", "=", "k")),
        # missing.
        ("CloseTime = missing", Missing("CloseTime")),
        ("CloseTime != MISSING", Not(Missing("CloseTime"))),
        ("CloseStatus = missing", Missing("CloseStatus")),
        ("Attr.CustomKeywordField = missing", Missing("CustomKeywordField")),
    ],
)
def test_parse(text: str, where: Expr) -> None:
    assert parse_query(text) == Query(where)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1577836800000000000", NS_2020),
        ("'1577836800000000000'", NS_2020),
        ("-5", -5),
        ("'2020-01-01T00:00:00Z'", NS_2020),
        ("'2020-01-01t00:00:00z'", NS_2020),
        ("'2020-01-01 00:00:00Z'", NS_2020),
        ("'2020-01-01T01:30:00+01:30'", NS_2020),
        ("'2019-12-31T16:00:00-08:00'", NS_2020),
        ("'2020-01-01T00:00:00.5Z'", NS_2020 + 500_000_000),
        ("'2020-01-01T00:00:00.000000001Z'", NS_2020 + 1),
        ("'2020-01-01T00:00:00.1234567899Z'", NS_2020 + 123_456_789),  # past ns: dropped
        ("'1969-12-31T23:59:59.5Z'", -500_000_000),
        ("'2262-04-11T23:47:16.854775807Z'", 2**63 - 1),
    ],
)
@pytest.mark.parametrize("key", ["StartTime", "ExecutionTime", "CloseTime", "CustomDatetimeField"])
def test_times_normalise_to_unix_ns(key: str, text: str, ns: int) -> None:
    assert parse_query(f"{key} = {text}") == Query(Comparison(key, "=", ns))


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("'COMPLETED'", COMPLETED),
        ("'completed'", COMPLETED),
        ('"Failed"', FAILED),
        ("canceled", CANCELED),
        ("'TERMINATED'", workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED),
        ("'continued_as_new'", workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CONTINUED_AS_NEW),
        ("'timed_out'", TIMED_OUT),
        ("1", COMPLETED),
        ("'6'", TIMED_OUT),
    ],
)
def test_close_status_names_and_numbers(text: str, status: int) -> None:
    assert parse_query(f"CloseStatus = {text}") == Query(Comparison("CloseStatus", "=", status))


def test_close_status_in_list() -> None:
    assert parse_query("CloseStatus IN ('completed', 2, TIMED_OUT)") == Query(
        In("CloseStatus", (COMPLETED, FAILED, TIMED_OUT))
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ORDER BY StartTime", Query(None, (OrderBy("StartTime"),))),
        ("order by StartTime desc", Query(None, (OrderBy("StartTime", True),))),
        (
            "WorkflowID = 'a' ORDER BY CloseTime ASC, Attr.CustomIntField DESC, RunID",
            Query(
                wid("a"),
                (OrderBy("CloseTime"), OrderBy("CustomIntField", True), OrderBy("RunID")),
            ),
        ),
    ],
)
def test_order_by(text: str, expected: Query) -> None:
    assert parse_query(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Unknown or forbidden keys.
        ("Foo = 1", "unknown search attribute 'Foo'"),
        ("workflowid = 'a'", "did you mean WorkflowID?"),
        ("Attr.WorkflowID = 'a'", "unknown search attribute 'Attr.WorkflowID'"),
        ("DomainID = 'x'", "DomainID cannot be used"),
        ("UpdateTime > 5", "unknown search attribute"),
        ("ORDER BY Nope", "position 9: unknown search attribute 'Nope'"),
        # Bad values for the key's type.
        ("StartTime = 'yesterday'", "invalid value 'yesterday' for StartTime"),
        ("StartTime = 1.5", "invalid value '1.5' for StartTime"),
        ("StartTime = '2020-13-01T00:00:00Z'", "invalid time"),
        ("StartTime = '2020-01-01T00:00:00'", "invalid value"),  # RFC3339 needs a zone
        ("StartTime = '2020-01-01T00:00:00+24:00'", "invalid time"),
        ("StartTime = '9999-01-01T00:00:00Z'", "out of the int64 range"),
        ("StartTime = 99999999999999999999", "out of the int64 range"),
        ("CustomIntField = " + "9" * 5000, "out of the int64 range"),
        ("CustomIntField = 1.5", "expected an integer"),
        ("CustomIntField = 'five'", "expected an integer"),
        ("CustomDoubleField = 'x'", "expected a finite number"),
        ("CustomDoubleField = 1e999", "expected a finite number"),
        ("CustomBoolField = 1", "expected true or false"),
        ("IsCron = yes", "expected true or false"),
        ("CloseStatus = 'done'", "invalid value 'done' for CloseStatus"),
        ("CloseStatus = 0", "invalid value '0' for CloseStatus"),
        ("CloseStatus = 7", "invalid value '7' for CloseStatus"),
        ("WorkflowID = abc", "expected a quoted string"),
        ("IsCron > true", "supports only = and !="),
        ("CloseTime < missing", "'missing' needs = or !="),
        ("CloseTime IN (missing)", "'missing' can only follow"),
        ("ORDER BY CustomStringField", "cannot ORDER BY CustomStringField"),
        # Syntax, with the position.
        ("WorkflowID = 'abc", "at position 13: unterminated string"),
        ('WorkflowID = "abc', "at position 13: unterminated string"),
        ("WorkflowID = ", "at position 13: expected a value for WorkflowID, got end of query"),
        ("WorkflowID 'a'", "at position 11: expected a comparison operator"),
        ("(WorkflowID = 'a'", "at position 17: expected ')'"),
        ("WorkflowID = 'a')", "at position 16: expected AND, OR, ORDER BY or end of query"),
        ("WorkflowID = 'a' WorkflowType = 'b'", "at position 17"),
        ("WorkflowID = 'a' AND", "at position 20: expected a search attribute key"),
        ("AND WorkflowID = 'a'", "at position 0: expected a search attribute key"),
        ("WorkflowID == 'a'", "at position 12"),
        ("WorkflowID = 'a' # x", "at position 17: unexpected character '#'"),
        ("WorkflowID IN ()", "expected a value for WorkflowID, got ')'"),
        ("WorkflowID IN ('a' 'b')", "expected ',' or ')'"),
        ("WorkflowID IN 'a'", "expected '(' after IN"),
        ("HistoryLength BETWEEN 1 OR 2", "expected AND"),
        ("WorkflowID NOT = 'a'", "expected BETWEEN or IN after NOT"),
        ("ORDER StartTime", "expected BY"),
        ("WorkflowID = 'a' ORDER BY", "expected a search attribute key, got end of query"),
        ("ORDER BY StartTime DESC ASC", "expected AND, OR, ORDER BY or end of query"),
        ("WHERE WorkflowID = 'a'", "unknown search attribute 'WHERE'"),
        ("WorkflowID = '\ud800'", "not valid UTF-8"),
        # Limits.
        ("(" * (MAX_DEPTH + 1) + "WorkflowID = 'a'" + ")" * (MAX_DEPTH + 1), "nested"),
        ("NOT " * (MAX_DEPTH + 1) + "WorkflowID = 'a'", "nested"),
        (" OR ".join(["HistoryLength = 1"] * (MAX_CONDITIONS + 1)), "conditions"),
        ("WorkflowID IN (" + ", ".join(["'a'"] * 1001) + ")", "more than 1000 values"),
    ],
)
def test_errors_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(BadRequestError) as info:
        parse_query(text)
    assert message in info.value.message
    assert info.value.message.startswith("Invalid visibility query")


def test_long_values_are_cut_short_in_errors() -> None:
    with pytest.raises(BadRequestError) as info:
        parse_query("StartTime = '" + "x" * 10_000 + "'")
    assert len(info.value.message) < 200


def test_search_attribute_types_are_indexed_value_types() -> None:
    pairs = visibility_pb2.IndexedValueType.items()
    names = {name.removeprefix("INDEXED_VALUE_TYPE_") for name, _ in pairs}
    assert set(SEARCH_ATTRIBUTE_TYPES.values()) <= names - {"INVALID"}
    assert set(QUERY_KEYS) | {"DomainID"} == set(SEARCH_ATTRIBUTE_TYPES)
    assert SEARCH_ATTRIBUTE_TYPES["CustomDatetimeField"] == "DATETIME"
    assert SEARCH_ATTRIBUTE_TYPES["CustomStringField"] == "STRING"


def test_close_status_value() -> None:
    assert close_status_value("completed") == COMPLETED
    assert close_status_value(FAILED) == FAILED
    for bad in (0, 7, "open"):
        with pytest.raises(BadRequestError):
            close_status_value(bad)


def test_basic_list_filters() -> None:
    assert open_filter(1, 2, workflow_id="w") == Query(
        And((Between("StartTime", 1, 2), Missing("CloseTime"), wid("w"))),
        (OrderBy("StartTime", True),),
    )
    assert closed_filter(1, 2) == Query(Between("CloseTime", 1, 2), (OrderBy("CloseTime", True),))
    assert closed_filter(1, 2, workflow_type="t", close_status="failed") == Query(
        And((Between("CloseTime", 1, 2), wtype("t"), Comparison("CloseStatus", "=", FAILED))),
        (OrderBy("CloseTime", True),),
    )
    with pytest.raises(BadRequestError):
        open_filter(2, 1)
    with pytest.raises(BadRequestError):
        closed_filter(1, 2, close_status=0)


# -- property: any text is a Query or a BadRequestError -------------------------------------

_WORDS = [
    *QUERY_KEYS,
    "Attr.CustomIntField",
    "Attr.CustomKeywordField",
    "Attr.WorkflowID",
    "DomainID",
    "Nope",
    "AND",
    "OR",
    "NOT",
    "BETWEEN",
    "IN",
    "ORDER BY",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "missing",
    "true",
    "false",
    "completed",
    "(",
    ")",
    ",",
    "=",
    "!=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "0",
    "5",
    "-1",
    "1.5",
    "1e400",
    "'x'",
    '"y"',
    "'5'",
    "'2020-01-01T00:00:00Z'",
    "'2020-01-01T00:00:00.123+05:30'",
    "'FAILED'",
    "'",
    '"',
    "`",
    "`WorkflowID`",
    "\\",
    "#",
]


_LITERALS: dict[str, list[str]] = {
    "keyword": ["'x'", '"y"', "'5'", "5"],
    "text": ["'x'", "'World'"],
    "int": ["5", "-1", "'7'"],
    "double": ["1.5", "5", "-2e3"],
    "bool": ["true", "FALSE"],
    "datetime": ["5", "'2020-01-01T00:00:00Z'", "'2020-01-01T00:00:00.123+05:30'"],
    "close_status": ["completed", "'FAILED'", "2"],
}


@st.composite
def predicate_text(draw: st.DrawFn) -> str:
    spec = QUERY_KEYS[draw(st.sampled_from(sorted(QUERY_KEYS)))]
    key = f"Attr.{spec.name}" if spec.custom and draw(st.booleans()) else spec.name
    value = st.sampled_from(_LITERALS[spec.kind])
    form = draw(st.integers(0, 4))
    if form == 0:
        return f"{key} {draw(st.sampled_from(['=', '!=']))} missing"
    if form == 1:
        return f"{key} BETWEEN {draw(value)} AND {draw(value)}"
    if form == 2:
        values = draw(st.lists(value, min_size=1, max_size=3))
        return f"{key} {draw(st.sampled_from(['IN', 'NOT IN']))} ({', '.join(values)})"
    return f"{key} {draw(st.sampled_from(['=', '!=', '<', '<=', '>', '>=']))} {draw(value)}"


_expression_text = st.recursive(
    predicate_text(),
    lambda children: st.one_of(
        st.tuples(children, st.sampled_from([" AND ", " OR ", " and "]), children).map("".join),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"NOT {c}"),
    ),
    max_leaves=10,
)


@st.composite
def query_like_text(draw: st.DrawFn) -> str:
    """Mostly well-formed queries, some with a word inserted or a span cut out."""
    text = draw(st.just("") | _expression_text)
    if draw(st.booleans()):
        keys = st.sampled_from(sorted(k for k, v in QUERY_KEYS.items() if v.kind != "text"))
        orders = st.lists(keys, min_size=1, max_size=2).map(", ".join)
        text += f" ORDER BY {draw(orders)} {draw(st.sampled_from(['', 'ASC', 'desc']))}"
    mutation = draw(st.integers(0, 2))
    if mutation and text:
        at = draw(st.integers(0, len(text)))
        if mutation == 1:
            text = text[:at] + draw(st.sampled_from(_WORDS) | st.text(max_size=2)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 5)) :]
    return text


def _parse_or_reject(text: str) -> Query | None:
    try:
        return parse_query(text)
    except BadRequestError:
        return None


@given(st.text())
def test_any_text_is_a_query_or_a_bad_request(text: str) -> None:
    _parse_or_reject(text)


@given(query_like_text())
def test_any_accepted_query_compiles_and_runs(text: str) -> None:
    query = _parse_or_reject(text)
    if query is not None:
        with _table() as db:
            _select(db, query)  # no sqlite error for anything the parser accepts


# -- property: format_query round-trips ------------------------------------------------------

_INT64 = st.integers(-(2**63), 2**63 - 1)
_VALUES: dict[str, st.SearchStrategy[Value]] = {
    "keyword": st.text(),
    "text": st.text(),
    "int": _INT64,
    "datetime": _INT64,
    "double": st.floats(allow_nan=False, allow_infinity=False),
    "bool": st.booleans(),
    "close_status": st.integers(1, 6),
}


@st.composite
def leaf(draw: st.DrawFn) -> Expr:
    spec = QUERY_KEYS[draw(st.sampled_from(sorted(QUERY_KEYS)))]
    values = _VALUES[spec.kind]
    form = draw(st.sampled_from(["cmp", "between", "in", "missing"]))
    if form == "missing":
        return Missing(spec.name)
    if form == "between" and spec.kind != "bool":
        return Between(spec.name, draw(values), draw(values))
    if form == "in":
        return In(spec.name, tuple(draw(st.lists(values, min_size=1, max_size=4))))
    ops = ["=", "!="] if spec.kind == "bool" else ["=", "!=", "<", "<=", ">", ">="]
    return Comparison(spec.name, draw(st.sampled_from(ops)), draw(values))


expressions = st.recursive(
    leaf(),
    lambda children: st.one_of(
        st.lists(children, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
        st.lists(children, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs))),
        children.map(Not),
    ),
    max_leaves=8,
)
orders = st.lists(
    st.builds(
        OrderBy,
        st.sampled_from(sorted(k for k, s in QUERY_KEYS.items() if s.kind != "text")),
        st.booleans(),
    ),
    max_size=3,
).map(tuple)


def _nesting(expr: Expr) -> int:
    """Parenthesis-and-NOT depth of `format_query`'s rendering."""
    match expr:
        case Not(operand):
            return 2 + _nesting(operand)
        case And(operands) | Or(operands):
            return 1 + max(_nesting(o) for o in operands)
        case _:
            return 0


@given(st.none() | expressions, orders)
def test_format_query_round_trips(where: Expr | None, order_by: tuple[OrderBy, ...]) -> None:
    assume(where is None or _nesting(where) <= MAX_DEPTH)
    query = Query(where, order_by)
    assert parse_query(format_query(query)) == query
    with _table() as db:
        _select(db, query)


# -- SQLite execution -------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE visibility (
  domain_id TEXT, workflow_id TEXT, run_id TEXT, workflow_type TEXT,
  start_time INTEGER, execution_time INTEGER, close_time INTEGER NULL,
  close_status INTEGER, history_length INTEGER, task_list TEXT, is_cron INTEGER,
  memo BLOB, search_attributes TEXT, parent BLOB,
  PRIMARY KEY (domain_id, run_id)
)
"""
DOMAIN = "d1"
# run_id, workflow_id, type, start, close_time, close_status, history_length, task_list,
# is_cron, search attributes (None: a NULL column)
ROWS: list[tuple[str, str, str, int, int | None, int, int, str, int, dict[str, Any] | None]] = [
    (
        "r1", "wf-a", "TypeA", 100, None, 0, 5, "tl1", 0,
        {
            "CustomKeywordField": "k1",
            "CustomIntField": 5,
            "CustomBoolField": True,
            "CustomStringField": "Hello World",
            "CustomDatetimeField": "2020-01-01T00:00:00.000000100Z",
        },
    ),
    (
        "r2", "wf-b", "TypeA", 200, 300, COMPLETED, 20, "tl1", 0,
        {
            "CustomKeywordField": ["k1", "k2"],
            "CustomIntField": 10,
            "CustomDoubleField": 1.5,
            "BinaryChecksums": ["bc1"],
            "CustomStringField": "goodbye",
            "CustomDatetimeField": NS_2020 + 200,
        },
    ),
    ("r3", "wf-c", "TypeB", 300, 400, FAILED, 7, "tl2", 1, {}),
    (
        "r4", "wf-a", "TypeB", 400, 450, TIMED_OUT, 3, "tl2", 0,
        {"CustomKeywordField": [], "CustomDatetimeField": "2020-01-01T01:00:00+01:00"},
    ),
    ("r5", "wf-d", "TypeA", 500, None, 0, 1, "tl1", 0, None),
]  # fmt: skip


class _table:
    """A fresh in-memory visibility table holding ROWS (plus a row in another domain)."""

    def __enter__(self) -> sqlite3.Connection:
        self.db = sqlite3.connect(":memory:")
        self.db.execute(SCHEMA)
        rows = [(DOMAIN, *row) for row in ROWS] + [("other", *ROWS[0])]
        for domain, run, wf, wtype_, start, close, status, hist, tl, cron, attrs in rows:
            self.db.execute(
                "INSERT INTO visibility VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    domain, wf, run, wtype_, start, start, close, status, hist, tl, cron,
                    b"", None if attrs is None else json.dumps(attrs), b"",
                ),
            )  # fmt: skip
        return self.db

    def __exit__(self, *exc: object) -> None:
        self.db.close()


def _select(db: sqlite3.Connection, query: Query) -> list[str]:
    where, params, order = compile_sqlite(query)
    assert where.count("?") == len(params)
    sql = f"SELECT run_id FROM visibility WHERE domain_id = ? AND ({where})"
    sql += f" ORDER BY {order}, run_id" if order else " ORDER BY run_id"
    return [row[0] for row in db.execute(sql, [DOMAIN, *params])]


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    with _table() as conn:
        yield conn


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("", "r1 r2 r3 r4 r5"),
        # Open and closed runs.
        ("CloseTime = missing", "r1 r5"),
        ("CloseTime != missing", "r2 r3 r4"),
        ("CloseStatus = missing", "r1 r5"),
        ("CloseStatus != missing", "r2 r3 r4"),
        ("CloseStatus = 'completed'", "r2"),
        ("CloseStatus IN ('FAILED', 'timed_out')", "r3 r4"),
        ("CloseStatus < 3", "r2 r3"),  # an open run has no status: not "less than 3"
        ("CloseStatus != 'FAILED'", "r1 r2 r4 r5"),  # != matches missing, as in ES
        ("NOT CloseTime > 350", "r1 r2 r5"),
        ("CloseTime <= 400", "r2 r3"),
        # System keys and boolean structure.
        ("WorkflowID = 'wf-a' AND WorkflowType = 'TypeB'", "r4"),
        ("WorkflowID = 'wf-a' OR WorkflowType = 'TypeB' AND IsCron = true", "r1 r3 r4"),
        ("(WorkflowID = 'wf-a' OR WorkflowType = 'TypeB') AND IsCron = false", "r1 r4"),
        ("NOT (WorkflowID = 'wf-a' OR WorkflowType = 'TypeB')", "r2 r5"),
        ("StartTime BETWEEN 200 AND 400", "r2 r3 r4"),
        ("StartTime NOT BETWEEN 200 AND 400", "r1 r5"),
        ("ExecutionTime > 1000", ""),
        ("WorkflowID IN ('wf-b', 'wf-c')", "r2 r3"),
        ("WorkflowID NOT IN ('wf-b', 'wf-c')", "r1 r4 r5"),
        ("RunID = 'r3'", "r3"),
        ("HistoryLength >= 7", "r2 r3"),
        ("TaskList = 'tl2'", "r3 r4"),
        ("WorkflowID = missing", ""),
        ("WorkflowID != missing", "r1 r2 r3 r4 r5"),
        ("WorkflowID < 'wf-c'", "r1 r2 r4"),
        # Keyword attributes: scalars and arrays.
        ("CustomKeywordField = 'k1'", "r1 r2"),
        ("CustomKeywordField = 'k2'", "r2"),
        ("CustomKeywordField != 'k1'", "r3 r4 r5"),
        ("CustomKeywordField IN ('k2', 'zz')", "r2"),
        ("CustomKeywordField = missing", "r3 r4 r5"),  # [] counts as missing
        ("Attr.BinaryChecksums = 'bc1'", "r2"),
        ("CadenceChangeVersion = missing", "r1 r2 r3 r4 r5"),
        # Numbers and booleans.
        ("CustomIntField >= 5", "r1 r2"),
        ("CustomIntField != 5", "r2 r3 r4 r5"),
        ("Attr.CustomIntField BETWEEN 6 AND 20", "r2"),
        ("CustomIntField IN (1, 10)", "r2"),
        ("CustomIntField = missing", "r3 r4 r5"),
        ("NOT CustomIntField < 7", "r2 r3 r4 r5"),
        ("CustomBoolField = true", "r1"),
        ("CustomBoolField != true", "r2 r3 r4 r5"),
        ("CustomBoolField = false", ""),
        ("CustomDoubleField > 1", "r2"),
        ("CustomDoubleField = 1.5", "r2"),
        # Full text: case-insensitive substring.
        ("CustomStringField = 'hello'", "r1"),
        ("CustomStringField = 'WORLD'", "r1"),
        ("CustomStringField IN ('nope', 'bye')", "r2"),
        ("CustomStringField != 'hello'", "r2 r3 r4 r5"),
        # Datetimes stored as RFC3339 strings or int ns.
        ("CustomDatetimeField = '2020-01-01T00:00:00.0000001Z'", "r1"),
        ("CustomDatetimeField = '2020-01-01T00:00:00Z'", "r4"),
        (f"CustomDatetimeField > {NS_2020}", "r1 r2"),
        (f"CustomDatetimeField BETWEEN '2020-01-01T00:00:00Z' AND {NS_2020 + 150}", "r1 r4"),
        ("CustomDatetimeField < '2019-12-31T16:00:00.0000002-08:00'", "r1 r4"),
        ("CustomDatetimeField != missing", "r1 r2 r4"),
        # Values that look like SQL stay values.
        ("WorkflowID = 'x'' OR 1=1 --'", ""),
        ("WorkflowID = '\"); DROP TABLE visibility; --'", ""),
    ],
)
def test_compiled_query_selects_the_right_runs(
    db: sqlite3.Connection, text: str, runs: str
) -> None:
    assert _select(db, parse_query(text)) == runs.split()


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("ORDER BY StartTime", "r1 r2 r3 r4 r5"),
        ("ORDER BY StartTime DESC", "r5 r4 r3 r2 r1"),
        ("CloseTime != missing ORDER BY CloseTime DESC", "r4 r3 r2"),
        # Runs without the key come last either way, as in ES.
        ("ORDER BY CloseTime", "r2 r3 r4 r1 r5"),
        ("ORDER BY CloseStatus DESC", "r4 r3 r2 r1 r5"),
        ("ORDER BY CustomIntField DESC", "r2 r1 r3 r4 r5"),
        ("ORDER BY CustomDatetimeField", "r4 r1 r2 r3 r5"),
        ("ORDER BY WorkflowID DESC, StartTime", "r5 r3 r2 r1 r4"),
    ],
)
def test_compiled_order_by(db: sqlite3.Connection, text: str, runs: str) -> None:
    assert _select(db, parse_query(text)) == runs.split()


@pytest.mark.parametrize(
    ("query", "runs"),
    [
        (open_filter(0, 1000), "r5 r1"),
        (open_filter(0, 1000, workflow_id="wf-a"), "r1"),
        (open_filter(150, 1000, workflow_type="TypeA"), "r5"),
        (open_filter(100, 100), "r1"),  # both ends inclusive
        (closed_filter(0, 1000), "r4 r3 r2"),
        (closed_filter(350, 1000), "r4 r3"),
        # The range applies to the close time: r3 started at 300 but closed at 400.
        (closed_filter(0, 350), "r2"),
        (closed_filter(0, 1000, workflow_type="TypeB"), "r4 r3"),
        (closed_filter(0, 1000, close_status=FAILED), "r3"),
        (closed_filter(0, 1000, workflow_id="wf-a", close_status="timed_out"), "r4"),
    ],
)
def test_basic_list_filters_select_the_right_runs(
    db: sqlite3.Connection, query: Query, runs: str
) -> None:
    assert _select(db, query) == runs.split()


def test_values_never_reach_the_sql_text() -> None:
    evil = "'); DROP TABLE visibility; --"
    query = parse_query(f'WorkflowID = "{evil}" OR CustomKeywordField IN ("{evil}")')
    where, params, _ = compile_sqlite(query)
    assert "DROP" not in where
    assert params == [evil, evil]


def test_largest_accepted_queries_run(db: sqlite3.Connection) -> None:
    many = " OR ".join(f"CustomIntField = {i}" for i in range(MAX_CONDITIONS))
    assert _select(db, parse_query(many)) == ["r1", "r2"]
    nested = "(" * MAX_DEPTH + "CustomStringField IN ('nope', 'bye')" + ")" * MAX_DEPTH
    assert _select(db, parse_query(nested)) == ["r2"]
    values = ", ".join(f"'{i}'" for i in range(999))
    assert _select(db, parse_query(f"CustomStringField IN ({values}, 'world')")) == ["r1"]


@pytest.mark.parametrize(
    ("stored", "ns"),
    [
        ("2020-01-01T05:30:00.123456789+05:30", NS_2020 + 123_456_789),
        ("2019-12-31T16:00:00.5-08:00", NS_2020 + 500_000_000),
        ("2020-01-01t00:00:00.000001z", NS_2020 + 1_000),
        ("2020-01-01T00:00:00Z", NS_2020),
        (NS_2020 + 7, NS_2020 + 7),
        ("not a time", None),
        (1.5e18, None),
        (None, None),
    ],
)
def test_stored_datetime_forms(stored: object, ns: int | None) -> None:
    with _table() as db:
        attrs = json.dumps({"CustomDatetimeField": stored})
        db.execute("UPDATE visibility SET search_attributes = ? WHERE run_id = 'r3'", [attrs])
        equal = Comparison("CustomDatetimeField", "=", ns if ns is not None else NS_2020)
        assert ("r3" in _select(db, Query(equal))) == (ns is not None)
        assert ("r3" in _select(db, Query(Not(equal)))) == (ns is None)
