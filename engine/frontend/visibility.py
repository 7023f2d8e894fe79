"""VisibilityAPI: list/scan/count workflow executions, basic filters and the query language."""

from __future__ import annotations

import json

import grpc
from cadence.api.v1 import (
    common_pb2,
    service_visibility_pb2_grpc,
    visibility_pb2,
    workflow_pb2,
)
from cadence.api.v1 import (
    service_visibility_pb2 as pb,
)

from engine.errors import BadRequestError
from engine.execution.protos import ts, ts_ns
from engine.frontend import validation as v
from engine.frontend.context import FrontendContext
from engine.frontend.errors import rpc
from engine.persistence.protocols import VisibilityRecord
from engine.visibility import query as vq

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def _info(r: VisibilityRecord) -> workflow_pb2.WorkflowExecutionInfo:
    info = workflow_pb2.WorkflowExecutionInfo(
        workflow_execution=common_pb2.WorkflowExecution(workflow_id=r.workflow_id, run_id=r.run_id),
        type=common_pb2.WorkflowType(name=r.workflow_type),
        start_time=ts(r.start_time_ns),
        execution_time=ts(r.execution_time_ns),
        history_length=r.history_length,
        task_list=r.task_list,
        is_cron=r.is_cron,
        memo=common_pb2.Memo.FromString(r.memo) if r.memo else None,
    )
    if r.search_attributes:
        info.search_attributes.CopyFrom(
            common_pb2.SearchAttributes(
                indexed_fields={
                    k: common_pb2.Payload(data=json.dumps(val).encode())
                    for k, val in r.search_attributes.items()
                }
            )
        )
    if r.close_time_ns is not None:
        info.close_time.CopyFrom(ts(r.close_time_ns))
        info.close_status = r.close_status  # type: ignore[assignment]
    if r.parent:
        info.parent_execution_info.CopyFrom(workflow_pb2.ParentExecutionInfo.FromString(r.parent))
    return info


def _page_size(n: int) -> int:
    if n < 0:
        raise BadRequestError("PageSize must not be negative.")
    return min(n or DEFAULT_PAGE, MAX_PAGE)


class VisibilityHandler(service_visibility_pb2_grpc.VisibilityAPIServicer):
    def __init__(self, fe: FrontendContext) -> None:
        self.fe = fe

    async def _list(
        self, domain_name: str, query: vq.Query, page_size: int, token: bytes
    ) -> tuple[list[workflow_pb2.WorkflowExecutionInfo], bytes]:
        domain = await self.fe.domains.resolve(domain_name)
        records, next_token = await self.fe.visibility.query_visibility(
            domain.id, query, _page_size(page_size), token
        )
        return [_info(r) for r in records], next_token

    @staticmethod
    def _range(
        request: pb.ListOpenWorkflowExecutionsRequest | pb.ListClosedWorkflowExecutionsRequest,
    ) -> tuple[int, int]:
        if not request.HasField("start_time_filter"):
            raise BadRequestError("StartTimeFilter is required")
        f = request.start_time_filter
        earliest = ts_ns(f.earliest_time) if f.HasField("earliest_time") else 0
        latest = ts_ns(f.latest_time) if f.HasField("latest_time") else (1 << 62)
        if earliest > latest:
            raise BadRequestError("StartTimeFilter.EarliestTime is later than LatestTime")
        return earliest, latest

    @rpc
    async def ListOpenWorkflowExecutions(
        self, request: pb.ListOpenWorkflowExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListOpenWorkflowExecutionsResponse:
        v.validate_list_open_request(request)
        earliest, latest = self._range(request)
        which = request.WhichOneof("filters")
        query = vq.open_filter(
            earliest,
            latest,
            workflow_id=request.execution_filter.workflow_id
            if which == "execution_filter"
            else None,
            workflow_type=request.type_filter.name if which == "type_filter" else None,
        )
        infos, token = await self._list(
            request.domain, query, request.page_size, request.next_page_token
        )
        return pb.ListOpenWorkflowExecutionsResponse(executions=infos, next_page_token=token)

    @rpc
    async def ListClosedWorkflowExecutions(
        self, request: pb.ListClosedWorkflowExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListClosedWorkflowExecutionsResponse:
        v.validate_list_closed_request(request)
        earliest, latest = self._range(request)
        which = request.WhichOneof("filters")
        query = vq.closed_filter(
            earliest,
            latest,
            workflow_id=request.execution_filter.workflow_id
            if which == "execution_filter"
            else None,
            workflow_type=request.type_filter.name if which == "type_filter" else None,
            close_status=request.status_filter.status if which == "status_filter" else None,
        )
        infos, token = await self._list(
            request.domain, query, request.page_size, request.next_page_token
        )
        return pb.ListClosedWorkflowExecutionsResponse(executions=infos, next_page_token=token)

    @rpc
    async def ListWorkflowExecutions(
        self, request: pb.ListWorkflowExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListWorkflowExecutionsResponse:
        v.validate_list_request(request)
        query = vq.parse_query(request.query)
        infos, token = await self._list(
            request.domain, query, request.page_size, request.next_page_token
        )
        return pb.ListWorkflowExecutionsResponse(executions=infos, next_page_token=token)

    @rpc
    async def ScanWorkflowExecutions(
        self, request: pb.ScanWorkflowExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScanWorkflowExecutionsResponse:
        v.validate_list_request(request)
        query = vq.parse_query(request.query)
        infos, token = await self._list(
            request.domain, query, request.page_size, request.next_page_token
        )
        return pb.ScanWorkflowExecutionsResponse(executions=infos, next_page_token=token)

    @rpc
    async def CountWorkflowExecutions(
        self, request: pb.CountWorkflowExecutionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CountWorkflowExecutionsResponse:
        v.validate_count_request(request)
        query = vq.parse_query(request.query)
        domain = await self.fe.domains.resolve(request.domain)
        count = await self.fe.visibility.count_visibility(domain.id, query)
        return pb.CountWorkflowExecutionsResponse(count=count)

    @rpc
    async def GetSearchAttributes(
        self, request: pb.GetSearchAttributesRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSearchAttributesResponse:
        types = {
            "STRING": visibility_pb2.INDEXED_VALUE_TYPE_STRING,
            "KEYWORD": visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD,
            "INT": visibility_pb2.INDEXED_VALUE_TYPE_INT,
            "DOUBLE": visibility_pb2.INDEXED_VALUE_TYPE_DOUBLE,
            "BOOL": visibility_pb2.INDEXED_VALUE_TYPE_BOOL,
            "DATETIME": visibility_pb2.INDEXED_VALUE_TYPE_DATETIME,
        }
        return pb.GetSearchAttributesResponse(
            keys={k: types[t] for k, t in vq.SEARCH_ATTRIBUTE_TYPES.items() if t in types}
        )
