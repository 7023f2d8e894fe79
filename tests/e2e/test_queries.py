"""Queries end to end: the legacy query-task path of `client.query_workflow`, reject
conditions on closed runs, queries before the first decision, failing handlers, and the
STRONG consistency level through the raw stub."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    query_pb2,
    service_workflow_pb2,
    workflow_pb2,
)
from cadence.error import EntityNotExistsError, QueryFailedError

from engine.execution.checker import check_history
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    eventually,
    full_history,
    worker_for,
)

reg = Registry()


@reg.workflow()
class Stateful:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.done = False
        self.fail = False

    @workflow.signal(name="add")
    def add(self, value: str) -> None:
        self.items.append(value)

    @workflow.signal(name="finish")
    def finish(self, fail: bool) -> None:
        self.done = True
        self.fail = fail

    @workflow.query(name="items")
    def get_items(self) -> list[str]:
        return list(self.items)

    @workflow.query(name="describe")
    def describe(self, prefix: str, times: int) -> str:
        return f"{prefix * times}:{len(self.items)}"

    @workflow.query(name="explode")
    def explode(self) -> str:
        raise ValueError(f"kaboom after {len(self.items)} items")

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.done)
        if self.fail:
            raise RuntimeError("asked to fail")
        return self.items


def _execution(workflow_id: str, run_id: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id)


async def checked(
    client: Client, execution: common_pb2.WorkflowExecution
) -> list[history_pb2.HistoryEvent]:
    events = await full_history(client, execution)
    check_history(events)
    return events


async def start(client: Client, task_list: str) -> common_pb2.WorkflowExecution:
    return await client.start_workflow(
        "Stateful",
        task_list=task_list,
        execution_start_to_close_timeout=timedelta(seconds=60),
    )


async def settled(client: Client, run: common_pb2.WorkflowExecution) -> None:
    """Wait until a decision has completed after every event so far (nothing is pending)."""

    async def check() -> bool:
        types = event_types(await checked(client, run))
        return types[-1] in (
            "DecisionTaskCompleted",
            "WorkflowExecutionCompleted",
            "WorkflowExecutionFailed",
        )

    await eventually(check)


async def raw_query(
    client: Client,
    run: common_pb2.WorkflowExecution,
    query_type: str,
    *,
    args: Any = None,
    timeout: float | None = None,
    **fields: Any,
) -> service_workflow_pb2.QueryWorkflowResponse:
    q = query_pb2.WorkflowQuery(query_type=query_type)
    if args is not None:
        q.query_args.CopyFrom(client.data_converter.to_data(args))
    resp: service_workflow_pb2.QueryWorkflowResponse
    resp = await client.workflow_stub.QueryWorkflow(
        service_workflow_pb2.QueryWorkflowRequest(
            domain=DOMAIN, workflow_execution=run, query=q, **fields
        ),
        timeout=timeout,
    )
    return resp


# -- the legacy query-task path --------------------------------------------------------------------


async def test_query_returns_the_handler_result(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await settled(client, run)
        assert await client.query_workflow(run.workflow_id, run.run_id, "items") == []
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "x")
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "y")
        await settled(client, run)
        before = await checked(client, run)
        got = await client.query_workflow(run.workflow_id, run.run_id, "items", result_type=list)
        assert got == ["x", "y"]
        # Arguments reach the handler; an empty run id queries the current run.
        assert await client.query_workflow(run.workflow_id, "", "describe", "ab", 2) == "abab:2"
        types = await client.query_workflow(run.workflow_id, run.run_id, "__query_types")
        assert set(types) >= {"items", "describe", "explode"}
        # A query is not an event: the history is unchanged.
        assert await checked(client, run) == before
        await client.signal_workflow(run.workflow_id, run.run_id, "finish", False)
        closed = await close_event(client, run)
    assert json.loads(closed.workflow_execution_completed_event_attributes.result.data) == [
        "x",
        "y",
    ]


async def test_query_handler_that_raises_is_query_failed(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await settled(client, run)
        with pytest.raises(QueryFailedError) as info:
            await client.query_workflow(run.workflow_id, run.run_id, "explode")
        assert "kaboom after 0 items" in str(info.value)
        with pytest.raises(QueryFailedError) as unknown:
            await client.query_workflow(run.workflow_id, run.run_id, "no-such-query")
        assert "no-such-query" in str(unknown.value)
        # The run is unaffected by failed queries.
        assert await client.query_workflow(run.workflow_id, run.run_id, "items") == []
    events = await checked(client, run)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
    ]


async def test_query_before_the_first_decision_completes_fails(client: Client) -> None:
    run = await start(client, f"nobody-{uuid.uuid4()}")
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(QueryFailedError) as info:
        await raw_query(client, run, "items", timeout=2)
    assert "at least one decision task" in str(info.value)
    # It waited for a decision until just before the deadline.
    assert 0.5 <= loop.time() - began < 2
    for level in (
        query_pb2.QUERY_CONSISTENCY_LEVEL_EVENTUAL,
        query_pb2.QUERY_CONSISTENCY_LEVEL_STRONG,
    ):
        with pytest.raises(QueryFailedError):
            await raw_query(client, run, "items", timeout=2, query_consistency_level=level)
    events = await checked(client, run)
    assert event_types(events) == ["WorkflowExecutionStarted", "DecisionTaskScheduled"]


async def test_query_of_a_missing_workflow_is_entity_not_exists(client: Client) -> None:
    with pytest.raises(EntityNotExistsError):
        await client.query_workflow("no-such-workflow", "", "items")


# -- closed runs and reject conditions -------------------------------------------------------------

NOT_OPEN = query_pb2.QUERY_REJECT_CONDITION_NOT_OPEN
NOT_CLEAN = query_pb2.QUERY_REJECT_CONDITION_NOT_COMPLETED_CLEANLY
COMPLETED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED
FAILED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED
TERMINATED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_TERMINATED


@pytest.mark.parametrize("ending", ["completed", "failed", "terminated"])
async def test_query_of_a_closed_run_and_reject_conditions(client: Client, ending: str) -> None:
    status = {"completed": COMPLETED, "failed": FAILED, "terminated": TERMINATED}[ending]
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "kept")
        await settled(client, run)
        if ending == "terminated":
            await client.workflow_stub.TerminateWorkflowExecution(
                service_workflow_pb2.TerminateWorkflowExecutionRequest(
                    domain=DOMAIN, workflow_execution=run, reason="stop"
                )
            )
        else:
            await client.signal_workflow(run.workflow_id, run.run_id, "finish", ending == "failed")
        closed = await close_event(client, run)
        assert event_types([closed])[0].startswith("WorkflowExecution")
        d = await client.workflow_stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=run
            )
        )
        assert d.workflow_execution_info.close_status == status

        # No reject condition: a closed run is still answered, from its full history.
        assert await client.query_workflow(run.workflow_id, run.run_id, "items") == ["kept"]

        # NOT_OPEN rejects every closed run.
        resp = await raw_query(client, run, "items", query_reject_condition=NOT_OPEN)
        assert resp.HasField("query_rejected")
        assert resp.query_rejected.close_status == status
        assert not resp.HasField("query_result")
        with pytest.raises(QueryFailedError) as info:
            await client.query_workflow(
                run.workflow_id, run.run_id, "items", query_reject_condition=NOT_OPEN
            )
        assert "rejected" in str(info.value)

        # NOT_COMPLETED_CLEANLY rejects all but a completed run.
        resp = await raw_query(client, run, "items", query_reject_condition=NOT_CLEAN)
        if ending == "completed":
            assert not resp.HasField("query_rejected")
            assert json.loads(resp.query_result.data) == ["kept"]
        else:
            assert resp.query_rejected.close_status == status
            assert not resp.HasField("query_result")
    await checked(client, run)


async def test_reject_conditions_do_not_apply_to_an_open_run(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await settled(client, run)
        for condition in (NOT_OPEN, NOT_CLEAN):
            resp = await raw_query(client, run, "items", query_reject_condition=condition)
            assert not resp.HasField("query_rejected")
            assert json.loads(resp.query_result.data) == []
    await checked(client, run)


# -- consistency levels ----------------------------------------------------------------------------


async def test_strong_query_sees_every_event_recorded_before_it(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await settled(client, run)
        for i in range(3):
            await client.signal_workflow(run.workflow_id, run.run_id, "add", f"s{i}")
            resp = await raw_query(
                client,
                run,
                "items",
                query_consistency_level=query_pb2.QUERY_CONSISTENCY_LEVEL_STRONG,
                timeout=10,
            )
            assert json.loads(resp.query_result.data) == [f"s{j}" for j in range(i + 1)]
            # The answer came after the signal's decision: it has completed by now.
            events = await checked(client, run)
            types = event_types(events)
            last_signal = max(
                e.event_id
                for e in events
                if e.HasField("workflow_execution_signaled_event_attributes")
            )
            assert "DecisionTaskCompleted" in types[last_signal:], types
            assert types[-1] == "DecisionTaskCompleted"


async def test_strong_query_of_a_closed_run(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await start(client, worker.task_list)
        await client.signal_workflow(run.workflow_id, run.run_id, "add", "z")
        await client.signal_workflow(run.workflow_id, run.run_id, "finish", False)
        await close_event(client, run)
        resp = await raw_query(
            client,
            run,
            "describe",
            args=["q", 3],
            query_consistency_level=query_pb2.QUERY_CONSISTENCY_LEVEL_STRONG,
            timeout=10,
        )
    assert json.loads(resp.query_result.data) == "qqq:1"
    await checked(client, run)
