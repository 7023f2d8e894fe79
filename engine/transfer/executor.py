"""TransferExecutor: one `handle_<kind>` per transfer task kind.

Tasks are delivered at least once, so every handler is idempotent: it re-reads mutable state
and does nothing when the task is stale; commands it sends carry request ids the target
dedupes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from cadence.api.v1 import common_pb2, history_pb2, service_workflow_pb2, workflow_pb2

from engine.errors import (
    CancellationAlreadyRequestedError,
    EntityNotExistsError,
    WorkflowExecutionAlreadyStartedError,
)
from engine.history.reader import RunReader
from engine.matching.protocols import TaskMatcher, TaskType
from engine.model.commands import Command, CommandKind
from engine.model.state import ExternalRequestInfo, MutableState
from engine.model.tasks import DispatchTask, TransferKind, TransferTask, encode_dispatch
from engine.routing.bus import CommandBus

log = structlog.get_logger(__name__)

# Resolves a domain name to its id ("" when unknown).
DomainResolver = Callable[[str], Awaitable[str]]

CLOSE_CONTINUED_AS_NEW = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_CONTINUED_AS_NEW


class TransferExecutor:
    def __init__(
        self,
        runs: RunReader,
        matcher: TaskMatcher,
        bus: CommandBus,
        resolve_domain: DomainResolver,
    ) -> None:
        self.runs = runs
        self.matcher = matcher
        self.bus = bus
        self.resolve_domain = resolve_domain
        self._handlers: dict[TransferKind, Callable[[TransferTask], Awaitable[None]]] = {
            TransferKind.DECISION_TASK: self.handle_decision_task,
            TransferKind.ACTIVITY_TASK: self.handle_activity_task,
            TransferKind.CLOSE_EXECUTION: self.handle_close_execution,
            TransferKind.START_CHILD: self.handle_start_child,
            TransferKind.SIGNAL_EXECUTION: self.handle_signal_execution,
            TransferKind.CANCEL_EXECUTION: self.handle_cancel_execution,
        }

    async def execute(self, task: TransferTask) -> None:
        await self._handlers[task.kind](task)

    async def _state(self, task: TransferTask) -> MutableState | None:
        """The task's run as last written; None when it does not exist (a stale task)."""
        return await self.runs.find(task.domain_id, task.workflow_id, task.run_id)

    # -- dispatch ------------------------------------------------------------------------------

    async def handle_decision_task(self, task: TransferTask) -> None:
        # Staleness is checked when a poller takes the task (RecordDecisionTaskStarted), which
        # saves a store read per dispatch on the hot path.
        payload = encode_dispatch(
            DispatchTask(task.domain_id, task.workflow_id, task.run_id, task.event_id, task.attempt)
        )
        await self.matcher.add_task(task.domain_id, task.task_list, TaskType.DECISION, payload)

    async def handle_activity_task(self, task: TransferTask) -> None:
        payload = encode_dispatch(
            DispatchTask(task.domain_id, task.workflow_id, task.run_id, task.event_id, task.attempt)
        )
        await self.matcher.add_task(
            task.domain_id,
            task.task_list,
            TaskType.ACTIVITY,
            payload,
            ttl_seconds=float(task.schedule_to_start_s) or None,
        )

    # -- close -----------------------------------------------------------------------------------

    async def handle_close_execution(self, task: TransferTask) -> None:
        st = await self._state(task)
        if st is None or st.is_open:
            return
        if st.parent is not None and st.close_status != CLOSE_CONTINUED_AS_NEW:
            p = st.parent
            await self.bus.post(
                Command(
                    kind=CommandKind.CHILD_COMPLETED,
                    domain_id=p.domain_id,
                    workflow_id=p.workflow_id,
                    run_id=p.run_id,
                    args={
                        "initiated_id": p.initiated_id,
                        "run_id": st.run_id,
                        "close_event": st.close_event,
                    },
                )
            )
        if st.close_status == CLOSE_CONTINUED_AS_NEW:
            return  # the chain goes on: its children stay with it
        for child in st.children.values():
            if not child.run_id:
                continue
            policy = child.parent_close_policy
            child_domain = await self.resolve_domain(child.domain_name)
            if not child_domain:
                continue
            execution = common_pb2.WorkflowExecution(
                workflow_id=child.workflow_id, run_id=child.run_id
            )
            if policy == workflow_pb2.PARENT_CLOSE_POLICY_TERMINATE:
                req = service_workflow_pb2.TerminateWorkflowExecutionRequest(
                    domain=child.domain_name,
                    workflow_execution=execution,
                    reason="by parent close policy",
                    identity="cadence-history-server",
                )
                kind = CommandKind.TERMINATE
            elif policy == workflow_pb2.PARENT_CLOSE_POLICY_REQUEST_CANCEL:
                req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(  # type: ignore[assignment]
                    domain=child.domain_name,
                    workflow_execution=execution,
                    identity="cadence-history-server",
                    request_id=f"{st.run_id}:close:{child.initiated_id}",
                    cause="by parent close policy",
                )
                kind = CommandKind.REQUEST_CANCEL
            else:
                continue
            try:
                await self.bus.call(
                    Command(
                        kind=kind,
                        domain_id=child_domain,
                        workflow_id=child.workflow_id,
                        run_id=child.run_id,
                        request=req.SerializeToString(),
                    )
                )
            except (EntityNotExistsError, CancellationAlreadyRequestedError):
                pass  # already closed or already asked: the policy is applied

    # -- children ----------------------------------------------------------------------------------

    async def handle_start_child(self, task: TransferTask) -> None:
        st = await self._state(task)
        if st is None or not st.is_open:
            return
        child = st.children.get(task.event_id)
        if child is None or child.run_id:
            return
        attrs = history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes.FromString(
            child.initiated
        )
        child_domain = await self.resolve_domain(child.domain_name)
        parent_cmd = Command(
            kind=CommandKind.CHILD_START_FAILED,
            domain_id=st.domain_id,
            workflow_id=st.workflow_id,
            run_id=st.run_id,
            args={"initiated_id": task.event_id},
        )
        if not child_domain:
            parent_cmd.args["cause"] = (
                workflow_pb2.CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_RUNNING
            )
            await self.bus.post(parent_cmd)
            return
        try:
            values = await self.bus.call(
                Command(
                    kind=CommandKind.START_CHILD,
                    domain_id=child_domain,
                    workflow_id=child.workflow_id,
                    request=attrs.SerializeToString(),
                    args={
                        "request_id": child.create_request_id,
                        "parent_domain_id": st.domain_id,
                        "parent_domain_name": st.domain_name,
                        "parent_workflow_id": st.workflow_id,
                        "parent_run_id": st.run_id,
                        "initiated_id": task.event_id,
                    },
                )
            )
        except WorkflowExecutionAlreadyStartedError:
            parent_cmd.args["cause"] = (
                workflow_pb2.CHILD_WORKFLOW_EXECUTION_FAILED_CAUSE_WORKFLOW_ALREADY_RUNNING
            )
            await self.bus.post(parent_cmd)
            return
        await self.bus.post(
            Command(
                kind=CommandKind.CHILD_STARTED,
                domain_id=st.domain_id,
                workflow_id=st.workflow_id,
                run_id=st.run_id,
                args={"initiated_id": task.event_id, "run_id": values["run_id"]},
            )
        )

    # -- external signal / cancel ------------------------------------------------------------------

    async def handle_signal_execution(self, task: TransferTask) -> None:
        def signal(st: MutableState, info: ExternalRequestInfo, domain_id: str) -> Command:
            req = service_workflow_pb2.SignalWorkflowExecutionRequest(
                domain=info.domain_name,
                workflow_execution=_execution(info),
                identity="cadence-history-server",
                request_id=info.request_id,
                signal_name=info.signal_name,
                signal_input=None if info.input is None else common_pb2.Payload(data=info.input),
                control=info.control,
            )
            return _target_command(CommandKind.SIGNAL, info, domain_id, req)

        await self._request_external(
            task,
            lambda st: st.signals_out,
            signal,
            CommandKind.EXTERNAL_SIGNALED,
            CommandKind.EXTERNAL_SIGNAL_FAILED,
            workflow_pb2.SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION,
        )

    async def handle_cancel_execution(self, task: TransferTask) -> None:
        def cancel(st: MutableState, info: ExternalRequestInfo, domain_id: str) -> Command:
            req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
                domain=info.domain_name,
                workflow_execution=_execution(info),
                identity="cadence-history-server",
                request_id=info.request_id,
            )
            cmd = _target_command(CommandKind.REQUEST_CANCEL, info, domain_id, req)
            cmd.args = {
                "initiated_id": task.event_id,
                "source_workflow_id": st.workflow_id,
                "source_run_id": st.run_id,
            }
            return cmd

        await self._request_external(
            task,
            lambda st: st.request_cancels,
            cancel,
            CommandKind.EXTERNAL_CANCEL_REQUESTED,
            CommandKind.EXTERNAL_CANCEL_FAILED,
            workflow_pb2.CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED_CAUSE_UNKNOWN_EXTERNAL_WORKFLOW_EXECUTION,
        )

    async def _request_external(
        self,
        task: TransferTask,
        pending: Callable[[MutableState], dict[int, ExternalRequestInfo]],
        make: Callable[[MutableState, ExternalRequestInfo, str], Command],
        ok_kind: CommandKind,
        failed_kind: CommandKind,
        failed_cause: int,
    ) -> None:
        """Deliver a signal or cancel request to another workflow, then report the outcome
        to the requesting run (…Signaled/…CancelRequested, or …Failed)."""
        st = await self._state(task)
        if st is None or not st.is_open:
            return
        info = pending(st).get(task.event_id)
        if info is None:
            return
        target_domain = await self.resolve_domain(info.domain_name)
        # As in Cadence, a run may not signal or cancel its own workflow id (any run of it).
        failed = (
            not target_domain
            or (target_domain == st.domain_id and info.workflow_id == st.workflow_id)
            or (info.child_workflow_only and not _is_child(st, info.workflow_id, info.run_id))
        )
        if not failed:
            try:
                await self.bus.call(make(st, info, target_domain))
            except CancellationAlreadyRequestedError:
                pass  # asked before: the request stands
            except EntityNotExistsError:
                failed = True
        args: dict[str, int] = {"initiated_id": task.event_id}
        if failed:
            args["cause"] = failed_cause
        await self.bus.post(
            Command(
                kind=failed_kind if failed else ok_kind,
                domain_id=st.domain_id,
                workflow_id=st.workflow_id,
                run_id=st.run_id,
                args=args,
            )
        )


def _execution(info: ExternalRequestInfo) -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=info.workflow_id, run_id=info.run_id)


def _target_command(
    kind: CommandKind, info: ExternalRequestInfo, domain_id: str, request: Any
) -> Command:
    return Command(
        kind=kind,
        domain_id=domain_id,
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        request=request.SerializeToString(),
    )


def _is_child(st: MutableState, workflow_id: str, run_id: str) -> bool:
    return any(
        c.workflow_id == workflow_id and (not run_id or c.run_id == run_id)
        for c in st.children.values()
    )
