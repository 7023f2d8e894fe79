"""The canonical workflow: start, one activity, complete, through the official client."""

from __future__ import annotations

from datetime import timedelta

from cadence import Client, Registry, workflow

from tests.e2e.harness import close_event, event_types, full_history, worker_for

reg = Registry()


@reg.activity()
async def echo(message: str) -> str:
    return message


@reg.workflow()
class EchoWorkflow:
    @workflow.run
    async def run(self, message: str) -> str:
        return await echo.with_options(schedule_to_close_timeout=timedelta(seconds=10)).execute(
            message
        )


async def test_echo_workflow_completes_with_canonical_history(client: Client) -> None:
    async with worker_for(client, reg) as worker:
        execution = await client.start_workflow(
            "EchoWorkflow",
            "hello",
            task_list=worker.task_list,
            execution_start_to_close_timeout=timedelta(seconds=30),
        )
        closed = await close_event(client, execution)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"hello"'
    events = await full_history(client, execution)
    assert [e.event_id for e in events] == list(range(1, 12))
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskScheduled",
        "ActivityTaskStarted",
        "ActivityTaskCompleted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "WorkflowExecutionCompleted",
    ]
