"""Command handlers: one per CommandKind, each applied by the shard engine inside a batch.

A handler resolves the run, applies the execution layer's rules through a RunMutation,
folds the mutation into the batch, and returns reply values (or raises a ServiceError).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    history_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    workflow_pb2,
)

from engine.errors import (
    BadRequestError,
    EntityNotExistsError,
    ServiceBusyError,
    WorkflowExecutionAlreadyStartedError,
    quote,
)
from engine.execution import activities, decision_backoff, decisions, external
from engine.execution.decisions import DecisionEnv
from engine.execution.mutation import RunMutation
from engine.execution.starts import (
    CLOSE_COMPLETED,
    StartParams,
    params_from_request,
)
from engine.history.batch import Batch, RunKey
from engine.history.engine import ShardEngine
from engine.ids import new_run_id
from engine.model.commands import Command, CommandKind
from engine.model.state import EMPTY_EVENT_ID, ActivityInfo, ParentInfo
from engine.model.tasks import TimerKind, TransferKind, decode_timer

Handler = Callable[[ShardEngine, Batch, Command], Awaitable[dict[str, Any]]]

REUSE_ALLOW_FAILED_ONLY = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY
REUSE_ALLOW = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
REUSE_REJECT = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE
REUSE_TERMINATE = workflow_pb2.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING


async def _resolve(
    engine: ShardEngine, batch: Batch, cmd: Command, run_id: str | None = None
) -> RunKey:
    run_id = cmd.run_id if run_id is None else run_id
    if not run_id:
        cur = await engine.current(batch, cmd.domain_id, cmd.workflow_id)
        if cur is None:
            raise EntityNotExistsError(f"Workflow execution not found: {quote(cmd.workflow_id)}")
        run_id = cur.run_id
    if not await engine.load(batch, cmd.domain_id, cmd.workflow_id, run_id):
        raise EntityNotExistsError(
            f"Workflow execution not found: {quote(cmd.workflow_id)}/{quote(run_id)}"
        )
    # The batch must hold the current-run pointer before the run changes: closing the run
    # updates the pointer's close status, continue-as-new moves it to the new run.
    await engine.current(batch, cmd.domain_id, cmd.workflow_id)
    return (cmd.domain_id, cmd.workflow_id, run_id)


def _mutate(
    engine: ShardEngine, batch: Batch, key: RunKey, fn: Callable[[RunMutation], Any]
) -> Any:
    m = batch.mutation(key, engine.now_ns())
    out = fn(m)
    batch.commit_mutation(key, m)
    if m.decision_backoff is not None:
        _log_backoff(engine, key, m.decision_backoff)
    return out


def _log_backoff(engine: ShardEngine, key: RunKey, b: decision_backoff.DecisionBackoff) -> None:
    """One line per failure of a backing-off decision: at most a few a minute per run, so
    an operator sees which runs are stuck and why without a line per hot-loop attempt."""
    engine.log.warning(
        "decision_backoff",
        workflow_id=key[1],
        run_id=key[2],
        attempt=b.attempt,
        failures=b.failures,
        cause=b.cause,
        backoff_s=round(b.delay_s, 3),
        next_attempt_at=datetime.fromtimestamp(b.due_ns / 1e9, UTC).isoformat(),
    )


# -- starts ----------------------------------------------------------------------------------


async def _start_run(
    engine: ShardEngine,
    batch: Batch,
    params: StartParams,
    reuse_policy: int,
    *,
    identity: str = "",
) -> str:
    """Apply the ID reuse policy and create the run; returns its run id."""
    cur = await engine.current(batch, params.domain_id, params.workflow_id)
    if cur is not None:
        if params.request_id and cur.create_request_id == params.request_id:
            return cur.run_id  # the same start retried
        policy = reuse_policy or REUSE_ALLOW_FAILED_ONLY
        if cur.close_status == 0:
            if policy != REUSE_TERMINATE:
                raise WorkflowExecutionAlreadyStartedError(
                    "Workflow execution is already running. "
                    f"WorkflowId: {quote(params.workflow_id)}, RunId: {cur.run_id}.",
                    cur.create_request_id,
                    cur.run_id,
                )
            key = await _resolve(engine, batch, _cmd_for(params), cur.run_id)
            _mutate(
                engine,
                batch,
                key,
                lambda m: external.terminate(
                    m, "TerminateIfRunning WorkflowIdReusePolicy", None, identity
                ),
            )
        elif policy == REUSE_REJECT or (
            policy == REUSE_ALLOW_FAILED_ONLY and cur.close_status == CLOSE_COMPLETED
        ):
            raise WorkflowExecutionAlreadyStartedError(
                f"Workflow execution already finished. WorkflowId: {quote(params.workflow_id)}, "
                f"RunId: {cur.run_id}.",
                cur.create_request_id,
                cur.run_id,
            )
    run_id = new_run_id()
    engine.creator(batch).create_run(params, run_id)
    return run_id


def _cmd_for(params: StartParams) -> Command:
    return Command(
        kind=CommandKind.START, domain_id=params.domain_id, workflow_id=params.workflow_id
    )


async def handle_start(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    req = service_workflow_pb2.StartWorkflowExecutionRequest.FromString(cmd.request)
    params = params_from_request(req, cmd.domain_id, req.domain, engine.now_ns())
    run_id = await _start_run(
        engine, batch, params, req.workflow_id_reuse_policy, identity=req.identity
    )
    return {"run_id": run_id}


async def handle_signal_with_start(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    req = service_workflow_pb2.SignalWithStartWorkflowExecutionRequest.FromString(cmd.request)
    start = req.start_request
    cur = await engine.current(batch, cmd.domain_id, start.workflow_id)
    signal_input = req.signal_input.data if req.HasField("signal_input") else None
    if (
        cur is not None
        and cur.close_status == 0
        and (start.workflow_id_reuse_policy != REUSE_TERMINATE)
    ):
        key = await _resolve(engine, batch, cmd, cur.run_id)
        _mutate(
            engine,
            batch,
            key,
            lambda m: external.signal(
                m, req.signal_name, signal_input, start.identity, start.request_id, req.control
            ),
        )
        return {"run_id": cur.run_id}
    params = params_from_request(start, cmd.domain_id, start.domain, engine.now_ns())
    params.signal = (req.signal_name, signal_input, start.identity, start.request_id)
    policy = start.workflow_id_reuse_policy or REUSE_ALLOW
    run_id = await _start_run(engine, batch, params, policy, identity=start.identity)
    return {"run_id": run_id}


async def handle_start_child(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    """Start a child run for a parent's transfer task (request: the initiated attributes)."""
    attrs = history_pb2.StartChildWorkflowExecutionInitiatedEventAttributes.FromString(cmd.request)
    a = cmd.args
    params = params_from_request(
        attrs, cmd.domain_id, attrs.domain, engine.now_ns(), request_id=a["request_id"]
    )
    params.parent = ParentInfo(
        domain_id=a["parent_domain_id"],
        domain_name=a["parent_domain_name"],
        workflow_id=a["parent_workflow_id"],
        run_id=a["parent_run_id"],
        initiated_id=a["initiated_id"],
    )
    run_id = await _start_run(engine, batch, params, attrs.workflow_id_reuse_policy)
    return {"run_id": run_id}


# -- requests to a running workflow ---------------------------------------------------------------


async def handle_signal(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    req = service_workflow_pb2.SignalWorkflowExecutionRequest.FromString(cmd.request)
    key = await _resolve(engine, batch, cmd)
    data = req.signal_input.data if req.HasField("signal_input") else None
    _mutate(
        engine,
        batch,
        key,
        lambda m: external.signal(
            m, req.signal_name, data, req.identity, req.request_id, req.control
        ),
    )
    return {"run_id": key[2]}


def _check_chain(engine: ShardEngine, batch: Batch, key: RunKey, first_run_id: str) -> None:
    if first_run_id and batch.runs[key].state.first_execution_run_id != first_run_id:
        raise EntityNotExistsError("Workflow execution not found for this first execution run id.")


async def handle_request_cancel(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest.FromString(cmd.request)
    key = await _resolve(engine, batch, cmd)
    _check_chain(engine, batch, key, req.first_execution_run_id)
    ext = None
    if "initiated_id" in cmd.args:
        ext = workflow_pb2.ExternalExecutionInfo(
            workflow_execution=common_pb2.WorkflowExecution(
                workflow_id=cmd.args["source_workflow_id"], run_id=cmd.args["source_run_id"]
            ),
            initiated_id=cmd.args["initiated_id"],
        )
    _mutate(
        engine,
        batch,
        key,
        lambda m: external.request_cancel(m, req.identity, req.request_id, req.cause, ext),
    )
    return {"run_id": key[2]}


async def handle_terminate(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    req = service_workflow_pb2.TerminateWorkflowExecutionRequest.FromString(cmd.request)
    key = await _resolve(engine, batch, cmd)
    _check_chain(engine, batch, key, req.first_execution_run_id)
    details = req.details.data if req.HasField("details") else None
    _mutate(engine, batch, key, lambda m: external.terminate(m, req.reason, details, req.identity))
    return {"run_id": key[2]}


# -- decisions ---------------------------------------------------------------------------------


def _decision_env(
    engine: ShardEngine, batch: Batch, missing_domains: frozenset[str] = frozenset()
) -> DecisionEnv:
    return DecisionEnv(
        runs=engine.creator(batch),
        new_run_id=new_run_id,
        allowed_search_attributes=engine.allowed_search_attributes,
        missing_domains=missing_domains,
    )


async def _missing_activity_domains(
    engine: ShardEngine, own_domain: str, decisions_: Iterable[decision_pb2.Decision]
) -> frozenset[str]:
    """Domains that activities are scheduled in, other than the run's own, which do not exist.
    Looked up only for such decisions (rare), so the common decision costs nothing."""
    named = {
        d.schedule_activity_task_decision_attributes.domain
        for d in decisions_
        if d.WhichOneof("attributes") == "schedule_activity_task_decision_attributes"
    }
    named.discard("")
    named.discard(own_domain)
    missing = [name for name in named if await engine.store.get_domain(name=name) is None]
    return frozenset(missing)


def _refuse_if_poller_gone(engine: ShardEngine, args: dict[str, Any]) -> None:
    """A start applied after its poller gave up (the shard was slow or the store down) would
    leave the task started for nobody until its timeout; refused, the task (handed back to
    matching by the poll) goes to the next poller."""
    expires = args.get("expires_ns")
    if expires is not None and engine.now_ns() > expires:
        raise ServiceBusyError("the poller gave up before the task could be recorded as started")


async def handle_record_decision_started(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    a = cmd.args
    _refuse_if_poller_gone(engine, a)
    key = await _resolve(engine, batch, cmd)
    d = _mutate(
        engine,
        batch,
        key,
        lambda m: decisions.record_started(
            m, a["schedule_id"], a["attempt"], a["request_id"], a.get("identity", "")
        ),
    )
    st = batch.runs[key].state
    return {
        "run_id": st.run_id,
        "workflow_type": st.workflow_type,
        "task_list": st.task_list,
        "schedule_id": d.schedule_id,
        "started_id": d.started_id,
        "attempt": d.attempt,
        "scheduled_ns": d.scheduled_ns,
        "started_ns": d.started_ns,
        "timeout_s": d.timeout_s,
        "identity": d.identity,
        "request_id": d.request_id,
        "next_event_id": st.next_event_id,
        "previous_started_event_id": st.last_processed_event,
    }


async def handle_decision_completed(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    req = service_worker_pb2.RespondDecisionTaskCompletedRequest.FromString(cmd.request)
    key = await _resolve(engine, batch, cmd)
    own_domain = batch.runs[key].state.domain_name
    env = _decision_env(
        engine, batch, await _missing_activity_domains(engine, own_domain, req.decisions)
    )
    _mutate(
        engine,
        batch,
        key,
        lambda m: decisions.respond_completed(
            m, env, cmd.args["schedule_id"], cmd.args["attempt"], req
        ),
    )
    return {}


async def handle_decision_failed(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    req = service_worker_pb2.RespondDecisionTaskFailedRequest.FromString(cmd.request)
    key = await _resolve(engine, batch, cmd)
    _mutate(
        engine,
        batch,
        key,
        lambda m: decisions.respond_failed(m, cmd.args["schedule_id"], cmd.args["attempt"], req),
    )
    return {}


# -- activities --------------------------------------------------------------------------------


def _activity(m: RunMutation, args: dict[str, Any]) -> ActivityInfo:
    if "activity_id" in args:
        info = m.state.activity_by_id(args["activity_id"])
        if info is None or not m.state.is_open or not info.is_started:
            raise EntityNotExistsError("Activity task not found.")
        return info
    return activities.find_activity(m, args["schedule_id"], args["attempt"])


async def handle_record_activity_started(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    a = cmd.args
    _refuse_if_poller_gone(engine, a)
    key = await _resolve(engine, batch, cmd)
    info = _mutate(
        engine,
        batch,
        key,
        lambda m: activities.record_started(
            m, a["schedule_id"], a["attempt"], a["request_id"], a.get("identity", "")
        ),
    )
    st = batch.runs[key].state
    return {
        "run_id": st.run_id,
        "workflow_type": st.workflow_type,
        "domain_name": st.domain_name,
        "activity_id": info.activity_id,
        "activity_type": info.activity_type,
        "input": info.input,
        "header": info.header,
        "scheduled_ns": info.first_scheduled_ns,
        "scheduled_this_attempt_ns": info.scheduled_ns,
        "started_ns": info.started_ns,
        "schedule_to_close_s": info.schedule_to_close_s,
        "start_to_close_s": info.start_to_close_s,
        "heartbeat_s": info.heartbeat_s,
        "attempt": info.attempt,
        "heartbeat_details": info.heartbeat_details,
        "schedule_id": info.schedule_id,
    }


async def handle_activity_completed(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    if "activity_id" in cmd.args:
        by_id = service_worker_pb2.RespondActivityTaskCompletedByIDRequest.FromString(cmd.request)
        result, identity = by_id.result, by_id.identity
    else:
        req = service_worker_pb2.RespondActivityTaskCompletedRequest.FromString(cmd.request)
        result, identity = req.result, req.identity
    data = result.data if result.ByteSize() or result.data else None

    def apply(m: RunMutation) -> None:
        activities.complete(m, _activity(m, cmd.args), data, identity)

    _mutate(engine, batch, key, apply)
    return {}


async def handle_activity_failed(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    req: Any
    if "activity_id" in cmd.args:
        req = service_worker_pb2.RespondActivityTaskFailedByIDRequest.FromString(cmd.request)
    else:
        req = service_worker_pb2.RespondActivityTaskFailedRequest.FromString(cmd.request)
    hb = req.heartbeat_details.data if req.HasField("heartbeat_details") else None

    def apply(m: RunMutation) -> None:
        activities.fail(
            m, _activity(m, cmd.args), req.failure.reason, req.failure.details, req.identity, hb
        )

    _mutate(engine, batch, key, apply)
    return {}


async def handle_activity_canceled(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    req: Any
    if "activity_id" in cmd.args:
        req = service_worker_pb2.RespondActivityTaskCanceledByIDRequest.FromString(cmd.request)
    else:
        req = service_worker_pb2.RespondActivityTaskCanceledRequest.FromString(cmd.request)
    details = req.details.data if req.HasField("details") else None

    def apply(m: RunMutation) -> None:
        activities.canceled(m, _activity(m, cmd.args), details, req.identity)

    _mutate(engine, batch, key, apply)
    return {}


async def handle_activity_heartbeat(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    req: Any
    if "activity_id" in cmd.args:
        req = service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest.FromString(cmd.request)
    else:
        req = service_worker_pb2.RecordActivityTaskHeartbeatRequest.FromString(cmd.request)
    details = req.details.data if req.HasField("details") else None
    cancel = _mutate(
        engine, batch, key, lambda m: activities.heartbeat(m, _activity(m, cmd.args), details)
    )
    return {"cancel_requested": cancel}


# -- timers ---------------------------------------------------------------------------------------


async def handle_timer_fired(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    task = decode_timer(cmd.args["task"])
    try:
        key = await _resolve(engine, batch, cmd, task.run_id)
    except EntityNotExistsError:
        return {}  # the run is gone: nothing to time out
    kind = task.kind
    if kind == TimerKind.USER_TIMER:
        _mutate(engine, batch, key, lambda m: external.on_user_timer(m, task))
    elif kind == TimerKind.ACTIVITY_TIMEOUT:
        _mutate(engine, batch, key, lambda m: activities.on_timeout_timer(m, task))
    elif kind == TimerKind.ACTIVITY_RETRY:
        _mutate(engine, batch, key, lambda m: activities.on_retry_timer(m, task))
    elif kind == TimerKind.DECISION_TIMEOUT:
        _mutate(engine, batch, key, lambda m: decisions.on_timeout_timer(m, task))
    elif kind == TimerKind.WORKFLOW_TIMEOUT:
        creator = engine.creator(batch)
        _mutate(
            engine, batch, key, lambda m: decisions.on_workflow_timeout(m, creator, new_run_id())
        )
    elif kind == TimerKind.WORKFLOW_BACKOFF:
        _mutate(engine, batch, key, external.on_backoff_timer)
    elif kind == TimerKind.DECISION_BACKOFF:
        _mutate(engine, batch, key, lambda m: decision_backoff.on_backoff_timer(m, task))
    return {}


# -- results from other runs ---------------------------------------------------------------


async def handle_child_started(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    ok = _mutate(
        engine,
        batch,
        key,
        lambda m: external.child_started(m, cmd.args["initiated_id"], cmd.args["run_id"]),
    )
    return {"recorded": ok}


async def handle_child_start_failed(
    engine: ShardEngine, batch: Batch, cmd: Command
) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    _mutate(
        engine,
        batch,
        key,
        lambda m: external.child_start_failed(m, cmd.args["initiated_id"], cmd.args["cause"]),
    )
    return {}


async def handle_child_completed(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    a = cmd.args
    _mutate(
        engine,
        batch,
        key,
        lambda m: external.child_completed(m, a["initiated_id"], a["run_id"], a["close_event"]),
    )
    return {}


async def handle_external_result(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    key = await _resolve(engine, batch, cmd)
    initiated_id = cmd.args["initiated_id"]
    cause = cmd.args.get("cause")
    if cmd.kind in (CommandKind.EXTERNAL_SIGNALED, CommandKind.EXTERNAL_SIGNAL_FAILED):
        _mutate(
            engine, batch, key, lambda m: external.external_signal_result(m, initiated_id, cause)
        )
    else:
        _mutate(
            engine, batch, key, lambda m: external.external_cancel_result(m, initiated_id, cause)
        )
    return {}


async def handle_refresh_tasks(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    """Dispatch again what waits in matching: a lost backlog is rebuilt from mutable state."""
    key = await _resolve(engine, batch, cmd)

    def refresh(m: RunMutation) -> None:
        st = m.state
        if not st.is_open:
            return
        d = st.decision
        # A decision held back by a backoff is dispatched by its timer, not before.
        if d is not None and d.started_id == EMPTY_EVENT_ID and not st.decision_backoff_ns:
            m.dispatch_decision(d)
        for info in st.activities.values():
            if not info.is_started and info.scheduled_ns <= m.now_ns:
                m.transfer_task(
                    TransferKind.ACTIVITY_TASK,
                    event_id=info.schedule_id,
                    attempt=info.attempt,
                    task_list=info.task_list,
                    schedule_to_start_s=info.schedule_to_start_s,
                )

    _mutate(engine, batch, key, refresh)
    return {}


HANDLERS: dict[CommandKind, Handler] = {
    CommandKind.START: handle_start,
    CommandKind.SIGNAL_WITH_START: handle_signal_with_start,
    CommandKind.START_CHILD: handle_start_child,
    CommandKind.SIGNAL: handle_signal,
    CommandKind.REQUEST_CANCEL: handle_request_cancel,
    CommandKind.TERMINATE: handle_terminate,
    CommandKind.RECORD_DECISION_STARTED: handle_record_decision_started,
    CommandKind.DECISION_COMPLETED: handle_decision_completed,
    CommandKind.DECISION_FAILED: handle_decision_failed,
    CommandKind.RECORD_ACTIVITY_STARTED: handle_record_activity_started,
    CommandKind.ACTIVITY_COMPLETED: handle_activity_completed,
    CommandKind.ACTIVITY_FAILED: handle_activity_failed,
    CommandKind.ACTIVITY_CANCELED: handle_activity_canceled,
    CommandKind.ACTIVITY_HEARTBEAT: handle_activity_heartbeat,
    CommandKind.TIMER_FIRED: handle_timer_fired,
    CommandKind.CHILD_STARTED: handle_child_started,
    CommandKind.CHILD_START_FAILED: handle_child_start_failed,
    CommandKind.CHILD_COMPLETED: handle_child_completed,
    CommandKind.EXTERNAL_SIGNALED: handle_external_result,
    CommandKind.EXTERNAL_SIGNAL_FAILED: handle_external_result,
    CommandKind.EXTERNAL_CANCEL_REQUESTED: handle_external_result,
    CommandKind.EXTERNAL_CANCEL_FAILED: handle_external_result,
    CommandKind.REFRESH_TASKS: handle_refresh_tasks,
}


async def dispatch(engine: ShardEngine, batch: Batch, cmd: Command) -> dict[str, Any]:
    handler = HANDLERS.get(cmd.kind)
    if handler is None:
        raise BadRequestError(f"unknown command kind {cmd.kind}")
    return await handler(engine, batch, cmd)
