"""Protocol driver: raw gRPC with the generated stubs, to measure the server's own capacity.

Many concurrent pollers (`pollers` for decision tasks and as many for activity tasks) take
tasks from the scenario's task list. A decision task is answered by the scenario's
stateless decider from the task's history alone: no replay, no workflow objects, no
per-run state. An activity task is answered at once with its input as the result (echo).
The client-side cost per task is a protobuf decode and encode, so the figures are bounded
by the server (and by the one Python process running the harness on the same cores).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from cadence.api.v1 import (
    decision_pb2,
    service_worker_pb2,
    service_worker_pb2_grpc,
    tasklist_pb2,
)

from load import api, codec
from load.config import RunConfig
from load.result import Execution
from load.scenarios.base import DecisionTask, run_input

if TYPE_CHECKING:
    from load.scenarios.base import Scenario

log = logging.getLogger(__name__)

RETRY_PAUSE_S = 0.2
"""Pause after a failed poll, so a server that is down is not spun on."""


class ProtocolDriver:
    name = "protocol"
    cadence_api = True

    def __init__(self, config: RunConfig) -> None:
        self._config = config
        self._domain = config.domain
        self._identity = f"load-protocol@{socket.gethostname()}"
        self._channel = api.open_channel(config.target)
        self._workflow: Any = api.workflow_stub(self._channel)
        # Generated stub, unannotated: responses are annotated where they are read.
        self._worker: Any = service_worker_pb2_grpc.WorkerAPIStub(self._channel)  # type: ignore[no-untyped-call]
        self._counts: Counter[str] = Counter()

    @contextlib.asynccontextmanager
    async def workers(self, scenario: Scenario, task_list: str) -> AsyncIterator[None]:
        tl = tasklist_pb2.TaskList(name=task_list)
        loops = [self._decision_loop(scenario, tl) for _ in range(self._config.pollers)]
        loops += [self._activity_loop(tl) for _ in range(self._config.pollers)]
        tasks = [asyncio.create_task(loop) for loop in loops]
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _decision_loop(self, scenario: Scenario, task_list: tasklist_pb2.TaskList) -> None:
        request = service_worker_pb2.PollForDecisionTaskRequest(
            domain=self._domain, task_list=task_list, identity=self._identity
        )
        while True:
            task = await self._poll(self._worker.PollForDecisionTask, request)
            if task is None:
                continue
            decisions = await self._decide(scenario, task, task_list.name)
            if decisions is None:
                continue
            # Counted before the reply: the run may end (and cancel this poller) while the
            # reply that closed the last workflow is still on its way back.
            self._counts["decision tasks"] += 1
            await self._respond(
                self._worker.RespondDecisionTaskCompleted,
                service_worker_pb2.RespondDecisionTaskCompletedRequest(
                    task_token=task.task_token, decisions=decisions, identity=self._identity
                ),
            )

    async def _activity_loop(self, task_list: tasklist_pb2.TaskList) -> None:
        request = service_worker_pb2.PollForActivityTaskRequest(
            domain=self._domain, task_list=task_list, identity=self._identity
        )
        while True:
            task = await self._poll(self._worker.PollForActivityTask, request)
            if task is None:
                continue
            self._counts["activity tasks"] += 1
            await self._respond(
                self._worker.RespondActivityTaskCompleted,
                service_worker_pb2.RespondActivityTaskCompletedRequest(
                    task_token=task.task_token, result=task.input, identity=self._identity
                ),
            )

    async def _decide(
        self, scenario: Scenario, task: Any, task_list: str
    ) -> list[decision_pb2.Decision] | None:
        """The scenario's decisions for a polled task; None when it cannot be answered."""
        execution = Execution(task.workflow_execution.workflow_id, task.workflow_execution.run_id)
        events = list(task.history.events)
        try:
            if task.next_page_token:  # a long history comes in pages
                events += await api.full_history(
                    self._workflow, self._domain, execution, task.next_page_token
                )
            return scenario.decide(
                DecisionTask(
                    workflow_type=task.workflow_type.name,
                    workflow_id=execution.workflow_id,
                    task_list=task_list,
                    args=run_input(events),
                    events=events,
                )
            )
        except Exception:
            # Leave the task to time out (the run then shows as not completed) rather than
            # kill this poller: a decider bug or a failed page read must not stop the others.
            self._counts["decider errors"] += 1
            log.exception("decide_failed workflow_id=%s", execution.workflow_id)
            return None

    async def _respond(self, call: Any, request: Any) -> None:
        try:
            await call(request, metadata=api.METADATA, timeout=30)
        except grpc.aio.AioRpcError as e:
            # A stale task (the run closed, or the task timed out, meanwhile) is expected
            # under load: count it and go on polling, as a real worker does.
            self._counts["respond errors"] += 1
            log.debug("respond_failed code=%s", e.code())

    async def _poll(self, call: Any, request: Any) -> Any:
        """One long poll; the task, or None when it came back empty or failed."""
        try:
            task = await call(request, metadata=api.METADATA, timeout=api.LONG_POLL_S)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                self._counts["poll errors"] += 1
                log.debug("poll_failed code=%s", e.code())
                await asyncio.sleep(RETRY_PAUSE_S)
            return None
        return task if task.task_token else None

    async def start(
        self, workflow_type: str, args: list[Any], *, workflow_id: str, task_list: str
    ) -> Execution:
        return await api.start_workflow(
            self._workflow,
            self._domain,
            workflow_type=workflow_type,
            workflow_id=workflow_id,
            task_list=task_list,
            input=codec.encode(args),
            timeout_s=self._config.workflow_timeout_s,
            identity=self._identity,
        )

    async def signal(self, execution: Execution, name: str, args: list[Any]) -> None:
        await api.signal_workflow(
            self._workflow, self._domain, execution, name, codec.encode(args), self._identity
        )

    async def wait_closed(self, execution: Execution) -> str:
        return api.close_kind(await api.wait_closed(self._workflow, self._domain, execution))

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    async def close(self) -> None:
        await self._channel.close()
