"""Queries: the legacy query-task path (the Python client's) and consistent queries.

A query is never stored: it is sync-offered to a decision poller of the run's task list,
which answers with RespondQueryTaskCompleted; the waiting QueryWorkflow call gets the answer
(through the command bus's reply path when the answer reached another frontend process).
A STRONG (consistent) query first waits until no decision is pending or in flight, so the
answer reflects every event recorded before the query arrived.
"""

from __future__ import annotations

import asyncio

import msgspec
from cadence.api.v1 import (
    common_pb2,
    query_pb2,
    workflow_pb2,
)
from cadence.api.v1 import (
    service_workflow_pb2 as pb,
)

from engine.errors import QueryFailedError, quote
from engine.frontend.context import FrontendContext

CLOSE_COMPLETED = workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_COMPLETED


class QueryTask(msgspec.Struct, array_like=True):
    query_id: str
    domain_id: str
    workflow_id: str
    run_id: str
    query: bytes  # serialized WorkflowQuery


QUERY_ENC = msgspec.msgpack.Encoder()
QUERY_DEC = msgspec.msgpack.Decoder(QueryTask)


async def run_query(
    fe: FrontendContext, domain_id: str, request: pb.QueryWorkflowRequest, deadline_s: float
) -> pb.QueryWorkflowResponse:
    wf = request.workflow_execution.workflow_id
    st = await fe.load_run(domain_id, wf, request.workflow_execution.run_id)
    if not st.is_open:
        rc = request.query_reject_condition
        if rc == query_pb2.QUERY_REJECT_CONDITION_NOT_OPEN or (
            rc == query_pb2.QUERY_REJECT_CONDITION_NOT_COMPLETED_CLEANLY
            and st.close_status != CLOSE_COMPLETED
        ):
            return pb.QueryWorkflowResponse(
                query_rejected=query_pb2.QueryRejected(close_status=st.close_status)  # type: ignore[arg-type]
            )
    loop = asyncio.get_running_loop()
    until = loop.time() + max(0.5, deadline_s - 1.0)
    strong = request.query_consistency_level == query_pb2.QUERY_CONSISTENCY_LEVEL_STRONG
    while st.is_open and (st.completed_decisions == 0 or (strong and st.decision is not None)):
        if loop.time() >= until:
            if st.completed_decisions == 0:
                raise QueryFailedError(
                    "workflow must handle at least one decision task before it can be queried"
                )
            raise QueryFailedError("timed out waiting for the pending decision to finish")
        await fe.watcher.wait((domain_id, wf, st.run_id), min(0.5, until - loop.time()))
        st = await fe.load_run(domain_id, wf, st.run_id)
    # The id names this node: the worker's answer may reach any frontend, which forwards it
    # here over the command bus's reply path.
    query_id = fe.bus.new_key()
    fut = fe.bus.expect(query_id)
    try:
        task = QueryTask(query_id, domain_id, wf, st.run_id, request.query.SerializeToString())
        offered = await fe.matcher.offer_query(
            domain_id, st.task_list, QUERY_ENC.encode(task), max(0.1, until - loop.time())
        )
        if not offered:
            raise QueryFailedError(
                f"no worker is polling task list {quote(repr(st.task_list))} to answer the query"
            )
        try:
            reply = await asyncio.wait_for(fut, max(0.1, until - loop.time()))
        except TimeoutError:
            raise QueryFailedError("query timed out waiting for the worker's answer") from None
    finally:
        fe.bus.forget(query_id)
    result = query_pb2.WorkflowQueryResult.FromString(reply.payload)
    if result.result_type == query_pb2.QUERY_RESULT_TYPE_FAILED:
        raise QueryFailedError(result.error_message or "query failed")
    return pb.QueryWorkflowResponse(
        query_result=result.answer if result.HasField("answer") else common_pb2.Payload()
    )
