"""WorkerAPI: long polls for decision/activity tasks and the workers' responses.

A poll takes a task from matching, asks the run's shard to record it as started (the shard
rejects stale or duplicate tasks, and the poll then keeps waiting), and builds the response
from the shard's reply and the stored history. An empty poll is a successful empty response.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import structlog
from cadence.api.v1 import (
    common_pb2,
    history_pb2,
    query_pb2,
    service_worker_pb2_grpc,
    tasklist_pb2,
)
from cadence.api.v1 import (
    service_worker_pb2 as pb,
)
from google.protobuf import wrappers_pb2

from engine.errors import BadRequestError, EntityNotExistsError, can_pass
from engine.execution.mutation import LOCAL_VERSION
from engine.execution.protos import dur, ts
from engine.frontend import validation as v
from engine.frontend.context import FrontendContext
from engine.frontend.errors import rpc
from engine.frontend.queries import QUERY_DEC
from engine.frontend.tokens import (
    PageToken,
    TaskToken,
    decode_task_token,
    encode_page_token,
    encode_task_token,
)
from engine.frontend.workflow import deadline_left
from engine.matching.protocols import TaskType
from engine.model.commands import Command, CommandKind, Reply
from engine.model.tasks import DispatchTask, decode_dispatch

log = structlog.get_logger(__name__)

FIRST_PAGE = 1000


def _may_pass(exc: BaseException) -> bool:
    """Whether recording a start failed for a reason that can pass (the poll cancelled, or
    `can_pass`): then the task goes back. A deterministic refusal must not make a task circle
    between matching and the shard for ever."""
    return isinstance(exc, asyncio.CancelledError) or can_pass(exc)


MAX_POLL_S = 60.0

# The shard command that records a polled task of each type as started.
_RECORD_STARTED = {
    TaskType.DECISION: CommandKind.RECORD_DECISION_STARTED,
    TaskType.ACTIVITY: CommandKind.RECORD_ACTIVITY_STARTED,
}

# Failure reasons Cadence records when a worker's payload is over the blob limit
# (common/constants.go).
COMPLETE_RESULT_EXCEEDS_LIMIT = "COMPLETE_RESULT_EXCEEDS_LIMIT"
FAILURE_DETAILS_EXCEEDS_LIMIT = "FAILURE_DETAILS_EXCEEDS_LIMIT"
CANCEL_DETAILS_EXCEEDS_LIMIT = "CANCEL_DETAILS_EXCEEDS_LIMIT"
HEARTBEAT_EXCEEDS_LIMIT = "HEARTBEAT_EXCEEDS_LIMIT"


class WorkerHandler(service_worker_pb2_grpc.WorkerAPIServicer):
    def __init__(self, fe: FrontendContext) -> None:
        self.fe = fe

    def _answer_by(self, context: grpc.aio.ServicerContext) -> int:
        """Clock time after which recording a start is refused: the poller will have given
        up by then, and a task started for nobody would wait for its timeout (the poll hands
        the task back to matching instead)."""
        return self.fe.clock.now_ns() + int(deadline_left(context) * 1_000_000_000)

    async def _record_started(
        self,
        task_type: TaskType,
        task: DispatchTask,
        payload: bytes,
        request: pb.PollForDecisionTaskRequest | pb.PollForActivityTaskRequest,
        context: grpc.aio.ServicerContext,
    ) -> dict[str, Any] | None:
        """Ask the run's shard to record a polled task as started; None when the task is
        stale or a duplicate. A failure that can pass hands the task (`payload`, as matching
        gave it) back to matching first."""
        try:
            return await self.fe.bus.call(
                Command(
                    kind=_RECORD_STARTED[task_type],
                    domain_id=task.domain_id,
                    workflow_id=task.workflow_id,
                    run_id=task.run_id,
                    args={
                        "schedule_id": task.schedule_id,
                        "attempt": task.attempt,
                        "request_id": str(uuid.uuid4()),
                        "identity": request.identity,
                        "expires_ns": self._answer_by(context),
                    },
                ),
                timeout=max(0.1, deadline_left(context)),
            )
        except EntityNotExistsError:
            return None
        except BaseException as exc:
            if _may_pass(exc):
                await self._give_back(task.domain_id, request.task_list.name, task_type, payload)
            raise

    @staticmethod
    def _poll_until(context: grpc.aio.ServicerContext) -> float:
        """Loop time at which a long poll returns empty: min(1 min, deadline - 1 s)."""
        left = deadline_left(context)
        if left < 2.0:
            raise BadRequestError("Context timeout is too short.")
        return asyncio.get_running_loop().time() + min(MAX_POLL_S, left - 1.0)

    async def _give_back(
        self, domain_id: str, task_list: str, task_type: TaskType, payload: bytes
    ) -> None:
        """Return a polled task to matching when recording it as started failed.

        `poll` removed it from the task list; nothing else would dispatch it again while the
        run's shard stays where it is. If the start was recorded after all (the reply was
        lost), the next poller's RecordStarted is refused as a duplicate: harmless.
        """
        add = self.fe.matcher.add_task(domain_id, task_list, task_type, payload)
        try:
            # Shielded: a poll cancelled by its caller's deadline gives the task back too.
            await asyncio.shield(add)
        except Exception:  # matching is down too: left to the shard refresh
            log.warning("poll_give_back_failed", task_list=task_list, exc_info=True)

    # -- decision tasks ----------------------------------------------------------------------

    @rpc
    async def PollForDecisionTask(
        self, request: pb.PollForDecisionTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.PollForDecisionTaskResponse:
        v.validate_poll_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        until = self._poll_until(context)
        loop = asyncio.get_running_loop()
        while (left := until - loop.time()) > 0:
            polled = await self.fe.matcher.poll(
                domain.id, request.task_list.name, TaskType.DECISION, left, request.identity
            )
            if polled is None:
                break
            if polled.is_query:
                resp = await self._query_task(polled.payload)
                if resp is not None:
                    return resp
                continue
            task = decode_dispatch(polled.payload)
            values = await self._record_started(
                TaskType.DECISION, task, polled.payload, request, context
            )
            if values is None:
                continue  # stale or duplicate task: keep polling
            return await self._decision_response(task.domain_id, task.workflow_id, values)
        return pb.PollForDecisionTaskResponse()

    async def _decision_response(
        self, domain_id: str, workflow_id: str, values: dict[str, Any]
    ) -> pb.PollForDecisionTaskResponse:
        run_id = values["run_id"]
        persisted_next = values["next_event_id"]
        events = await self.fe.read_events(
            domain_id, workflow_id, run_id, 1, FIRST_PAGE, persisted_next
        )
        transient = b""
        if values["attempt"] > 0:
            transient = _transient_events(values).SerializeToString()
        next_first = events[-1].event_id + 1 if events else 1
        history = history_pb2.History(events=events)
        token = b""
        if next_first < persisted_next:
            token = encode_page_token(PageToken(run_id, next_first, transient))
        elif transient:
            history.events.extend(history_pb2.History.FromString(transient).events)
        prev = values["previous_started_event_id"]
        return pb.PollForDecisionTaskResponse(
            task_token=encode_task_token(
                TaskToken(domain_id, workflow_id, run_id, values["schedule_id"], values["attempt"])
            ),
            workflow_execution=common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
            workflow_type=common_pb2.WorkflowType(name=values["workflow_type"]),
            previous_started_event_id=wrappers_pb2.Int64Value(value=prev),
            started_event_id=values["started_id"],
            attempt=values["attempt"],
            history=history,
            next_page_token=token,
            workflow_execution_task_list=tasklist_pb2.TaskList(name=values["task_list"]),
            scheduled_time=ts(values["scheduled_ns"]),
            started_time=ts(values["started_ns"]),
            next_event_id=values["started_id"] + 1,
        )

    async def _query_task(self, payload: bytes) -> pb.PollForDecisionTaskResponse | None:
        q = QUERY_DEC.decode(payload)
        bus = self.fe.bus
        if bus.node_of(q.query_id) == bus.node_id and not bus.waiting(q.query_id):
            return None  # the caller gave up already
        try:
            st = await self.fe.load_run(q.domain_id, q.workflow_id, q.run_id)
        except EntityNotExistsError:
            return None
        events = await self.fe.read_events(
            q.domain_id, q.workflow_id, q.run_id, 1, 1 << 30, st.next_event_id
        )
        return pb.PollForDecisionTaskResponse(
            task_token=encode_task_token(
                TaskToken(q.domain_id, q.workflow_id, q.run_id, 0, 0, query_id=q.query_id)
            ),
            workflow_execution=common_pb2.WorkflowExecution(
                workflow_id=q.workflow_id, run_id=q.run_id
            ),
            workflow_type=common_pb2.WorkflowType(name=st.workflow_type),
            previous_started_event_id=wrappers_pb2.Int64Value(value=st.last_processed_event),
            history=history_pb2.History(events=events),
            query=query_pb2.WorkflowQuery.FromString(q.query),
            workflow_execution_task_list=tasklist_pb2.TaskList(name=st.task_list),
            next_event_id=st.next_event_id,
        )

    @rpc
    async def RespondDecisionTaskCompleted(
        self, request: pb.RespondDecisionTaskCompletedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondDecisionTaskCompletedResponse:
        v.validate_decision_completed_request(request)
        token = decode_task_token(request.task_token)
        await self._token_call(CommandKind.DECISION_COMPLETED, token, request)
        return pb.RespondDecisionTaskCompletedResponse()

    @rpc
    async def RespondDecisionTaskFailed(
        self, request: pb.RespondDecisionTaskFailedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondDecisionTaskFailedResponse:
        v.validate_decision_failed_request(request)
        token = decode_task_token(request.task_token)
        if len(request.details.data) > v.BLOB_SIZE_LIMIT:
            # Cadence truncates these details: no client code reads them.
            request.details.data = request.details.data[: v.BLOB_SIZE_LIMIT]
        await self._token_call(CommandKind.DECISION_FAILED, token, request)
        return pb.RespondDecisionTaskFailedResponse()

    @rpc
    async def RespondQueryTaskCompleted(
        self, request: pb.RespondQueryTaskCompletedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondQueryTaskCompletedResponse:
        v.validate_query_completed_request(request)
        token = decode_task_token(request.task_token)
        if not token.query_id:
            # A decision or activity token: Cadence checks the query token's task id.
            raise BadRequestError("Invalid TaskToken.")
        bus = self.fe.bus
        caller = bus.node_of(token.query_id)
        # A query of another frontend process is forwarded there; whether it still waits is
        # known only there (a late answer is dropped).
        if not caller or (caller == bus.node_id and not bus.waiting(token.query_id)):
            raise EntityNotExistsError("query task not found, or already expired")
        result = request.result
        if len(result.answer.data) > v.BLOB_SIZE_LIMIT:
            # Cadence answers the query with a failure rather than an oversized result.
            result = query_pb2.WorkflowQueryResult(
                result_type=query_pb2.QUERY_RESULT_TYPE_FAILED,
                error_message="Query result exceeds size limit.",
            )
        # Answered here, or forwarded to the frontend process whose caller waits.
        await bus.send_reply(caller, Reply(key=token.query_id, payload=result.SerializeToString()))
        return pb.RespondQueryTaskCompletedResponse()

    @rpc
    async def ResetStickyTaskList(
        self, request: pb.ResetStickyTaskListRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResetStickyTaskListResponse:
        # Cadenza has no sticky task lists: every decision goes to the normal list. The
        # request is still checked, and the run must exist, as in Cadence.
        v.validate_execution_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        st = await self.fe.load_run(
            domain.id, request.workflow_execution.workflow_id, request.workflow_execution.run_id
        )
        if not st.is_open:
            raise EntityNotExistsError("Workflow execution already completed.")
        return pb.ResetStickyTaskListResponse()

    async def _token_call(
        self, kind: CommandKind, token: TaskToken, request: Any
    ) -> dict[str, Any]:
        return await self.fe.bus.call(
            Command(
                kind=kind,
                domain_id=token.domain_id,
                workflow_id=token.workflow_id,
                run_id=token.run_id,
                request=request.SerializeToString(),
                args={"schedule_id": token.schedule_id, "attempt": token.attempt},
            )
        )

    async def _by_id_call(self, kind: CommandKind, request: Any) -> dict[str, Any]:
        domain = await self.fe.domains.resolve(request.domain)
        return await self.fe.bus.call(
            Command(
                kind=kind,
                domain_id=domain.id,
                workflow_id=request.workflow_execution.workflow_id,
                run_id=request.workflow_execution.run_id,
                request=request.SerializeToString(),
                args={"activity_id": request.activity_id},
            )
        )

    async def _activity_call(self, kind: CommandKind, request: Any) -> dict[str, Any]:
        """An activity response or heartbeat, by task token or by ID.

        A payload over the blob limit does not fail the call: as in Cadence, the activity
        fails instead (see `_over_limit_failure`), and a heartbeat then answers
        cancel_requested so the worker stops.
        """
        failed = _over_limit_failure(kind, request)
        if failed is not None:
            kind, request = CommandKind.ACTIVITY_FAILED, failed
        if "task_token" in request.DESCRIPTOR.fields_by_name:
            values = await self._token_call(kind, decode_task_token(request.task_token), request)
        else:
            values = await self._by_id_call(kind, request)
        return {"cancel_requested": True} if failed is not None else values

    # -- activity tasks -----------------------------------------------------------------------

    @rpc
    async def PollForActivityTask(
        self, request: pb.PollForActivityTaskRequest, context: grpc.aio.ServicerContext
    ) -> pb.PollForActivityTaskResponse:
        v.validate_poll_request(request)
        domain = await self.fe.domains.resolve(request.domain)
        until = self._poll_until(context)
        loop = asyncio.get_running_loop()
        while (left := until - loop.time()) > 0:
            polled = await self.fe.matcher.poll(
                domain.id, request.task_list.name, TaskType.ACTIVITY, left, request.identity
            )
            if polled is None:
                break
            task = decode_dispatch(polled.payload)
            values = await self._record_started(
                TaskType.ACTIVITY, task, polled.payload, request, context
            )
            if values is None:
                continue  # stale or duplicate task: keep polling
            return _activity_response(task.domain_id, task.workflow_id, values)
        return pb.PollForActivityTaskResponse()

    @rpc
    async def RespondActivityTaskCompleted(
        self, request: pb.RespondActivityTaskCompletedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskCompletedResponse:
        v.validate_activity_response(request)
        await self._activity_call(CommandKind.ACTIVITY_COMPLETED, request)
        return pb.RespondActivityTaskCompletedResponse()

    @rpc
    async def RespondActivityTaskFailed(
        self, request: pb.RespondActivityTaskFailedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskFailedResponse:
        v.validate_activity_response(request)
        await self._activity_call(CommandKind.ACTIVITY_FAILED, request)
        return pb.RespondActivityTaskFailedResponse()

    @rpc
    async def RespondActivityTaskCanceled(
        self, request: pb.RespondActivityTaskCanceledRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskCanceledResponse:
        v.validate_activity_response(request)
        await self._activity_call(CommandKind.ACTIVITY_CANCELED, request)
        return pb.RespondActivityTaskCanceledResponse()

    @rpc
    async def RecordActivityTaskHeartbeat(
        self, request: pb.RecordActivityTaskHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordActivityTaskHeartbeatResponse:
        v.validate_activity_response(request)
        values = await self._activity_call(CommandKind.ACTIVITY_HEARTBEAT, request)
        return pb.RecordActivityTaskHeartbeatResponse(cancel_requested=values["cancel_requested"])

    @rpc
    async def RespondActivityTaskCompletedByID(
        self, request: pb.RespondActivityTaskCompletedByIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskCompletedByIDResponse:
        v.validate_activity_by_id(request)
        await self._activity_call(CommandKind.ACTIVITY_COMPLETED, request)
        return pb.RespondActivityTaskCompletedByIDResponse()

    @rpc
    async def RespondActivityTaskFailedByID(
        self, request: pb.RespondActivityTaskFailedByIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskFailedByIDResponse:
        v.validate_activity_by_id(request)
        await self._activity_call(CommandKind.ACTIVITY_FAILED, request)
        return pb.RespondActivityTaskFailedByIDResponse()

    @rpc
    async def RespondActivityTaskCanceledByID(
        self, request: pb.RespondActivityTaskCanceledByIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.RespondActivityTaskCanceledByIDResponse:
        v.validate_activity_by_id(request)
        await self._activity_call(CommandKind.ACTIVITY_CANCELED, request)
        return pb.RespondActivityTaskCanceledByIDResponse()

    @rpc
    async def RecordActivityTaskHeartbeatByID(
        self, request: pb.RecordActivityTaskHeartbeatByIDRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecordActivityTaskHeartbeatByIDResponse:
        v.validate_activity_by_id(request)
        values = await self._activity_call(CommandKind.ACTIVITY_HEARTBEAT, request)
        return pb.RecordActivityTaskHeartbeatByIDResponse(
            cancel_requested=values["cancel_requested"]
        )


def _over_limit_failure(kind: CommandKind, request: Any) -> Any | None:
    """The RespondActivityTaskFailed(ByID) request Cadence's frontend sends in place of
    `request` when its payload is over the blob limit (reason says which, payload cut to
    the limit); None when the payload fits."""
    if kind == CommandKind.ACTIVITY_COMPLETED:
        data, reason = request.result.data, COMPLETE_RESULT_EXCEEDS_LIMIT
    elif kind == CommandKind.ACTIVITY_CANCELED:
        data, reason = request.details.data, CANCEL_DETAILS_EXCEEDS_LIMIT
    elif kind == CommandKind.ACTIVITY_HEARTBEAT:
        data, reason = request.details.data, HEARTBEAT_EXCEEDS_LIMIT
    else:
        data, reason = request.failure.details, FAILURE_DETAILS_EXCEEDS_LIMIT
    if len(data) <= v.BLOB_SIZE_LIMIT:
        return None
    failure = common_pb2.Failure(reason=reason, details=data[: v.BLOB_SIZE_LIMIT])
    failed: Any
    if "task_token" in request.DESCRIPTOR.fields_by_name:
        failed = pb.RespondActivityTaskFailedRequest(task_token=request.task_token)
    else:
        failed = pb.RespondActivityTaskFailedByIDRequest(
            domain=request.domain,
            workflow_execution=request.workflow_execution,
            activity_id=request.activity_id,
        )
    failed.failure.CopyFrom(failure)
    failed.identity = request.identity
    if kind == CommandKind.ACTIVITY_FAILED and request.HasField("heartbeat_details"):
        failed.heartbeat_details.CopyFrom(request.heartbeat_details)
    return failed


def _transient_events(values: dict[str, Any]) -> history_pb2.History:
    """The synthetic Scheduled/Started pair of a transient decision (not persisted)."""
    scheduled = history_pb2.HistoryEvent(
        event_id=values["schedule_id"],
        event_time=ts(values["scheduled_ns"]),
        version=LOCAL_VERSION,
        decision_task_scheduled_event_attributes=history_pb2.DecisionTaskScheduledEventAttributes(
            task_list=tasklist_pb2.TaskList(name=values["task_list"]),
            start_to_close_timeout=dur(values["timeout_s"]),
            attempt=values["attempt"],
        ),
    )
    started = history_pb2.HistoryEvent(
        event_id=values["started_id"],
        event_time=ts(values["started_ns"]),
        version=LOCAL_VERSION,
        decision_task_started_event_attributes=history_pb2.DecisionTaskStartedEventAttributes(
            scheduled_event_id=values["schedule_id"],
            identity=values["identity"],
            request_id=values["request_id"],
        ),
    )
    return history_pb2.History(events=[scheduled, started])


def _activity_response(
    domain_id: str, workflow_id: str, values: dict[str, Any]
) -> pb.PollForActivityTaskResponse:
    resp = pb.PollForActivityTaskResponse(
        task_token=encode_task_token(
            TaskToken(
                domain_id,
                workflow_id,
                values["run_id"],
                values["schedule_id"],
                values["attempt"],
                activity_id=values["activity_id"],
            )
        ),
        workflow_execution=common_pb2.WorkflowExecution(
            workflow_id=workflow_id, run_id=values["run_id"]
        ),
        activity_id=values["activity_id"],
        activity_type=common_pb2.ActivityType(name=values["activity_type"]),
        scheduled_time=ts(values["scheduled_ns"]),
        started_time=ts(values["started_ns"]),
        schedule_to_close_timeout=dur(values["schedule_to_close_s"]),
        start_to_close_timeout=dur(values["start_to_close_s"]),
        heartbeat_timeout=dur(values["heartbeat_s"]),
        attempt=values["attempt"],
        scheduled_time_of_this_attempt=ts(values["scheduled_this_attempt_ns"]),
        workflow_type=common_pb2.WorkflowType(name=values["workflow_type"]),
        workflow_domain=values["domain_name"],
    )
    if values["input"] is not None:
        resp.input.CopyFrom(common_pb2.Payload(data=values["input"]))
    if values["heartbeat_details"] is not None:
        resp.heartbeat_details.CopyFrom(common_pb2.Payload(data=values["heartbeat_details"]))
    if values["header"]:
        resp.header.CopyFrom(common_pb2.Header.FromString(values["header"]))
    return resp
