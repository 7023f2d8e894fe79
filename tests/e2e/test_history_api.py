"""GetWorkflowExecutionHistory end to end: paging, long polls, the close-event filter, the
current run, and following continue-as-new chains."""

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
    service_workflow_pb2,
    workflow_pb2,
)
from cadence.error import CadenceRpcError, EntityNotExistsError

from engine.execution.checker import check_history
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    full_history,
    worker_for,
)

reg = Registry()


@reg.activity()
async def echo(message: str) -> str:
    return message


@reg.workflow()
class ThreeActivities:
    @workflow.run
    async def run(self, prefix: str) -> list[str]:
        act = echo.with_options(schedule_to_close_timeout=timedelta(seconds=10))
        first = await act.execute(f"{prefix}0")
        second = await act.execute(f"{prefix}1")
        third = await act.execute(f"{prefix}2")
        return [first, second, third]


@reg.workflow()
class Echo:
    @workflow.run
    async def run(self, message: str) -> str:
        return await echo.with_options(schedule_to_close_timeout=timedelta(seconds=10)).execute(
            message
        )


@reg.workflow()
class Chain:
    @workflow.run
    async def run(self, n: int) -> int:
        if n < 3:
            workflow.continue_as_new(n + 1)
        return n


def _execution(workflow_id: str, run_id: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id)


async def get_history(
    client: Client,
    execution: common_pb2.WorkflowExecution,
    *,
    timeout: float | None = None,
    **fields: Any,
) -> service_workflow_pb2.GetWorkflowExecutionHistoryResponse:
    resp: service_workflow_pb2.GetWorkflowExecutionHistoryResponse
    resp = await client.workflow_stub.GetWorkflowExecutionHistory(
        service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
            domain=DOMAIN, workflow_execution=execution, **fields
        ),
        timeout=timeout,
    )
    return resp


async def checked(
    client: Client, execution: common_pb2.WorkflowExecution
) -> list[history_pb2.HistoryEvent]:
    events = await full_history(client, execution)
    check_history(events)
    return events


async def start_idle(client: Client, workflow_type: str = "Echo") -> common_pb2.WorkflowExecution:
    """A run nobody works on: its history stays [Started, DecisionTaskScheduled]."""
    return await client.start_workflow(
        workflow_type,
        "idle",
        task_list=f"idle-{uuid.uuid4()}",
        execution_start_to_close_timeout=timedelta(seconds=60),
    )


async def signal(client: Client, execution: common_pb2.WorkflowExecution, name: str) -> None:
    await client.signal_workflow(execution.workflow_id, execution.run_id, name)


CANONICAL_BATCHES = [[1, 2], [3], [4, 5], [6], [7, 8], [9], [10, 11]]


# -- paging ---------------------------------------------------------------------------------------


async def test_paging_returns_every_event_exactly_once(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "ThreeActivities",
            "p",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await close_event(client, run)
    whole = await get_history(client, run)
    assert not whole.next_page_token
    all_events = list(whole.history.events)
    check_history(all_events)
    assert len(all_events) == 4 + 3 * 6 + 1
    assert event_types(all_events)[-1] == "WorkflowExecutionCompleted"
    for page_size in (1, 2, 3, 5, 8, 22, 23, 100):
        pages: list[list[history_pb2.HistoryEvent]] = []
        token = b""
        while True:
            resp = await get_history(client, run, page_size=page_size, next_page_token=token)
            assert resp.history.events, f"empty page at page_size={page_size}"
            pages.append(list(resp.history.events))
            token = resp.next_page_token
            if not token:
                break
            assert len(pages) < 100
        paged = [e for page in pages for e in page]
        assert [e.event_id for e in paged] == list(range(1, len(all_events) + 1)), page_size
        assert paged == all_events
        if page_size == 1:
            assert len(pages) > len(all_events) // 2  # at most two events per node here
        if page_size >= len(all_events):
            assert len(pages) == 1


async def test_page_size_one_returns_one_batch_per_page(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "Echo",
            "b",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await close_event(client, run)
    pages: list[list[int]] = []
    events: list[history_pb2.HistoryEvent] = []
    token = b""
    while True:
        resp = await get_history(client, run, page_size=1, next_page_token=token)
        pages.append([e.event_id for e in resp.history.events])
        events.extend(resp.history.events)
        token = resp.next_page_token
        if not token:
            break
    # A transaction's events are one node: a page never splits it.
    assert pages == CANONICAL_BATCHES
    check_history(events)
    assert events == list((await get_history(client, run)).history.events)


async def test_page_token_stays_on_its_run(client: Client) -> None:
    old = await start_idle(client)
    first = await get_history(client, _execution(old.workflow_id), wait_for_new_event=True)
    assert [e.event_id for e in first.history.events] == [1, 2]
    assert first.next_page_token
    # A new run takes over the workflow id (the old one is terminated on the way).
    new_run = await client.start_workflow(
        "Echo",
        "new",
        task_list=f"idle-{uuid.uuid4()}",
        workflow_id=old.workflow_id,
        execution_start_to_close_timeout=timedelta(seconds=60),
        workflow_id_reuse_policy=workflow_pb2.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING,
    )
    assert new_run.run_id != old.run_id
    # The first page was read at the old run's end, and the old run has since closed: the
    # token continues the old run, not the new current one.
    rest = await get_history(
        client, _execution(old.workflow_id), next_page_token=first.next_page_token
    )
    assert event_types(list(rest.history.events)) == ["WorkflowExecutionTerminated"]
    assert rest.history.events[0].event_id == 3
    assert not rest.next_page_token
    await checked(client, old)
    await checked(client, new_run)


async def test_bad_page_token_is_bad_request(client: Client) -> None:
    run = await start_idle(client)
    with pytest.raises(CadenceRpcError) as info:
        await get_history(client, run, next_page_token=b"\xffnot-a-token")
    assert info.value.code.name == "INVALID_ARGUMENT"


async def test_unknown_execution_is_entity_not_exists(client: Client) -> None:
    with pytest.raises(EntityNotExistsError):
        await get_history(client, _execution("no-such-workflow"))
    run = await start_idle(client)
    with pytest.raises(EntityNotExistsError):
        await get_history(client, _execution(run.workflow_id, str(uuid.uuid4())))


# -- long poll ------------------------------------------------------------------------------------


async def test_long_poll_returns_when_a_new_event_arrives(client: Client) -> None:
    run = await start_idle(client)
    first = await get_history(client, run, wait_for_new_event=True)
    assert [e.event_id for e in first.history.events] == [1, 2]
    assert first.next_page_token  # open: the token is where the next event will be

    loop = asyncio.get_running_loop()
    began = loop.time()
    poll = asyncio.create_task(
        get_history(client, run, wait_for_new_event=True, next_page_token=first.next_page_token)
    )
    await signal(client, run, "wake")
    resp = await asyncio.wait_for(poll, 10)
    # Woken by the event, long before the 20 s long-poll limit.
    assert loop.time() - began < 5
    assert event_types(list(resp.history.events)) == ["WorkflowExecutionSignaled"]
    assert resp.history.events[0].event_id == 3
    assert resp.history.events[0].workflow_execution_signaled_event_attributes.signal_name == (
        "wake"
    )
    assert resp.next_page_token
    await checked(client, run)


async def test_long_poll_with_nothing_new_returns_an_empty_page_and_a_token(
    client: Client,
) -> None:
    run = await start_idle(client)
    first = await get_history(client, run, wait_for_new_event=True)
    loop = asyncio.get_running_loop()
    began = loop.time()
    empty = await get_history(
        client, run, wait_for_new_event=True, next_page_token=first.next_page_token, timeout=2.5
    )
    waited = loop.time() - began
    assert list(empty.history.events) == []
    assert empty.next_page_token
    # It waited (within the deadline) before answering.
    assert 1.0 <= waited < 2.5
    # The token still points at the next event: the signal sent now is what it returns.
    await signal(client, run, "later")
    resp = await get_history(
        client, run, wait_for_new_event=True, next_page_token=empty.next_page_token, timeout=10
    )
    assert [e.event_id for e in resp.history.events] == [3]
    assert event_types(list(resp.history.events)) == ["WorkflowExecutionSignaled"]
    await checked(client, run)


async def test_long_poll_follows_a_run_to_its_close(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "Echo",
            "lp",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        seen: list[history_pb2.HistoryEvent] = []
        token = b""
        while True:
            resp = await get_history(
                client, run, wait_for_new_event=True, next_page_token=token, timeout=10
            )
            seen.extend(resp.history.events)
            token = resp.next_page_token
            if not token:
                break
            assert len(seen) <= 11
    check_history(seen)
    assert [e.event_id for e in seen] == list(range(1, 12))
    assert event_types(seen)[-1] == "WorkflowExecutionCompleted"


# -- close-event filter ---------------------------------------------------------------------------


async def test_close_event_filter_returns_only_the_close_event(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        run = await client.start_workflow(
            "Echo",
            "c",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        await close_event(client, run)
    resp = await get_history(
        client, run, history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT
    )
    assert len(resp.history.events) == 1
    (closed,) = resp.history.events
    assert closed.event_id == 11
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"c"'
    assert not resp.next_page_token
    events = await checked(client, run)
    assert closed == events[-1]


async def test_close_event_filter_on_an_open_run(client: Client) -> None:
    run = await start_idle(client)
    resp = await get_history(
        client, run, history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT
    )
    assert list(resp.history.events) == []
    # A long poll waits for the close: terminate the run while it waits.
    poll = asyncio.create_task(
        get_history(
            client,
            run,
            wait_for_new_event=True,
            history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
            timeout=10,
        )
    )
    await signal(client, run, "not-a-close")
    await client.workflow_stub.TerminateWorkflowExecution(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain=DOMAIN, workflow_execution=run, reason="bye"
        )
    )
    done = await asyncio.wait_for(poll, 10)
    assert event_types(list(done.history.events)) == ["WorkflowExecutionTerminated"]
    assert done.history.events[0].event_id == 4
    assert done.history.events[0].workflow_execution_terminated_event_attributes.reason == "bye"
    await checked(client, run)


# -- current run, continue-as-new chains ----------------------------------------------------------


async def test_empty_run_id_means_the_current_run_and_chains_can_be_followed(
    client: Client,
) -> None:
    async with worker_for(client, reg) as worker:
        first = await client.start_workflow(
            "Chain",
            0,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        wf = first.workflow_id
        # Follow the chain through the close events, as clients do.
        run_ids = [first.run_id]
        while True:
            closed = await close_event(client, _execution(wf, run_ids[-1]))
            field = closed.WhichOneof("attributes")
            if field != "workflow_execution_continued_as_new_event_attributes":
                break
            run_ids.append(
                closed.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            )
    assert field == "workflow_execution_completed_event_attributes"
    assert json.loads(closed.workflow_execution_completed_event_attributes.result.data) == 3
    assert len(run_ids) == 4
    assert len(set(run_ids)) == 4
    histories = [await checked(client, _execution(wf, r)) for r in run_ids]
    for i, events in enumerate(histories):
        started = events[0].workflow_execution_started_event_attributes
        assert json.loads(started.input.data) == i
        assert started.continued_execution_run_id == (run_ids[i - 1] if i else "")
        assert started.first_execution_run_id == run_ids[0]
        if i < 3:
            can = events[-1].workflow_execution_continued_as_new_event_attributes
            assert can.new_execution_run_id == run_ids[i + 1]
    # An empty run id reads the current run: the last of the chain.
    current = await checked(client, _execution(wf))
    assert current == histories[-1]
    closed_current = await get_history(
        client,
        _execution(wf),
        history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
    )
    assert list(closed_current.history.events) == [histories[-1][-1]]


async def test_empty_run_id_while_running(client: Client) -> None:
    run = await start_idle(client)
    resp = await get_history(client, _execution(run.workflow_id))
    events = list(resp.history.events)
    check_history(events)
    assert event_types(events) == ["WorkflowExecutionStarted", "DecisionTaskScheduled"]
    assert events == list((await get_history(client, run)).history.events)
