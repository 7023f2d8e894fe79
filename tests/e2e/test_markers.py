"""Markers and search attributes from workflow code, end to end through the official client.

side_effect, mutable_side_effect and get_version record MarkerRecorded events; the Python
worker replays the whole history on every decision task, so each later decision of these
workflows replays the markers the server stored, and a wrong marker (name, details or header)
fails the replay. upsert_search_attributes writes UpsertWorkflowSearchAttributes and the value
must show up in ListWorkflowExecutions queries.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import timedelta

from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_workflow_pb2,
)

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

# Observed by the tests: how often workflow code really ran a side-effect function.
_draws: defaultdict[str, int] = defaultdict(int)
# Configuration a mutable side effect reads; the bump activity changes it.
_config: dict[str, int] = {}

ACTIVITY_TIMEOUT = timedelta(seconds=10)


@reg.activity()
async def tick(key: str) -> str:
    return key


@reg.activity()
async def bump(key: str) -> int:
    _config[key] += 1
    return _config[key]


@reg.workflow()
class SideEffects:
    @workflow.run
    async def run(self, key: str) -> list[str]:
        def draw() -> str:
            _draws[key] += 1
            return f"{key}-{_draws[key]}"

        first = workflow.side_effect(draw, str)
        await tick.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(key)
        second = workflow.side_effect(draw, str)
        await tick.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(key)
        # Both values come from history now; the function ran twice in all.
        return [first, second]


@reg.workflow()
class MutableSideEffects:
    @workflow.run
    async def run(self, key: str) -> list[int]:
        def read() -> int:
            return _config[key]

        def changed(old: int, new: int) -> bool:
            return old != new

        a = workflow.mutable_side_effect("cfg", read, int, changed)
        await tick.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(key)
        b = workflow.mutable_side_effect("cfg", read, int, changed)  # unchanged: no marker
        await bump.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(key)
        c = workflow.mutable_side_effect("cfg", read, int, changed)  # changed: a marker
        await tick.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute(key)
        return [a, b, c]


@reg.workflow()
class Versioned:
    @workflow.run
    async def run(self) -> list[int]:
        v1 = workflow.get_version("feature-x", workflow.DEFAULT_VERSION, 2)
        await tick.with_options(schedule_to_close_timeout=ACTIVITY_TIMEOUT).execute("v")
        v2 = workflow.get_version("feature-x", workflow.DEFAULT_VERSION, 2)
        return [v1, v2]


# The same workflow type in two code versions: v1 has no get_version; v2 branches on it.
reg_v1 = Registry()
reg_v2 = Registry()


class _Evolving:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal(name="go")
    def on_go(self) -> None:
        self.go = True


@reg_v1.workflow(name="Evolving")
class EvolvingV1(_Evolving):
    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.go)
        return "old path"


@reg_v2.workflow(name="Evolving")
class EvolvingV2(_Evolving):
    @workflow.run
    async def run(self) -> str:
        version = workflow.get_version("evolve", workflow.DEFAULT_VERSION, 1)
        await workflow.wait_condition(lambda: self.go)
        return "old path" if version == workflow.DEFAULT_VERSION else f"new path {version}"


@reg.workflow()
class Upserter:
    def __init__(self) -> None:
        self.done = False

    @workflow.signal(name="finish")
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, key: str) -> str:
        workflow.upsert_search_attributes({"CustomKeywordField": key, "CustomIntField": 42})
        await workflow.wait_condition(lambda: self.done)
        workflow.upsert_search_attributes({"CustomIntField": 43})
        return key


# -- helpers -------------------------------------------------------------------------------------


async def history(
    client: Client, execution: common_pb2.WorkflowExecution
) -> list[history_pb2.HistoryEvent]:
    events = await full_history(client, execution)
    check_history(events)
    return events


def markers(events: list[history_pb2.HistoryEvent]) -> list[history_pb2.HistoryEvent]:
    return [e for e in events if e.HasField("marker_recorded_event_attributes")]


def marker_header(event: history_pb2.HistoryEvent) -> dict[str, object]:
    header = event.marker_recorded_event_attributes.header.fields["MarkerHeader"].data
    decoded: dict[str, object] = json.loads(header)
    return decoded


def decision_completed_before(events: list[history_pb2.HistoryEvent], event_id: int) -> int:
    """The id of the last DecisionTaskCompleted before `event_id`."""
    return max(
        e.event_id
        for e in events
        if e.event_id < event_id and e.HasField("decision_task_completed_event_attributes")
    )


async def run_to_completion(
    client: Client, registry: Registry, workflow_type: str, *args: object
) -> tuple[common_pb2.WorkflowExecution, bytes]:
    async with worker_for(client, registry) as worker:
        execution = await client.start_workflow(
            workflow_type,
            *args,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, execution)
    assert closed.HasField("workflow_execution_completed_event_attributes"), closed
    return execution, closed.workflow_execution_completed_event_attributes.result.data


async def list_ids(client: Client, query: str) -> set[str]:
    # The client has no visibility stub of its own; use its channel.
    stub = service_visibility_pb2_grpc.VisibilityAPIStub(client._channel)  # type: ignore[no-untyped-call]
    resp = await stub.ListWorkflowExecutions(
        service_visibility_pb2.ListWorkflowExecutionsRequest(
            domain=DOMAIN, page_size=100, query=query
        )
    )
    return {info.workflow_execution.workflow_id for info in resp.executions}


async def visible(client: Client, query: str, workflow_id: str) -> None:
    """Wait until `query` lists exactly `workflow_id` (visibility may trail the history)."""

    async def check() -> bool:
        return await list_ids(client, query) == {workflow_id}

    await eventually(check)


# -- side effects ---------------------------------------------------------------------------------


async def test_side_effect_is_recorded_once_and_replayed(client: Client) -> None:
    key = f"se-{uuid.uuid4().hex[:8]}"
    execution, result = await run_to_completion(client, reg, "SideEffects", key)
    assert json.loads(result) == [f"{key}-1", f"{key}-2"]
    # Replays of later decisions took the values from history instead of drawing again.
    assert _draws[key] == 2

    events = await history(client, execution)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "MarkerRecorded",
        "ActivityTaskScheduled",
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "MarkerRecorded",
        "ActivityTaskScheduled",
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
    first, second = markers(events)
    for marker, value in ((first, f"{key}-1"), (second, f"{key}-2")):
        attrs = marker.marker_recorded_event_attributes
        assert attrs.marker_name == "SideEffect"
        assert json.loads(attrs.details.data) == value
        assert attrs.decision_task_completed_event_id == marker.event_id - 1
    # The client's header survives the round trip: it keys the marker on replay.
    assert marker_header(first)["context_id"] == "0"
    assert marker_header(second)["context_id"] != marker_header(first)["context_id"]


async def test_mutable_side_effect_records_only_changes(client: Client) -> None:
    key = f"mse-{uuid.uuid4().hex[:8]}"
    _config[key] = 7
    execution, result = await run_to_completion(client, reg, "MutableSideEffects", key)
    assert json.loads(result) == [7, 7, 8]

    events = await history(client, execution)
    recorded = markers(events)
    assert [m.marker_recorded_event_attributes.marker_name for m in recorded] == [
        "MutableSideEffect",
        "MutableSideEffect",
    ]
    assert [json.loads(m.marker_recorded_event_attributes.details.data) for m in recorded] == [
        7,
        8,
    ]
    headers = [marker_header(m) for m in recorded]
    assert [h["mutable_side_effect_id"] for h in headers] == ["cfg", "cfg"]
    assert [h["mutable_side_effect_access_count"] for h in headers] == [0, 2]
    # Each marker belongs to the decision that produced it: the first and the third.
    completed = [
        e.event_id for e in events if e.HasField("decision_task_completed_event_attributes")
    ]
    assert [
        m.marker_recorded_event_attributes.decision_task_completed_event_id for m in recorded
    ] == [
        completed[0],
        completed[2],
    ]
    for m in recorded:
        assert m.marker_recorded_event_attributes.decision_task_completed_event_id == (
            decision_completed_before(events, m.event_id)
        )
    assert event_types(events).count("ActivityTaskCompleted") == 3


# -- versioning -----------------------------------------------------------------------------------


async def test_get_version_records_a_marker_and_the_change_version(client: Client) -> None:
    execution, result = await run_to_completion(client, reg, "Versioned")
    assert json.loads(result) == [2, 2]

    events = await history(client, execution)
    assert event_types(events)[:7] == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "MarkerRecorded",
        "UpsertWorkflowSearchAttributes",
        "ActivityTaskScheduled",
    ]
    (marker,) = markers(events)
    attrs = marker.marker_recorded_event_attributes
    assert attrs.marker_name == "Version"
    assert json.loads(attrs.details.data) == 2
    assert marker_header(marker)["context_id"] == "feature-x"
    assert attrs.decision_task_completed_event_id == 4
    upsert = events[5].upsert_workflow_search_attributes_event_attributes
    assert upsert.decision_task_completed_event_id == 4
    change = upsert.search_attributes.indexed_fields["CadenceChangeVersion"].data
    assert json.loads(change) == ["feature-x-2"]
    # Only one marker and one upsert: the second get_version answered from history.
    assert event_types(events).count("UpsertWorkflowSearchAttributes") == 1

    await visible(client, "CadenceChangeVersion = 'feature-x-2'", execution.workflow_id)
    assert await list_ids(client, "CadenceChangeVersion = 'feature-x-3'") == set()


async def test_get_version_keeps_old_runs_on_the_old_path(client: Client) -> None:
    """A run started by code without get_version replays under new code as DEFAULT_VERSION;
    a run started under the new code takes the new branch."""
    async with worker_for(client, reg_v1) as worker:
        task_list = worker.task_list
        old = await client.start_workflow(
            "Evolving", task_list=task_list, execution_start_to_close_timeout=timedelta(seconds=30)
        )

        async def decided() -> bool:
            return "DecisionTaskCompleted" in event_types(await full_history(client, old))

        await eventually(decided)
    async with worker_for(client, reg_v2, task_list) as worker:
        new = await client.start_workflow(
            "Evolving", task_list=task_list, execution_start_to_close_timeout=timedelta(seconds=30)
        )
        await client.signal_workflow(old.workflow_id, old.run_id, "go")
        await client.signal_workflow(new.workflow_id, new.run_id, "go")
        old_closed = await close_event(client, old)
        new_closed = await close_event(client, new)
    assert old_closed.workflow_execution_completed_event_attributes.result.data == b'"old path"'
    assert new_closed.workflow_execution_completed_event_attributes.result.data == b'"new path 1"'
    old_events = await history(client, old)
    assert markers(old_events) == []
    assert "UpsertWorkflowSearchAttributes" not in event_types(old_events)
    (marker,) = markers(await history(client, new))
    assert marker.marker_recorded_event_attributes.marker_name == "Version"
    assert json.loads(marker.marker_recorded_event_attributes.details.data) == 1


# -- search attributes ----------------------------------------------------------------------------


async def test_upsert_search_attributes_is_recorded_and_queryable(client: Client) -> None:
    key = f"kw-{uuid.uuid4().hex[:8]}"
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "Upserter",
            key,
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        # Visible while the run is open, by the upserted values.
        await visible(client, f"CustomKeywordField = '{key}'", execution.workflow_id)
        await visible(
            client,
            f"CustomKeywordField = '{key}' AND CustomIntField = 42 AND CloseTime = missing",
            execution.workflow_id,
        )
        desc = await client.workflow_stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=execution
            )
        )
        fields = desc.workflow_execution_info.search_attributes.indexed_fields
        assert json.loads(fields["CustomKeywordField"].data) == key
        assert json.loads(fields["CustomIntField"].data) == 42

        await client.signal_workflow(execution.workflow_id, execution.run_id, "finish")
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == (
        json.dumps(key).encode()
    )

    events = await history(client, execution)
    upserts = [
        e for e in events if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert len(upserts) == 2
    first = upserts[0].upsert_workflow_search_attributes_event_attributes
    assert {k: json.loads(v.data) for k, v in first.search_attributes.indexed_fields.items()} == {
        "CustomKeywordField": key,
        "CustomIntField": 42,
    }
    assert first.decision_task_completed_event_id == 4
    assert upserts[0].event_id == 5
    second = upserts[1].upsert_workflow_search_attributes_event_attributes
    assert {k: json.loads(v.data) for k, v in second.search_attributes.indexed_fields.items()} == {
        "CustomIntField": 43
    }

    # After the close: the merged attributes (the keyword kept, the int replaced).
    await visible(
        client,
        f"CustomKeywordField = '{key}' AND CustomIntField = 43 AND CloseStatus = 'COMPLETED'",
        execution.workflow_id,
    )
    assert await list_ids(client, f"CustomKeywordField = '{key}' AND CustomIntField = 42") == set()
