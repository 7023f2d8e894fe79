"""WorkflowAPI: start, signal, cancel, terminate, history, describe, query, task lists.

Writes become commands on the run's shard (through the CommandBus); reads go to the store,
which the shard writes before it replies.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import grpc
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    service_workflow_pb2_grpc,
    tasklist_pb2,
)
from cadence.api.v1 import (
    service_workflow_pb2 as pb,
)

from engine.execution.protos import ts
from engine.frontend import validation as v
from engine.frontend.context import FrontendContext
from engine.frontend.describe import describe_response
from engine.frontend.errors import rpc
from engine.frontend.queries import run_query
from engine.frontend.tokens import PageToken, decode_page_token, encode_page_token
from engine.matching.protocols import TaskType
from engine.model.commands import Command, CommandKind
from engine.queues.channel import RunChange

DEFAULT_PAGE = 1000
LONG_POLL_MAX_S = 20.0


def _closed(change: RunChange) -> bool:
    return not change.is_open


def _grown_past(first_event_id: int, change: RunChange) -> bool:
    return change.next_event_id > first_event_id or not change.is_open


def deadline_left(context: grpc.aio.ServicerContext, default: float = 60.0) -> float:
    left = context.time_remaining()
    return default if left is None else float(left)


class WorkflowHandler(service_workflow_pb2_grpc.WorkflowAPIServicer):
    def __init__(self, fe: FrontendContext) -> None:
        self.fe = fe

    # -- writes ----------------------------------------------------------------------------

    @rpc
    async def StartWorkflowExecution(
        self, request: pb.StartWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartWorkflowExecutionResponse:
        v.validate_start_request(request, self.fe.allowed_search_attributes)
        domain = await self.fe.domains.resolve(request.domain, for_start=True)
        values = await self.fe.bus.call(
            Command(
                kind=CommandKind.START,
                domain_id=domain.id,
                workflow_id=request.workflow_id,
                request=request.SerializeToString(),
            )
        )
        return pb.StartWorkflowExecutionResponse(run_id=values["run_id"])

    @rpc
    async def SignalWithStartWorkflowExecution(
        self, request: pb.SignalWithStartWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalWithStartWorkflowExecutionResponse:
        v.validate_signal_with_start_request(request, self.fe.allowed_search_attributes)
        domain = await self.fe.domains.resolve(request.start_request.domain, for_start=True)
        values = await self.fe.bus.call(
            Command(
                kind=CommandKind.SIGNAL_WITH_START,
                domain_id=domain.id,
                workflow_id=request.start_request.workflow_id,
                request=request.SerializeToString(),
            )
        )
        return pb.SignalWithStartWorkflowExecutionResponse(run_id=values["run_id"])

    @rpc
    async def SignalWorkflowExecution(
        self, request: pb.SignalWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.SignalWorkflowExecutionResponse:
        v.validate_signal_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        await self._call(CommandKind.SIGNAL, domain.id, request.workflow_execution, request)
        return pb.SignalWorkflowExecutionResponse()

    @rpc
    async def RequestCancelWorkflowExecution(
        self, request: pb.RequestCancelWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RequestCancelWorkflowExecutionResponse:
        v.validate_request_cancel_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        await self._call(CommandKind.REQUEST_CANCEL, domain.id, request.workflow_execution, request)
        return pb.RequestCancelWorkflowExecutionResponse()

    @rpc
    async def TerminateWorkflowExecution(
        self, request: pb.TerminateWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TerminateWorkflowExecutionResponse:
        v.validate_terminate_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        await self._call(CommandKind.TERMINATE, domain.id, request.workflow_execution, request)
        return pb.TerminateWorkflowExecutionResponse()

    async def _call(
        self, kind: CommandKind, domain_id: str, execution: common_pb2.WorkflowExecution, req: Any
    ) -> dict[str, Any]:
        return await self.fe.bus.call(
            Command(
                kind=kind,
                domain_id=domain_id,
                workflow_id=execution.workflow_id,
                run_id=execution.run_id,
                request=req.SerializeToString(),
            )
        )

    # -- history ---------------------------------------------------------------------------------

    @rpc
    async def GetWorkflowExecutionHistory(
        self, request: pb.GetWorkflowExecutionHistoryRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetWorkflowExecutionHistoryResponse:
        v.validate_get_history_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        wf = request.workflow_execution.workflow_id
        token = decode_page_token(request.next_page_token) if request.next_page_token else None
        run_id = token.run_id if token else request.workflow_execution.run_id
        st = await self.fe.load_run(domain.id, wf, run_id)
        run_id = st.run_id
        key = (domain.id, wf, run_id)
        budget = max(0.0, deadline_left(context) - 1.0)
        loop = asyncio.get_running_loop()
        until = loop.time() + budget
        close_only = request.history_event_filter_type == history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT
        if close_only:
            # The result wait of clients: block until the run closes, within the deadline.
            while st.is_open and request.wait_for_new_event and loop.time() < until:
                await self.fe.watcher.wait(key, min(1.0, until - loop.time()), _closed)
                st = await self.fe.load_run(domain.id, wf, run_id)
            if st.is_open:
                return pb.GetWorkflowExecutionHistoryResponse(
                    history=history_pb2.History(),
                    next_page_token=encode_page_token(PageToken(run_id, st.next_event_id)),
                )
            return pb.GetWorkflowExecutionHistoryResponse(
                history=history_pb2.History(
                    events=[history_pb2.HistoryEvent.FromString(st.close_event)]
                )
            )
        first = token.next_event_id if token else 1
        if request.wait_for_new_event:
            until = loop.time() + min(budget, LONG_POLL_MAX_S)
            while st.is_open and first >= st.next_event_id and loop.time() < until:
                await self.fe.watcher.wait(
                    key, min(1.0, until - loop.time()), partial(_grown_past, first)
                )
                st = await self.fe.load_run(domain.id, wf, run_id)
        page_size = request.page_size or DEFAULT_PAGE
        events = await self.fe.read_events(
            domain.id, wf, run_id, first, page_size, st.next_event_id
        )
        next_first = events[-1].event_id + 1 if events else first
        transient = token.transient if token else b""
        if next_first < st.next_event_id:
            next_token = encode_page_token(PageToken(run_id, next_first, transient))
        elif st.is_open and request.wait_for_new_event:
            next_token = encode_page_token(PageToken(run_id, next_first))
        else:
            next_token = b""
        history = history_pb2.History(events=events)
        if transient and next_first >= st.next_event_id:
            history.events.extend(history_pb2.History.FromString(transient).events)
            next_token = b""
        return pb.GetWorkflowExecutionHistoryResponse(history=history, next_page_token=next_token)

    # -- describe / query ----------------------------------------------------------------------

    @rpc
    async def DescribeWorkflowExecution(
        self, request: pb.DescribeWorkflowExecutionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeWorkflowExecutionResponse:
        v.validate_describe_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        st = await self.fe.load_run(
            domain.id, request.workflow_execution.workflow_id, request.workflow_execution.run_id
        )
        return describe_response(st)

    @rpc
    async def QueryWorkflow(
        self, request: pb.QueryWorkflowRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryWorkflowResponse:
        v.validate_query_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        return await run_query(self.fe, domain.id, request, deadline_left(context))

    # -- task lists / cluster -------------------------------------------------------------------

    @rpc
    async def DescribeTaskList(
        self, request: pb.DescribeTaskListRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeTaskListResponse:
        v.validate_describe_task_list_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        kind = (
            TaskType.ACTIVITY
            if request.task_list_type == tasklist_pb2.TASK_LIST_TYPE_ACTIVITY
            else TaskType.DECISION
        )
        pollers = await self.fe.matcher.pollers(domain.id, request.task_list.name, kind)
        resp = pb.DescribeTaskListResponse(
            pollers=[
                tasklist_pb2.PollerInfo(identity=p.identity, last_access_time=ts(p.last_access_ns))
                for p in pollers
            ],
            task_list=request.task_list,
        )
        if request.include_task_list_status:
            backlog = await self.fe.matcher.backlog(domain.id, request.task_list.name, kind)
            resp.task_list_status.CopyFrom(tasklist_pb2.TaskListStatus(backlog_count_hint=backlog))
        return resp

    @rpc
    async def GetClusterInfo(
        self, request: pb.GetClusterInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetClusterInfoResponse:
        return pb.GetClusterInfoResponse(
            supported_client_versions=common_pb2.SupportedClientVersions(
                go_sdk="1.7.0", java_sdk="1.5.0"
            )
        )
