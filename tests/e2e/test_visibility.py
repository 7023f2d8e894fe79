"""Visibility end to end: ListOpen/ListClosed with their filters, the query language of
List/Count/Scan, paging, and GetSearchAttributes.

Runs start on a ManualClock server one second apart, so start and close times are exact."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    service_domain_pb2,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_workflow_pb2,
    tasklist_pb2,
    visibility_pb2,
    workflow_pb2,
)
from cadence.error import CadenceRpcError
from google.protobuf import duration_pb2, timestamp_pb2

from engine.clock import ManualClock
from engine.execution.checker import check_history
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    full_history,
    register_domain,
    started_server,
    worker_for,
)

reg = Registry()


@reg.workflow()
class ReturnInput:
    @workflow.run
    async def run(self, value: str) -> str:
        return value


@reg.workflow()
class AlwaysFails:
    @workflow.run
    async def run(self, value: str) -> str:
        raise RuntimeError(value)


S = 10**9
T0 = 1_700_000_000 * S  # the ManualClock's start: 2023-11-14T22:13:20Z


@dataclass
class Scenario:
    client: Client
    stub: service_visibility_pb2_grpc.VisibilityAPIStub
    clock: ManualClock
    runs: dict[str, common_pb2.WorkflowExecution]  # name -> execution


def _sa(**values: Any) -> common_pb2.SearchAttributes:
    return common_pb2.SearchAttributes(
        indexed_fields={
            k: common_pb2.Payload(data=json.dumps(v).encode()) for k, v in values.items()
        }
    )


def _start(
    workflow_id: str, workflow_type: str, task_list: str, **attrs: Any
) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    return service_workflow_pb2.StartWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_id=workflow_id,
        workflow_type=common_pb2.WorkflowType(name=workflow_type),
        task_list=tasklist_pb2.TaskList(name=task_list),
        input=common_pb2.Payload(data=json.dumps(workflow_id).encode()),
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=600),
        task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
        request_id=str(uuid.uuid4()),
        memo=common_pb2.Memo(
            fields={"name": common_pb2.Payload(data=json.dumps(workflow_id).encode())}
        ),
        search_attributes=_sa(**attrs),
    )


@pytest.fixture
async def scenario(tmp_path: Path) -> AsyncIterator[Scenario]:
    """Five runs, started one second apart from T0:

    a  T0+0  ReturnInput  completed at T0+0   alpha  1
    b  T0+1  AlwaysFails  failed at T0+1      beta   5
    c  T0+2  Idle         terminated at T0+3         10
    d  T0+4  Idle         open                alpha  20
    e  T0+5  ReturnInput  open (no worker)
    """
    clock = ManualClock(T0)
    server = await started_server(tmp_path / "vis.db", clock)
    client = Client(domain=DOMAIN, target=server.address)
    try:
        await register_domain(client)
        stub = service_visibility_pb2_grpc.VisibilityAPIStub(client._channel)  # type: ignore[no-untyped-call]  # generated grpc code is untyped
        runs: dict[str, common_pb2.WorkflowExecution] = {}
        wf = client.workflow_stub

        async def start(name: str, req: service_workflow_pb2.StartWorkflowExecutionRequest) -> None:
            resp = await wf.StartWorkflowExecution(req)
            runs[name] = common_pb2.WorkflowExecution(
                workflow_id=req.workflow_id, run_id=resp.run_id
            )

        async with worker_for(client, reg) as worker:
            tl = worker.task_list
            await start(
                "a",
                _start("vis-a", "ReturnInput", tl, CustomKeywordField="alpha", CustomIntField=1),
            )
            await close_event(client, runs["a"])
            clock.advance(1)
            await start(
                "b", _start("vis-b", "AlwaysFails", tl, CustomKeywordField="beta", CustomIntField=5)
            )
            await close_event(client, runs["b"])
        clock.advance(1)
        await start("c", _start("vis-c", "Idle", "idle", CustomIntField=10))
        clock.advance(1)
        await wf.TerminateWorkflowExecution(
            service_workflow_pb2.TerminateWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=runs["c"], reason="stop"
            )
        )
        clock.advance(1)
        await start(
            "d", _start("vis-d", "Idle", "idle", CustomKeywordField="alpha", CustomIntField=20)
        )
        clock.advance(1)
        await start("e", _start("vis-e", "ReturnInput", "idle-e"))
        for run in runs.values():
            check_history(await full_history(client, run))
        yield Scenario(client, stub, clock, runs)
    finally:
        await client.close()
        await server.stop()


def _ts(ns: int) -> timestamp_pb2.Timestamp:
    t = timestamp_pb2.Timestamp()
    t.FromNanoseconds(ns)
    return t


def _window(earliest_ns: int, latest_ns: int) -> visibility_pb2.StartTimeFilter:
    return visibility_pb2.StartTimeFilter(
        earliest_time=_ts(earliest_ns), latest_time=_ts(latest_ns)
    )


def _names(sc: Scenario, infos: Any) -> list[str]:
    by_run = {r.run_id: name for name, r in sc.runs.items()}
    return [by_run[i.workflow_execution.run_id] for i in infos]


async def list_open(sc: Scenario, **fields: Any) -> list[str]:
    resp = await sc.stub.ListOpenWorkflowExecutions(
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(domain=DOMAIN, **fields)
    )
    return _names(sc, resp.executions)


async def list_closed(sc: Scenario, **fields: Any) -> list[str]:
    resp = await sc.stub.ListClosedWorkflowExecutions(
        service_visibility_pb2.ListClosedWorkflowExecutionsRequest(domain=DOMAIN, **fields)
    )
    return _names(sc, resp.executions)


async def query(sc: Scenario, q: str, page_size: int = 0) -> list[str]:
    resp = await sc.stub.ListWorkflowExecutions(
        service_visibility_pb2.ListWorkflowExecutionsRequest(
            domain=DOMAIN, query=q, page_size=page_size
        )
    )
    assert not resp.next_page_token or page_size
    return _names(sc, resp.executions)


async def count(sc: Scenario, q: str) -> int:
    resp: service_visibility_pb2.CountWorkflowExecutionsResponse = (
        await sc.stub.CountWorkflowExecutions(
            service_visibility_pb2.CountWorkflowExecutionsRequest(domain=DOMAIN, query=q)
        )
    )
    return resp.count


ALL = _window(0, T0 + 3600 * S)


# -- ListOpen / ListClosed ------------------------------------------------------------------------


async def test_list_open_lists_open_runs_newest_first(scenario: Scenario) -> None:
    sc = scenario
    assert await list_open(sc, start_time_filter=ALL) == ["e", "d"]
    assert await list_open(sc, start_time_filter=_window(T0, T0 + 4 * S)) == ["d"]
    assert await list_open(sc, start_time_filter=_window(T0, T0 + 4 * S - 1)) == []
    assert await list_open(sc, start_time_filter=_window(T0 + 5 * S, T0 + 5 * S)) == ["e"]
    assert await list_open(sc, start_time_filter=_window(T0 + 6 * S, T0 + 60 * S)) == []


async def test_list_open_filters(scenario: Scenario) -> None:
    sc = scenario
    by_id = visibility_pb2.WorkflowExecutionFilter(workflow_id="vis-d")
    assert await list_open(sc, start_time_filter=ALL, execution_filter=by_id) == ["d"]
    closed_id = visibility_pb2.WorkflowExecutionFilter(workflow_id="vis-a")
    assert await list_open(sc, start_time_filter=ALL, execution_filter=closed_id) == []
    by_type = visibility_pb2.WorkflowTypeFilter(name="ReturnInput")
    assert await list_open(sc, start_time_filter=ALL, type_filter=by_type) == ["e"]
    idle = visibility_pb2.WorkflowTypeFilter(name="Idle")
    assert await list_open(sc, start_time_filter=ALL, type_filter=idle) == ["d"]


async def test_list_open_record_contents(scenario: Scenario) -> None:
    sc = scenario
    resp = await sc.stub.ListOpenWorkflowExecutions(
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(
            domain=DOMAIN,
            start_time_filter=ALL,
            execution_filter=visibility_pb2.WorkflowExecutionFilter(workflow_id="vis-d"),
        )
    )
    (info,) = resp.executions
    assert info.workflow_execution == sc.runs["d"]
    assert info.type.name == "Idle"
    assert info.start_time.ToNanoseconds() == T0 + 4 * S
    assert not info.HasField("close_time")
    assert info.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_INVALID
    assert info.task_list == "idle"
    assert json.loads(info.memo.fields["name"].data) == "vis-d"
    fields = info.search_attributes.indexed_fields
    assert json.loads(fields["CustomKeywordField"].data) == "alpha"
    assert json.loads(fields["CustomIntField"].data) == 20


async def test_list_closed_by_close_time_and_filters(scenario: Scenario) -> None:
    sc = scenario
    assert await list_closed(sc, start_time_filter=ALL) == ["c", "b", "a"]
    assert await list_closed(sc, start_time_filter=_window(T0 + 1 * S, T0 + 2 * S)) == ["b"]
    assert await list_closed(sc, start_time_filter=_window(T0 + 3 * S, T0 + 9 * S)) == ["c"]
    assert await list_closed(sc, start_time_filter=_window(T0 + 4 * S, T0 + 9 * S)) == []
    status = visibility_pb2.StatusFilter
    for st, expected in (
        (workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED, ["a"]),
        (workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED, ["b"]),
        (workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED, ["c"]),
        (workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CANCELED, []),
    ):
        got = await list_closed(sc, start_time_filter=ALL, status_filter=status(status=st))
        assert got == expected, st
    by_type = visibility_pb2.WorkflowTypeFilter(name="AlwaysFails")
    assert await list_closed(sc, start_time_filter=ALL, type_filter=by_type) == ["b"]
    by_id = visibility_pb2.WorkflowExecutionFilter(workflow_id="vis-a")
    assert await list_closed(sc, start_time_filter=ALL, execution_filter=by_id) == ["a"]
    open_id = visibility_pb2.WorkflowExecutionFilter(workflow_id="vis-d")
    assert await list_closed(sc, start_time_filter=ALL, execution_filter=open_id) == []


async def test_list_closed_record_contents(scenario: Scenario) -> None:
    sc = scenario
    resp = await sc.stub.ListClosedWorkflowExecutions(
        service_visibility_pb2.ListClosedWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=ALL
        )
    )
    infos = {i.workflow_execution.workflow_id: i for i in resp.executions}
    a, b, c = infos["vis-a"], infos["vis-b"], infos["vis-c"]
    assert a.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED
    assert (a.start_time.ToNanoseconds(), a.close_time.ToNanoseconds()) == (T0, T0)
    assert a.history_length == 5
    assert a.type.name == "ReturnInput"
    assert b.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED
    assert b.close_time.ToNanoseconds() == T0 + S
    assert b.history_length == 5
    assert c.close_status == workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED
    assert (c.start_time.ToNanoseconds(), c.close_time.ToNanoseconds()) == (T0 + 2 * S, T0 + 3 * S)
    assert c.history_length == 3
    assert json.loads(c.search_attributes.indexed_fields["CustomIntField"].data) == 10


async def test_list_open_and_closed_page(scenario: Scenario) -> None:
    sc = scenario
    pages: list[list[str]] = []
    token = b""
    while True:
        resp = await sc.stub.ListClosedWorkflowExecutions(
            service_visibility_pb2.ListClosedWorkflowExecutionsRequest(
                domain=DOMAIN, start_time_filter=ALL, page_size=1, next_page_token=token
            )
        )
        pages.append(_names(sc, resp.executions))
        token = resp.next_page_token
        if not token:
            break
    assert pages == [["c"], ["b"], ["a"]]
    first = await sc.stub.ListOpenWorkflowExecutions(
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=ALL, page_size=1
        )
    )
    assert _names(sc, first.executions) == ["e"]
    assert first.next_page_token
    second = await sc.stub.ListOpenWorkflowExecutions(
        service_visibility_pb2.ListOpenWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=ALL, page_size=1, next_page_token=first.next_page_token
        )
    )
    assert _names(sc, second.executions) == ["d"]
    assert not second.next_page_token


async def test_list_open_requires_a_start_time_filter(scenario: Scenario) -> None:
    with pytest.raises(CadenceRpcError) as info:
        await scenario.stub.ListOpenWorkflowExecutions(
            service_visibility_pb2.ListOpenWorkflowExecutionsRequest(domain=DOMAIN)
        )
    assert info.value.code.name == "INVALID_ARGUMENT"


# -- the query language: List, Count, Scan

QUERIES: list[tuple[str, set[str]]] = [
    ("", {"a", "b", "c", "d", "e"}),
    ("WorkflowType = 'ReturnInput'", {"a", "e"}),
    ("WorkflowType != 'ReturnInput'", {"b", "c", "d"}),
    ("WorkflowID = 'vis-b'", {"b"}),
    ("WorkflowID IN ('vis-b', 'vis-c', 'nope')", {"b", "c"}),
    ("CloseStatus = 'COMPLETED'", {"a"}),
    ("CloseStatus = 'failed'", {"b"}),
    ("CloseStatus = 'TERMINATED' OR CloseStatus = 'FAILED'", {"b", "c"}),
    ("CloseTime = missing", {"d", "e"}),
    ("CloseTime != missing", {"a", "b", "c"}),
    (f"StartTime BETWEEN {T0 + S} AND {T0 + 4 * S}", {"b", "c", "d"}),
    (f"StartTime > {T0 + 4 * S}", {"e"}),
    ("StartTime >= '2023-11-14T22:13:22Z'", {"c", "d", "e"}),
    (f"CloseTime > {T0}", {"b", "c"}),
    (f"CloseTime <= {T0 + S}", {"a", "b"}),
    ("CustomKeywordField = 'alpha'", {"a", "d"}),
    ("Attr.CustomKeywordField = 'beta'", {"b"}),
    ("CustomIntField > 4 AND CustomIntField < 20", {"b", "c"}),
    ("CustomIntField >= 10", {"c", "d"}),
    ("CustomKeywordField = 'alpha' OR CloseStatus = 'FAILED'", {"a", "b", "d"}),
    (
        "(WorkflowType = 'ReturnInput' OR WorkflowType = 'AlwaysFails') AND CloseTime = missing",
        {"e"},
    ),
    ("CustomKeywordField = 'alpha' AND CloseTime = missing", {"d"}),
    ("TaskList = 'idle'", {"c", "d"}),
    ("HistoryLength = 5", {"a", "b"}),
    ("WorkflowType = 'Nothing'", set()),
]


@pytest.mark.parametrize(("q", "expected"), QUERIES)
async def test_list_and_count_with_a_query(scenario: Scenario, q: str, expected: set[str]) -> None:
    got = await query(scenario, q)
    assert sorted(got) == sorted(expected)
    assert len(got) == len(set(got))
    assert await count(scenario, q) == len(expected)


async def test_query_by_run_id(scenario: Scenario) -> None:
    run_c = scenario.runs["c"].run_id
    assert await query(scenario, f"RunID = '{run_c}'") == ["c"]
    assert await count(scenario, f"RunID = '{run_c}' AND WorkflowID = 'vis-d'") == 0


async def test_order_by(scenario: Scenario) -> None:
    sc = scenario
    assert await query(sc, "") == ["e", "d", "c", "b", "a"]  # newest start first by default
    assert await query(sc, "ORDER BY StartTime ASC") == ["a", "b", "c", "d", "e"]
    assert await query(sc, "ORDER BY StartTime DESC") == ["e", "d", "c", "b", "a"]
    assert await query(sc, "CustomIntField > 0 ORDER BY CustomIntField DESC") == [
        "d",
        "c",
        "b",
        "a",
    ]
    assert await query(sc, "CloseTime != missing ORDER BY CloseTime ASC") == ["a", "b", "c"]


async def test_list_pages_with_a_query(scenario: Scenario) -> None:
    sc = scenario
    pages: list[list[str]] = []
    token = b""
    while True:
        resp = await sc.stub.ListWorkflowExecutions(
            service_visibility_pb2.ListWorkflowExecutionsRequest(
                domain=DOMAIN,
                query="ORDER BY StartTime ASC",
                page_size=2,
                next_page_token=token,
            )
        )
        pages.append(_names(sc, resp.executions))
        token = resp.next_page_token
        if not token:
            break
    assert pages == [["a", "b"], ["c", "d"], ["e"]]


async def test_scan_returns_every_match_once(scenario: Scenario) -> None:
    sc = scenario
    seen: list[str] = []
    token = b""
    calls = 0
    while True:
        resp = await sc.stub.ScanWorkflowExecutions(
            service_visibility_pb2.ScanWorkflowExecutionsRequest(
                domain=DOMAIN, query="CustomIntField >= 1", page_size=3, next_page_token=token
            )
        )
        calls += 1
        seen.extend(_names(sc, resp.executions))
        token = resp.next_page_token
        if not token:
            break
    assert calls == 2
    assert sorted(seen) == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    "bad",
    [
        "NoSuchKey = 1",
        "WorkflowID =",
        "CustomIntField = 'abc'",
        "CloseStatus = 'SLEEPING'",
        "WorkflowID = 'x' AND",
        "DomainID = 'x'",
    ],
)
async def test_bad_query_is_bad_request(scenario: Scenario, bad: str) -> None:
    for call in (
        scenario.stub.ListWorkflowExecutions(
            service_visibility_pb2.ListWorkflowExecutionsRequest(domain=DOMAIN, query=bad)
        ),
        scenario.stub.CountWorkflowExecutions(
            service_visibility_pb2.CountWorkflowExecutionsRequest(domain=DOMAIN, query=bad)
        ),
        scenario.stub.ScanWorkflowExecutions(
            service_visibility_pb2.ScanWorkflowExecutionsRequest(domain=DOMAIN, query=bad)
        ),
    ):
        with pytest.raises(CadenceRpcError) as info:
            await call
        assert info.value.code.name == "INVALID_ARGUMENT", bad


async def test_visibility_is_per_domain(scenario: Scenario) -> None:
    sc = scenario
    await sc.client.domain_stub.RegisterDomain(
        service_domain_pb2.RegisterDomainRequest(
            name="other-domain",
            workflow_execution_retention_period=duration_pb2.Duration(seconds=86400),
        )
    )
    resp = await sc.stub.CountWorkflowExecutions(
        service_visibility_pb2.CountWorkflowExecutionsRequest(domain="other-domain", query="")
    )
    assert resp.count == 0
    assert await count(sc, "") == 5


async def test_visibility_follows_a_run_to_its_close(scenario: Scenario) -> None:
    sc = scenario
    assert await query(sc, "WorkflowID = 'vis-d' AND CloseTime = missing") == ["d"]
    sc.clock.advance(1)
    await sc.client.workflow_stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=sc.runs["d"], reason="now"
        )
    )
    assert await query(sc, "WorkflowID = 'vis-d' AND CloseTime = missing") == []
    assert await query(sc, f"CloseStatus = 'TERMINATED' AND CloseTime = {T0 + 6 * S}") == ["d"]
    assert await list_open(sc, start_time_filter=ALL) == ["e"]
    assert await list_closed(sc, start_time_filter=ALL) == ["d", "c", "b", "a"]
    check_history(await full_history(sc.client, sc.runs["d"]))


# -- GetSearchAttributes --------------------------------------------------------------------------


async def test_get_search_attributes(scenario: Scenario) -> None:
    resp = await scenario.stub.GetSearchAttributes(
        service_visibility_pb2.GetSearchAttributesRequest()
    )
    keys = dict(resp.keys.items())
    expected = {
        "CustomStringField": visibility_pb2.INDEXED_VALUE_TYPE_STRING,
        "CustomKeywordField": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
        "CustomIntField": visibility_pb2.INDEXED_VALUE_TYPE_INT,
        "CustomBoolField": visibility_pb2.INDEXED_VALUE_TYPE_BOOL,
        "CustomDoubleField": visibility_pb2.INDEXED_VALUE_TYPE_DOUBLE,
        "CustomDatetimeField": visibility_pb2.INDEXED_VALUE_TYPE_DATETIME,
        "WorkflowID": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
        "WorkflowType": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
        "RunID": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
        "StartTime": visibility_pb2.INDEXED_VALUE_TYPE_INT,
        "CloseTime": visibility_pb2.INDEXED_VALUE_TYPE_INT,
        "CloseStatus": visibility_pb2.INDEXED_VALUE_TYPE_INT,
        "CadenceChangeVersion": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
    }
    for key, kind in expected.items():
        assert keys.get(key) == kind, key


async def test_search_attributes_of_every_type_are_queryable(scenario: Scenario) -> None:
    sc = scenario
    req = _start(
        "vis-typed",
        "Idle",
        "idle",
        CustomStringField="hello world",
        CustomBoolField=True,
        CustomDoubleField=2.5,
        CustomDatetimeField="2024-01-02T03:04:05Z",
    )
    resp = await sc.client.workflow_stub.StartWorkflowExecution(req)
    sc.runs["typed"] = common_pb2.WorkflowExecution(workflow_id="vis-typed", run_id=resp.run_id)
    for q in (
        "CustomBoolField = true",
        "CustomDoubleField > 2.0",
        "CustomDoubleField BETWEEN 2.5 AND 3",
        "CustomDatetimeField > '2024-01-01T00:00:00Z'",
        "CustomStringField = 'hello world'",
    ):
        assert await query(sc, q) == ["typed"], q
    assert await count(sc, "CustomBoolField = false") == 0
    # Search attributes reach the history and describe unchanged.
    d = await sc.client.workflow_stub.DescribeWorkflowExecution(
        service_workflow_pb2.DescribeWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=sc.runs["typed"]
        )
    )
    fields = d.workflow_execution_info.search_attributes.indexed_fields
    assert json.loads(fields["CustomDoubleField"].data) == 2.5
    assert json.loads(fields["CustomBoolField"].data) is True
    check_history(await full_history(sc.client, sc.runs["typed"]))
