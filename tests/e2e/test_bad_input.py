"""Bad input for every RPC the server implements, through the official client's stubs.

Each case sends one faulty request (a required field missing, an invalid value, an unknown
domain/workflow/run, a payload over the 2 MB blob limit, ...) and checks that it comes back as
the client's typed error (cadence/error.py, decoded from the status details) with the status
code Cadence uses, and that the message names the offending field. BadRequest carries no
details in Cadence, so the client surfaces it as a plain `CadenceRpcError(INVALID_ARGUMENT)`.

Every call has a deadline, and the client retries INTERNAL until that deadline, so a server
bug shows up as a wrong class/code, never as a hang.

One server serves the whole module. A "keeper" workflow is started before any bad call and
is only run to completion by the last test, which then checks that no bad call reached its
history (the exact canonical event sequence, validated by check_history).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import pytest
import pytest_asyncio
from cadence import Client, Registry, workflow
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    domain_pb2,
    history_pb2,
    query_pb2,
    service_domain_pb2,
    service_meta_pb2,
    service_meta_pb2_grpc,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    visibility_pb2,
    workflow_pb2,
)
from cadence.error import (
    CadenceRpcError,
    CancellationAlreadyRequestedError,
    DomainAlreadyExistsError,
    EntityNotExistsError,
    QueryFailedError,
    WorkflowExecutionAlreadyStartedError,
)
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from engine.execution.checker import check_history
from engine.frontend.tokens import TaskToken, encode_task_token
from engine.server import Server
from tests.e2e.harness import (
    DOMAIN,
    close_event,
    event_types,
    full_history,
    register_domain,
    started_server,
    worker_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Deadline of every bad call: long enough for the slowest legitimate answer, short enough
# that a retried INTERNAL fails the test quickly.
CALL_TIMEOUT = 5.0

MB = 1024 * 1024
OVER_LIMIT = b"x" * (3 * MB)  # over the 2 MB blob limit, under grpc's 8 MB receive limit
NEAR_GRPC_MAX = b"x" * (7 * MB)

DEPRECATED = "deprecated-domain"
GHOST_DOMAIN = "ghost-domain"
GHOST_WF = "ghost-workflow"
GHOST_RUN = "2b1c5b4e-7f5e-4c4f-9d8e-0d7c1f1e2a3b"
LONG = "x" * 1001

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


@dataclass
class Env:
    server: Server
    client: Client
    stubs: dict[str, Any]
    keeper: common_pb2.WorkflowExecution
    keeper_task_list: str
    closed: common_pb2.WorkflowExecution
    domain_id: str = ""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    db: Path = tmp_path_factory.mktemp("bad-input") / "cadenza.db"
    server = await started_server(db)
    client = Client(domain=DOMAIN, target=server.address)
    try:
        await register_domain(client)
        await register_domain(client, DEPRECATED)
        await client.domain_stub.DeprecateDomain(
            service_domain_pb2.DeprecateDomainRequest(name=DEPRECATED)
        )
        described = await client.domain_stub.DescribeDomain(
            service_domain_pb2.DescribeDomainRequest(name=DOMAIN)
        )
        # Started before every bad call; no worker polls its task list until the last test.
        keeper_tl = f"keeper-{uuid.uuid4()}"
        keeper = await client.start_workflow(
            "EchoWorkflow",
            "kept",
            task_list=keeper_tl,
            execution_start_to_close_timeout=timedelta(seconds=60),
        )
        # A run that is already closed (terminated).
        closed = await client.start_workflow(
            "EchoWorkflow",
            "closed",
            task_list=f"closed-{uuid.uuid4()}",
            execution_start_to_close_timeout=timedelta(seconds=60),
        )
        await client.workflow_stub.TerminateWorkflowExecution(
            service_workflow_pb2.TerminateWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=closed, reason="setup"
            ),
            timeout=CALL_TIMEOUT,
        )
        channel = client._channel  # the client's channel, with its interceptors
        stubs = {
            "domain": client.domain_stub,
            "workflow": client.workflow_stub,
            "worker": client.worker_stub,
            "visibility": service_visibility_pb2_grpc.VisibilityAPIStub(channel),  # type: ignore[no-untyped-call]
            "meta": service_meta_pb2_grpc.MetaAPIStub(channel),  # type: ignore[no-untyped-call]
        }
        yield Env(
            server=server,
            client=client,
            stubs=stubs,
            keeper=keeper,
            keeper_task_list=keeper_tl,
            closed=closed,
            domain_id=described.domain.id,
        )
    finally:
        await client.close()
        await server.stop()


# --- request builders ---------------------------------------------------------------------


def _dur(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(seconds=seconds))
    return d


M = TypeVar("M", bound=Message)

# A request message class. Generated classes take their fields as keywords, which
# `type[Message]` does not declare (its constructor takes none).
RequestClass = Callable[..., Message]


def _build(msg: M, clear: tuple[str, ...], **fields: Any) -> M:
    for name, value in fields.items():
        target = getattr(msg, name)
        if isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    for name in clear:
        msg.ClearField(name)
    return msg


def start_req(*clear: str, **fields: Any) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_id=f"bad-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="EchoWorkflow"),
        task_list=tasklist_pb2.TaskList(name="bad-input-tl"),
        execution_start_to_close_timeout=_dur(10),
        task_start_to_close_timeout=_dur(5),
        request_id=str(uuid.uuid4()),
        identity="bad-input-test",
    )
    return _build(req, clear, **fields)


def retry(**fields: Any) -> common_pb2.RetryPolicy:
    policy = common_pb2.RetryPolicy(
        initial_interval=_dur(1), backoff_coefficient=2.0, maximum_attempts=3
    )
    return _build(policy, (), **fields)


def sws_req(
    *clear: str,
    start: service_workflow_pb2.StartWorkflowExecutionRequest | None = None,
    **fields: Any,
) -> service_workflow_pb2.SignalWithStartWorkflowExecutionRequest:
    req = service_workflow_pb2.SignalWithStartWorkflowExecutionRequest(
        start_request=start if start is not None else start_req(),
        signal_name="sig",
        signal_input=common_pb2.Payload(data=b'"hi"'),
    )
    return _build(req, clear, **fields)


def execution(wf: str = GHOST_WF, run: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=wf, run_id=run)


def _keeper(e: Env, run: bool = True) -> common_pb2.WorkflowExecution:
    return execution(e.keeper.workflow_id, e.keeper.run_id if run else "")


def token(
    e: Env,
    *,
    wf: str | None = None,
    run: str | None = None,
    schedule_id: int = 999,
    attempt: int = 0,
    activity_id: str = "",
    query_id: str = "",
) -> bytes:
    return encode_task_token(
        TaskToken(
            domain_id=e.domain_id,
            workflow_id=e.keeper.workflow_id if wf is None else wf,
            run_id=e.keeper.run_id if run is None else run,
            schedule_id=schedule_id,
            attempt=attempt,
            activity_id=activity_id,
            query_id=query_id,
        )
    )


# --- cases --------------------------------------------------------------------------------

BAD_REQUEST = (CadenceRpcError, grpc.StatusCode.INVALID_ARGUMENT)
NOT_FOUND = (EntityNotExistsError, grpc.StatusCode.NOT_FOUND)
QUERY_FAILED = (QueryFailedError, grpc.StatusCode.INVALID_ARGUMENT)
ALREADY_STARTED = (WorkflowExecutionAlreadyStartedError, grpc.StatusCode.ALREADY_EXISTS)
DOMAIN_EXISTS = (DomainAlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS)

Build = Callable[[Env], Message]


@dataclass(frozen=True)
class Bad:
    api: str  # key into Env.stubs
    method: str
    what: str  # the field and fault, for the test id
    build: Build
    error: tuple[type[CadenceRpcError], grpc.StatusCode]
    says: tuple[str, ...]  # fragments the message must contain (the field it names)
    timeout: float = CALL_TIMEOUT

    @property
    def id(self) -> str:
        return f"{self.method}-{self.what}"


def _const(msg: Message) -> Build:
    return lambda _e: msg


def bad(
    api: str,
    method: str,
    what: str,
    build: Build | Message,
    error: tuple[type[CadenceRpcError], grpc.StatusCode],
    *says: str,
    timeout: float = CALL_TIMEOUT,
) -> Bad:
    b = build if callable(build) and not isinstance(build, Message) else _const(build)
    return Bad(api, method, what, b, error, says, timeout)


D = service_domain_pb2
W = service_workflow_pb2
K = service_worker_pb2
V = service_visibility_pb2

# The case tables stay one case per few lines, as a table.
# fmt: off

# DomainAPI ---------------------------------------------------------------------------------

DOMAIN_CASES = [
    bad("domain", "RegisterDomain", "name-missing", D.RegisterDomainRequest(), BAD_REQUEST,
        "Domain not set"),
    bad("domain", "RegisterDomain", "name-bad-chars", D.RegisterDomainRequest(name="bad name!"),
        BAD_REQUEST, "Domain name can only include alphanumeric and dash characters"),
    bad("domain", "RegisterDomain", "name-too-long", D.RegisterDomainRequest(name="d" * 1001),
        BAD_REQUEST, "Domain length exceeds limit"),
    bad("domain", "RegisterDomain", "retention-zero",
        D.RegisterDomainRequest(name="zero-retention",
                                workflow_execution_retention_period=_dur(0)),
        BAD_REQUEST, "retention period"),
    bad("domain", "RegisterDomain", "retention-negative",
        D.RegisterDomainRequest(name="negative-retention",
                                workflow_execution_retention_period=_dur(-86400)),
        BAD_REQUEST, "retention period"),
    bad("domain", "RegisterDomain", "retention-too-long",
        D.RegisterDomainRequest(name="long-retention",
                                workflow_execution_retention_period=_dur(31 * 86400)),
        BAD_REQUEST, "RetentionDays"),
    bad("domain", "RegisterDomain", "history_archival_status-bad-enum",
        D.RegisterDomainRequest(name="bad-archival", history_archival_status=99),  # type: ignore[arg-type]
        BAD_REQUEST, "HistoryArchivalStatus"),
    bad("domain", "RegisterDomain", "visibility_archival_status-bad-enum",
        D.RegisterDomainRequest(name="bad-archival", visibility_archival_status=99),  # type: ignore[arg-type]
        BAD_REQUEST, "VisibilityArchivalStatus"),
    bad("domain", "RegisterDomain", "active_cluster_name-unknown",
        D.RegisterDomainRequest(name="other-cluster", active_cluster_name="elsewhere"),
        BAD_REQUEST, "active cluster name"),
    bad("domain", "RegisterDomain", "name-duplicate", D.RegisterDomainRequest(name=DOMAIN),
        DOMAIN_EXISTS, "Domain already exists"),
    bad("domain", "DescribeDomain", "name-and-id-missing", D.DescribeDomainRequest(),
        BAD_REQUEST, "Domain not set"),
    bad("domain", "DescribeDomain", "name-unknown", D.DescribeDomainRequest(name=GHOST_DOMAIN),
        NOT_FOUND, GHOST_DOMAIN),
    bad("domain", "DescribeDomain", "id-unknown", D.DescribeDomainRequest(id=GHOST_RUN),
        NOT_FOUND, "Domain ID", GHOST_RUN),
    bad("domain", "ListDomains", "page_size-negative", D.ListDomainsRequest(page_size=-1),
        BAD_REQUEST, "PageSize"),
    bad("domain", "ListDomains", "next_page_token-garbage",
        D.ListDomainsRequest(next_page_token=b"\xff\x00garbage"), BAD_REQUEST, "page token"),
    bad("domain", "UpdateDomain", "name-missing",
        D.UpdateDomainRequest(update_mask=field_mask_pb2.FieldMask(paths=["description"])),
        BAD_REQUEST, "Domain not set"),
    bad("domain", "UpdateDomain", "name-unknown",
        D.UpdateDomainRequest(name=GHOST_DOMAIN, description="x",
                              update_mask=field_mask_pb2.FieldMask(paths=["description"])),
        NOT_FOUND, GHOST_DOMAIN),
    bad("domain", "UpdateDomain", "update_mask-unknown-path",
        D.UpdateDomainRequest(name=DOMAIN, update_mask=field_mask_pb2.FieldMask(paths=["nope"])),
        BAD_REQUEST, "update mask path", "nope"),
    bad("domain", "UpdateDomain", "retention-zero",
        D.UpdateDomainRequest(
            name=DOMAIN, workflow_execution_retention_period=_dur(0),
            update_mask=field_mask_pb2.FieldMask(paths=["workflow_execution_retention_period"])),
        BAD_REQUEST, "retention period"),
    bad("domain", "UpdateDomain", "history_archival_status-bad-enum",
        D.UpdateDomainRequest(
            name=DOMAIN, history_archival_status=99,  # type: ignore[arg-type]
            update_mask=field_mask_pb2.FieldMask(paths=["history_archival_status"])),
        BAD_REQUEST, "history_archival_status"),
    bad("domain", "UpdateDomain", "delete_bad_binary-unknown",
        D.UpdateDomainRequest(
            name=DOMAIN, delete_bad_binary="no-such-checksum",
            update_mask=field_mask_pb2.FieldMask(paths=["delete_bad_binary"])),
        BAD_REQUEST, "no-such-checksum"),
    bad("domain", "DeprecateDomain", "name-missing", D.DeprecateDomainRequest(), BAD_REQUEST,
        "Domain not set"),
    bad("domain", "DeprecateDomain", "name-unknown",
        D.DeprecateDomainRequest(name=GHOST_DOMAIN), NOT_FOUND, GHOST_DOMAIN),
    bad("domain", "DeleteDomain", "name-missing", D.DeleteDomainRequest(), BAD_REQUEST,
        "Domain not set"),
    bad("domain", "FailoverDomain", "domain_name-missing", D.FailoverDomainRequest(),
        BAD_REQUEST, "Domain not set"),
    bad("domain", "FailoverDomain", "domain_name-unknown",
        D.FailoverDomainRequest(domain_name=GHOST_DOMAIN, domain_active_cluster_name="x"),
        NOT_FOUND, GHOST_DOMAIN),
]

# WorkflowAPI: starts ------------------------------------------------------------------------

# (what, request, error, fragments): shared by Start and SignalWithStart's start_request.
StartFault = tuple[str, Callable[[], W.StartWorkflowExecutionRequest], Any, tuple[str, ...]]
START_FAULTS: list[StartFault] = [
    ("domain-missing", lambda: start_req("domain"), BAD_REQUEST, ("Domain not set",)),
    ("domain-too-long", lambda: start_req(domain="d" * 1001), BAD_REQUEST, ("Domain length",)),
    ("domain-unknown", lambda: start_req(domain=GHOST_DOMAIN), NOT_FOUND, (GHOST_DOMAIN,)),
    ("domain-deprecated", lambda: start_req(domain=DEPRECATED), BAD_REQUEST,
     ("Domain is deprecated.",)),
    ("workflow_id-missing", lambda: start_req("workflow_id"), BAD_REQUEST, ("WorkflowId",)),
    ("workflow_id-too-long", lambda: start_req(workflow_id=LONG), BAD_REQUEST, ("WorkflowID",)),
    ("request_id-missing", lambda: start_req("request_id"), BAD_REQUEST, ("requestId",)),
    ("request_id-not-uuid", lambda: start_req(request_id="not-a-uuid"), BAD_REQUEST,
     ("requestId", "not-a-uuid", "UUID")),
    ("workflow_type-missing", lambda: start_req("workflow_type"), BAD_REQUEST,
     ("WorkflowType",)),
    ("workflow_type-empty-name",
     lambda: start_req(workflow_type=common_pb2.WorkflowType(name="")), BAD_REQUEST,
     ("WorkflowType",)),
    ("task_list-missing", lambda: start_req("task_list"), BAD_REQUEST, ("TaskList",)),
    ("task_list-too-long", lambda: start_req(task_list=tasklist_pb2.TaskList(name=LONG)),
     BAD_REQUEST, ("TaskList",)),
    ("execution_timeout-missing", lambda: start_req("execution_start_to_close_timeout"),
     BAD_REQUEST, ("ExecutionStartToCloseTimeout",)),
    ("execution_timeout-zero", lambda: start_req(execution_start_to_close_timeout=_dur(0)),
     BAD_REQUEST, ("ExecutionStartToCloseTimeout",)),
    ("execution_timeout-negative",
     lambda: start_req(execution_start_to_close_timeout=_dur(-5)), BAD_REQUEST,
     ("ExecutionStartToCloseTimeout",)),
    ("execution_timeout-sub-second",
     lambda: start_req(execution_start_to_close_timeout=_dur(0.5)), BAD_REQUEST,
     ("ExecutionStartToCloseTimeout",)),
    ("task_timeout-missing", lambda: start_req("task_start_to_close_timeout"), BAD_REQUEST,
     ("TaskStartToCloseTimeout",)),
    ("task_timeout-negative", lambda: start_req(task_start_to_close_timeout=_dur(-1)),
     BAD_REQUEST, ("TaskStartToCloseTimeout",)),
    ("delay_start-negative", lambda: start_req(delay_start=_dur(-1)), BAD_REQUEST,
     ("DelayStart",)),
    ("jitter_start-negative", lambda: start_req(jitter_start=_dur(-1)), BAD_REQUEST,
     ("JitterStart",)),
    ("retry_policy-initial_interval-zero",
     lambda: start_req(retry_policy=retry(initial_interval=_dur(0))), BAD_REQUEST,
     ("InitialInterval",)),
    ("retry_policy-backoff_coefficient-below-1",
     lambda: start_req(retry_policy=retry(backoff_coefficient=0.5)), BAD_REQUEST,
     ("BackoffCoefficient",)),
    ("retry_policy-maximum_interval-negative",
     lambda: start_req(retry_policy=retry(maximum_interval=_dur(-1))), BAD_REQUEST,
     ("MaximumInterval",)),
    ("retry_policy-maximum_interval-below-initial",
     lambda: start_req(retry_policy=retry(initial_interval=_dur(10),
                                          maximum_interval=_dur(5))),
     BAD_REQUEST, ("MaximumInterval", "InitialInterval")),
    ("retry_policy-maximum_attempts-negative",
     lambda: start_req(retry_policy=retry(maximum_attempts=-1)), BAD_REQUEST,
     ("MaximumAttempts",)),
    ("retry_policy-expiration_interval-negative",
     lambda: start_req(retry_policy=retry(expiration_interval=_dur(-1))), BAD_REQUEST,
     ("ExpirationInterval",)),
    ("retry_policy-attempts-and-expiration-both-zero",
     lambda: start_req(retry_policy=retry(maximum_attempts=0)), BAD_REQUEST,
     ("MaximumAttempts", "ExpirationInterval")),
    ("cron_schedule-garbage", lambda: start_req(cron_schedule="every tuesday"), BAD_REQUEST,
     ("CronSchedule",)),
    ("cron_schedule-out-of-range", lambda: start_req(cron_schedule="61 * * * *"), BAD_REQUEST,
     ("CronSchedule",)),
    ("cron_schedule-six-fields", lambda: start_req(cron_schedule="0 * * * * *"), BAD_REQUEST,
     ("CronSchedule",)),
    ("workflow_id_reuse_policy-bad-enum", lambda: start_req(workflow_id_reuse_policy=99),
     BAD_REQUEST, ("WorkflowIdReusePolicy",)),
    ("cron_overlap_policy-bad-enum", lambda: start_req(cron_overlap_policy=42), BAD_REQUEST,
     ("CronOverlapPolicy",)),
    ("identity-too-long", lambda: start_req(identity=LONG), BAD_REQUEST, ("Identity",)),
    ("search_attributes-unknown-key",
     lambda: start_req(search_attributes=common_pb2.SearchAttributes(
         indexed_fields={"NoSuchKey": common_pb2.Payload(data=b'"v"')})),
     BAD_REQUEST, ("NoSuchKey",)),
    ("search_attributes-system-key",
     lambda: start_req(search_attributes=common_pb2.SearchAttributes(
         indexed_fields={"WorkflowID": common_pb2.Payload(data=b'"v"')})),
     BAD_REQUEST, ("WorkflowID", "read-only")),
    ("search_attributes-not-json",
     lambda: start_req(search_attributes=common_pb2.SearchAttributes(
         indexed_fields={"CustomKeywordField": common_pb2.Payload(data=b"{not json")})),
     BAD_REQUEST, ("CustomKeywordField",)),
    ("input-over-2MB", lambda: start_req(input=common_pb2.Payload(data=OVER_LIMIT)),
     BAD_REQUEST, ("Input",)),
    ("memo-over-2MB",
     lambda: start_req(memo=common_pb2.Memo(fields={"big": common_pb2.Payload(data=OVER_LIMIT)})),
     BAD_REQUEST, ("Memo", "big")),
    ("input-plus-memo-over-2MB",
     lambda: start_req(input=common_pb2.Payload(data=b"x" * (MB + MB // 2)),
                       memo=common_pb2.Memo(fields={"m": common_pb2.Payload(data=b"y" * MB)})),
     BAD_REQUEST, ("Input", "memo")),
]

def _start(mk: Callable[[], W.StartWorkflowExecutionRequest]) -> Build:
    return lambda _e: mk()


def _sws_start(mk: Callable[[], W.StartWorkflowExecutionRequest]) -> Build:
    return lambda _e: sws_req(start=mk())


START_CASES = [
    bad("workflow", "StartWorkflowExecution", what, _start(mk), err, *says)
    for what, mk, err, says in START_FAULTS
] + [
    bad("workflow", "StartWorkflowExecution", "input-7MB-under-grpc-max",
        lambda _e: start_req(input=common_pb2.Payload(data=NEAR_GRPC_MAX)), BAD_REQUEST,
        "Input"),
    bad("workflow", "StartWorkflowExecution", "workflow_id-already-running",
        lambda e: start_req(workflow_id=e.keeper.workflow_id,
                            task_list=tasklist_pb2.TaskList(name=e.keeper_task_list)),
        ALREADY_STARTED, "already running"),
]

SWS_CASES = [
    bad("workflow", "SignalWithStartWorkflowExecution", f"start_request-{what}",
        _sws_start(mk), err, *says)
    for what, mk, err, says in START_FAULTS
] + [
    bad("workflow", "SignalWithStartWorkflowExecution", "start_request-missing",
        sws_req("start_request"), BAD_REQUEST, "Domain not set"),
    bad("workflow", "SignalWithStartWorkflowExecution", "signal_name-missing",
        lambda _e: sws_req("signal_name"), BAD_REQUEST, "SignalName"),
    bad("workflow", "SignalWithStartWorkflowExecution", "signal_name-too-long",
        lambda _e: sws_req(signal_name=LONG), BAD_REQUEST, "SignalName"),
    bad("workflow", "SignalWithStartWorkflowExecution", "signal_input-over-2MB",
        lambda _e: sws_req(signal_input=common_pb2.Payload(data=OVER_LIMIT)), BAD_REQUEST,
        "Signal input"),
    bad("workflow", "SignalWithStartWorkflowExecution", "control-over-2MB",
        lambda _e: sws_req(control=OVER_LIMIT), BAD_REQUEST, "Control"),
]


# WorkflowAPI: requests to a run -----------------------------------------------------------


def _run_faults(method: str, make: Callable[..., Message], *, closed: bool = True) -> list[Bad]:
    """The execution-addressing faults every (domain, workflow_execution) request shares."""
    cases = [
        bad("workflow", method, "domain-missing",
            lambda e: make(e, domain=""), BAD_REQUEST, "Domain not set"),
        bad("workflow", method, "domain-unknown",
            lambda e: make(e, domain=GHOST_DOMAIN), NOT_FOUND, GHOST_DOMAIN),
        bad("workflow", method, "workflow_execution-missing",
            lambda e: make(e, execution=None), BAD_REQUEST, "Execution"),
        bad("workflow", method, "workflow_id-missing",
            lambda e: make(e, execution=execution("")), BAD_REQUEST, "WorkflowId"),
        bad("workflow", method, "workflow_id-too-long",
            lambda e: make(e, execution=execution(LONG)), BAD_REQUEST, "WorkflowID"),
        bad("workflow", method, "run_id-not-uuid",
            lambda e: make(e, execution=execution(e.keeper.workflow_id, "not-a-uuid")),
            BAD_REQUEST, "RunId"),
        bad("workflow", method, "workflow-unknown",
            lambda e: make(e, execution=execution(GHOST_WF)), NOT_FOUND, "Workflow execution",
            GHOST_WF),
        bad("workflow", method, "run-unknown",
            lambda e: make(e, execution=execution(e.keeper.workflow_id, GHOST_RUN)), NOT_FOUND,
            "Workflow execution", GHOST_RUN),
    ]
    if closed:
        cases.append(
            bad("workflow", method, "run-already-closed",
                lambda e: make(e, execution=e.closed), NOT_FOUND,
                "Workflow execution already completed")
        )
    return cases


def _with_execution(cls: RequestClass, **defaults: Any) -> Callable[..., Message]:
    def make(
        e: Env,
        *,
        domain: str = DOMAIN,
        execution: common_pb2.WorkflowExecution | Literal["keeper"] | None = "keeper",
        **fields: Any,
    ) -> Message:
        msg = cls(domain=domain, **defaults)
        if execution == "keeper":
            _build(msg, (), workflow_execution=_keeper(e))
        elif execution is not None:
            _build(msg, (), workflow_execution=execution)
        return _build(msg, (), **fields)

    return make


signal = _with_execution(W.SignalWorkflowExecutionRequest, signal_name="sig")
cancel = _with_execution(W.RequestCancelWorkflowExecutionRequest)
terminate = _with_execution(W.TerminateWorkflowExecutionRequest, reason="bad input test")
get_history = _with_execution(W.GetWorkflowExecutionHistoryRequest)
describe = _with_execution(W.DescribeWorkflowExecutionRequest)
query = _with_execution(W.QueryWorkflowRequest, query=query_pb2.WorkflowQuery(query_type="q"))

RUN_CASES = [
    *_run_faults("SignalWorkflowExecution", signal),
    bad("workflow", "SignalWorkflowExecution", "signal_name-missing",
        lambda e: signal(e, signal_name=""), BAD_REQUEST, "SignalName"),
    bad("workflow", "SignalWorkflowExecution", "signal_name-too-long",
        lambda e: signal(e, signal_name=LONG), BAD_REQUEST, "SignalName"),
    bad("workflow", "SignalWorkflowExecution", "request_id-not-uuid",
        lambda e: signal(e, request_id="not-a-uuid"), BAD_REQUEST, "requestId", "not-a-uuid"),
    bad("workflow", "SignalWorkflowExecution", "identity-too-long",
        lambda e: signal(e, identity=LONG), BAD_REQUEST, "Identity"),
    bad("workflow", "SignalWorkflowExecution", "signal_input-over-2MB",
        lambda e: signal(e, signal_input=common_pb2.Payload(data=OVER_LIMIT)), BAD_REQUEST,
        "Signal input"),
    bad("workflow", "SignalWorkflowExecution", "control-over-2MB",
        lambda e: signal(e, control=OVER_LIMIT), BAD_REQUEST, "Control"),
    *_run_faults("RequestCancelWorkflowExecution", cancel),
    bad("workflow", "RequestCancelWorkflowExecution", "request_id-not-uuid",
        lambda e: cancel(e, request_id="not-a-uuid"), BAD_REQUEST, "requestId"),
    bad("workflow", "RequestCancelWorkflowExecution", "first_execution_run_id-not-uuid",
        lambda e: cancel(e, first_execution_run_id="nope"), BAD_REQUEST,
        "FirstExecutionRunId"),
    bad("workflow", "RequestCancelWorkflowExecution", "first_execution_run_id-other-chain",
        lambda e: cancel(e, execution=_keeper(e, run=False), first_execution_run_id=GHOST_RUN),
        NOT_FOUND, "first execution run id"),
    bad("workflow", "RequestCancelWorkflowExecution", "identity-too-long",
        lambda e: cancel(e, identity=LONG), BAD_REQUEST, "Identity"),
    *_run_faults("TerminateWorkflowExecution", terminate),
    bad("workflow", "TerminateWorkflowExecution", "first_execution_run_id-not-uuid",
        lambda e: terminate(e, first_execution_run_id="nope"), BAD_REQUEST,
        "FirstExecutionRunId"),
    bad("workflow", "TerminateWorkflowExecution", "first_execution_run_id-other-chain",
        lambda e: terminate(e, first_execution_run_id=GHOST_RUN), NOT_FOUND,
        "first execution run id"),
    bad("workflow", "TerminateWorkflowExecution", "details-over-2MB",
        lambda e: terminate(e, details=common_pb2.Payload(data=OVER_LIMIT)), BAD_REQUEST,
        "Details"),
    bad("workflow", "TerminateWorkflowExecution", "identity-too-long",
        lambda e: terminate(e, identity=LONG), BAD_REQUEST, "Identity"),
    *_run_faults("GetWorkflowExecutionHistory", get_history, closed=False),
    bad("workflow", "GetWorkflowExecutionHistory", "page_size-negative",
        lambda e: get_history(e, page_size=-1), BAD_REQUEST, "PageSize"),
    bad("workflow", "GetWorkflowExecutionHistory", "next_page_token-garbage",
        lambda e: get_history(e, next_page_token=b"\xc1garbage"), BAD_REQUEST, "NextPageToken"),
    bad("workflow", "GetWorkflowExecutionHistory", "history_event_filter_type-bad-enum",
        lambda e: get_history(e, history_event_filter_type=7), BAD_REQUEST,
        "HistoryEventFilterType"),
    *_run_faults("DescribeWorkflowExecution", describe, closed=False),
    bad("workflow", "DescribeWorkflowExecution", "query_consistency_level-bad-enum",
        lambda e: describe(e, query_consistency_level=9), BAD_REQUEST,
        "QueryConsistencyLevel"),
    *_run_faults("QueryWorkflow", query, closed=False),
    bad("workflow", "QueryWorkflow", "query-missing",
        lambda e: _build(query(e), ("query",)), BAD_REQUEST, "WorkflowQuery"),
    bad("workflow", "QueryWorkflow", "query_type-missing",
        lambda e: query(e, query=query_pb2.WorkflowQuery()), BAD_REQUEST, "QueryType"),
    bad("workflow", "QueryWorkflow", "query_args-over-2MB",
        lambda e: query(e, query=query_pb2.WorkflowQuery(
            query_type="q", query_args=common_pb2.Payload(data=OVER_LIMIT))),
        BAD_REQUEST, "Query args"),
    bad("workflow", "QueryWorkflow", "query_reject_condition-bad-enum",
        lambda e: query(e, query_reject_condition=9), BAD_REQUEST, "QueryRejectCondition"),
    bad("workflow", "QueryWorkflow", "query_consistency_level-bad-enum",
        lambda e: query(e, query_consistency_level=9), BAD_REQUEST, "QueryConsistencyLevel"),
    # The keeper has no worker: it never completed a decision, so it cannot be queried.
    bad("workflow", "QueryWorkflow", "before-first-decision",
        lambda e: query(e), QUERY_FAILED, "at least one decision task", timeout=2.5),
]


def _task_list_req(**fields: Any) -> W.DescribeTaskListRequest:
    req = W.DescribeTaskListRequest(
        domain=DOMAIN,
        task_list=tasklist_pb2.TaskList(name="bad-input-tl"),
        task_list_type=tasklist_pb2.TASK_LIST_TYPE_DECISION,
    )
    return _build(req, (), **fields)


TASK_LIST_CASES = [
    bad("workflow", "DescribeTaskList", "domain-missing", _task_list_req(domain=""),
        BAD_REQUEST, "Domain not set"),
    bad("workflow", "DescribeTaskList", "domain-unknown", _task_list_req(domain=GHOST_DOMAIN),
        NOT_FOUND, GHOST_DOMAIN),
    bad("workflow", "DescribeTaskList", "task_list-missing",
        _build(_task_list_req(), ("task_list",)), BAD_REQUEST, "TaskList"),
    bad("workflow", "DescribeTaskList", "task_list-too-long",
        _task_list_req(task_list=tasklist_pb2.TaskList(name=LONG)), BAD_REQUEST, "TaskList"),
    bad("workflow", "DescribeTaskList", "task_list_type-missing",
        _task_list_req(task_list_type=0), BAD_REQUEST, "TaskListType"),
    bad("workflow", "DescribeTaskList", "task_list_type-bad-enum",
        _task_list_req(task_list_type=7), BAD_REQUEST, "TaskListType"),
]

# WorkerAPI -----------------------------------------------------------------------------------


def _poll_faults(method: str, cls: RequestClass) -> list[Bad]:
    tl = tasklist_pb2.TaskList(name="bad-input-tl")
    return [
        bad("worker", method, "domain-missing", cls(task_list=tl), BAD_REQUEST,
            "Domain not set"),
        bad("worker", method, "domain-unknown", cls(domain=GHOST_DOMAIN, task_list=tl),
            NOT_FOUND, GHOST_DOMAIN),
        bad("worker", method, "task_list-missing", cls(domain=DOMAIN), BAD_REQUEST,
            "TaskList"),
        bad("worker", method, "task_list-empty-name",
            cls(domain=DOMAIN, task_list=tasklist_pb2.TaskList()), BAD_REQUEST, "TaskList"),
        bad("worker", method, "task_list-too-long",
            cls(domain=DOMAIN, task_list=tasklist_pb2.TaskList(name=LONG)), BAD_REQUEST,
            "TaskList"),
        bad("worker", method, "identity-too-long",
            cls(domain=DOMAIN, task_list=tl, identity=LONG), BAD_REQUEST, "Identity"),
        bad("worker", method, "deadline-under-2s", cls(domain=DOMAIN, task_list=tl),
            BAD_REQUEST, "Context timeout is too short.", timeout=1.5),
    ]


def _token_faults(method: str, cls: RequestClass, **fields: Any) -> list[Bad]:
    """Faults of the task-token calls; `fields` make an otherwise valid request."""
    def make(tok: Callable[[Env], bytes], **extra: Any) -> Build:
        return lambda e: cls(task_token=tok(e), **{**fields, **extra})

    return [
        bad("worker", method, "task_token-missing", make(lambda _e: b""), BAD_REQUEST,
            "Task token not set"),
        bad("worker", method, "task_token-garbage", make(lambda _e: b"\x00not a token"),
            BAD_REQUEST, "task token"),
        bad("worker", method, "task_token-json-without-ids", make(lambda _e: b'{"a":1}'),
            BAD_REQUEST, "task token"),
        bad("worker", method, "task_token-workflow-unknown",
            make(lambda e: token(e, wf=GHOST_WF, run=GHOST_RUN)), NOT_FOUND,
            "Workflow execution", GHOST_WF),
        bad("worker", method, "task_token-run-unknown",
            make(lambda e: token(e, run=GHOST_RUN)), NOT_FOUND, "Workflow execution",
            GHOST_RUN),
        bad("worker", method, "task_token-stale-schedule_id",
            make(lambda e: token(e, schedule_id=999, activity_id="a")), NOT_FOUND,
            "task not found"),
        bad("worker", method, "identity-too-long",
            make(lambda e: token(e), identity=LONG), BAD_REQUEST, "Identity"),
    ]


def _by_id_faults(method: str, cls: RequestClass) -> list[Bad]:
    make = _with_execution(cls, activity_id="act-1")
    return [
        bad("worker", method, "domain-missing", lambda e: make(e, domain=""), BAD_REQUEST,
            "Domain not set"),
        bad("worker", method, "domain-unknown", lambda e: make(e, domain=GHOST_DOMAIN),
            NOT_FOUND, GHOST_DOMAIN),
        bad("worker", method, "workflow_execution-missing",
            lambda e: make(e, execution=None), BAD_REQUEST, "Execution"),
        bad("worker", method, "workflow_id-missing",
            lambda e: make(e, execution=execution("")), BAD_REQUEST, "WorkflowId"),
        bad("worker", method, "run_id-not-uuid",
            lambda e: make(e, execution=execution(e.keeper.workflow_id, "nope")), BAD_REQUEST,
            "RunId"),
        bad("worker", method, "activity_id-missing", lambda e: make(e, activity_id=""),
            BAD_REQUEST, "ActivityID"),
        bad("worker", method, "identity-too-long", lambda e: make(e, identity=LONG),
            BAD_REQUEST, "Identity"),
        bad("worker", method, "workflow-unknown",
            lambda e: make(e, execution=execution(GHOST_WF)), NOT_FOUND, "Workflow execution",
            GHOST_WF),
        bad("worker", method, "run-unknown",
            lambda e: make(e, execution=execution(e.keeper.workflow_id, GHOST_RUN)), NOT_FOUND,
            "Workflow execution", GHOST_RUN),
        bad("worker", method, "activity-unknown",
            lambda e: make(e, execution=_keeper(e, run=False)), NOT_FOUND,
            "Activity task not found"),
        bad("worker", method, "run-already-closed",
            lambda e: make(e, execution=e.closed), NOT_FOUND, "Activity task not found"),
    ]


reset_sticky = _with_execution(K.ResetStickyTaskListRequest)

WORKER_CASES = [
    *_poll_faults("PollForDecisionTask", K.PollForDecisionTaskRequest),
    *_poll_faults("PollForActivityTask", K.PollForActivityTaskRequest),
    *_token_faults("RespondDecisionTaskCompleted", K.RespondDecisionTaskCompletedRequest),
    *_token_faults("RespondDecisionTaskFailed", K.RespondDecisionTaskFailedRequest),
    *_token_faults("RespondActivityTaskCompleted", K.RespondActivityTaskCompletedRequest),
    *_token_faults("RespondActivityTaskFailed", K.RespondActivityTaskFailedRequest,
                   failure=common_pb2.Failure(reason="r")),
    *_token_faults("RespondActivityTaskCanceled", K.RespondActivityTaskCanceledRequest),
    *_token_faults("RecordActivityTaskHeartbeat", K.RecordActivityTaskHeartbeatRequest),
    *_by_id_faults("RespondActivityTaskCompletedByID", K.RespondActivityTaskCompletedByIDRequest),
    *_by_id_faults("RespondActivityTaskFailedByID", K.RespondActivityTaskFailedByIDRequest),
    *_by_id_faults("RespondActivityTaskCanceledByID", K.RespondActivityTaskCanceledByIDRequest),
    *_by_id_faults("RecordActivityTaskHeartbeatByID", K.RecordActivityTaskHeartbeatByIDRequest),
    bad("worker", "RespondQueryTaskCompleted", "task_token-missing",
        K.RespondQueryTaskCompletedRequest(), BAD_REQUEST, "Task token not set"),
    bad("worker", "RespondQueryTaskCompleted", "task_token-garbage",
        K.RespondQueryTaskCompletedRequest(task_token=b"\x00garbage"), BAD_REQUEST,
        "task token"),
    bad("worker", "RespondQueryTaskCompleted", "task_token-not-a-query-token",
        lambda e: K.RespondQueryTaskCompletedRequest(task_token=token(e, schedule_id=2)),
        BAD_REQUEST, "TaskToken"),
    bad("worker", "RespondQueryTaskCompleted", "task_token-query-unknown",
        lambda e: K.RespondQueryTaskCompletedRequest(
            task_token=token(e, schedule_id=0, query_id=str(uuid.uuid4())),
            result=query_pb2.WorkflowQueryResult(
                result_type=query_pb2.QUERY_RESULT_TYPE_ANSWERED)),
        NOT_FOUND, "query task not found"),
    bad("worker", "ResetStickyTaskList", "domain-missing",
        lambda e: reset_sticky(e, domain=""), BAD_REQUEST, "Domain not set"),
    bad("worker", "ResetStickyTaskList", "domain-unknown",
        lambda e: reset_sticky(e, domain=GHOST_DOMAIN), NOT_FOUND, GHOST_DOMAIN),
    bad("worker", "ResetStickyTaskList", "workflow_execution-missing",
        lambda e: reset_sticky(e, execution=None), BAD_REQUEST, "Execution"),
    bad("worker", "ResetStickyTaskList", "workflow_id-missing",
        lambda e: reset_sticky(e, execution=execution("")), BAD_REQUEST, "WorkflowId"),
    bad("worker", "ResetStickyTaskList", "run_id-not-uuid",
        lambda e: reset_sticky(e, execution=execution(e.keeper.workflow_id, "nope")),
        BAD_REQUEST, "RunId"),
    bad("worker", "ResetStickyTaskList", "workflow-unknown",
        lambda e: reset_sticky(e, execution=execution(GHOST_WF)), NOT_FOUND,
        "Workflow execution", GHOST_WF),
    bad("worker", "ResetStickyTaskList", "run-unknown",
        lambda e: reset_sticky(e, execution=execution(e.keeper.workflow_id, GHOST_RUN)),
        NOT_FOUND, "Workflow execution", GHOST_RUN),
]

# VisibilityAPI -----------------------------------------------------------------------------


def _window(earliest: int | None = 0, latest: int | None = 2_000_000_000) -> Any:
    flt = visibility_pb2.StartTimeFilter()
    if earliest is not None:
        flt.earliest_time.CopyFrom(timestamp_pb2.Timestamp(seconds=earliest))
    if latest is not None:
        flt.latest_time.CopyFrom(timestamp_pb2.Timestamp(seconds=latest))
    return flt


def _list_basic_faults(method: str, cls: RequestClass) -> list[Bad]:
    def req(*clear: str, **fields: Any) -> Message:
        return _build(cls(domain=DOMAIN, start_time_filter=_window()), clear, **fields)

    return [
        bad("visibility", method, "domain-missing", req(domain=""), BAD_REQUEST,
            "Domain not set"),
        bad("visibility", method, "domain-unknown", req(domain=GHOST_DOMAIN), NOT_FOUND,
            GHOST_DOMAIN),
        bad("visibility", method, "start_time_filter-missing", req("start_time_filter"),
            BAD_REQUEST, "StartTimeFilter"),
        bad("visibility", method, "earliest_time-missing",
            req(start_time_filter=_window(earliest=None)), BAD_REQUEST, "EarliestTime"),
        bad("visibility", method, "latest_time-missing",
            req(start_time_filter=_window(latest=None)), BAD_REQUEST, "LatestTime"),
        bad("visibility", method, "earliest-after-latest",
            req(start_time_filter=_window(earliest=2_000, latest=1_000)), BAD_REQUEST,
            "EarliestTime", "LatestTime"),
        bad("visibility", method, "page_size-negative", req(page_size=-5), BAD_REQUEST,
            "PageSize"),
        bad("visibility", method, "next_page_token-garbage", req(next_page_token=b"\xffjunk"),
            BAD_REQUEST, "page token"),
    ]


def _list_query_faults(method: str, cls: RequestClass, paged: bool = True) -> list[Bad]:
    def req(**fields: Any) -> Message:
        return _build(cls(domain=DOMAIN, query="WorkflowType = 'EchoWorkflow'"), (), **fields)

    cases = [
        bad("visibility", method, "domain-missing", req(domain=""), BAD_REQUEST,
            "Domain not set"),
        bad("visibility", method, "domain-unknown", req(domain=GHOST_DOMAIN), NOT_FOUND,
            GHOST_DOMAIN),
        bad("visibility", method, "query-syntax-error", req(query="WorkflowType = = 'x'"),
            BAD_REQUEST, "visibility query"),
        bad("visibility", method, "query-unknown-key", req(query="NoSuchKey = 'x'"),
            BAD_REQUEST, "visibility query", "NoSuchKey"),
        bad("visibility", method, "query-bad-value", req(query="StartTime > 'yesterday'"),
            BAD_REQUEST, "visibility query", "StartTime"),
    ]
    if paged:
        cases += [
            bad("visibility", method, "page_size-negative", req(page_size=-5), BAD_REQUEST,
                "PageSize"),
            bad("visibility", method, "next_page_token-garbage",
                req(next_page_token=b"\xffjunk"), BAD_REQUEST, "page token"),
        ]
    return cases


VISIBILITY_CASES = [
    *_list_basic_faults("ListOpenWorkflowExecutions", V.ListOpenWorkflowExecutionsRequest),
    *_list_basic_faults("ListClosedWorkflowExecutions", V.ListClosedWorkflowExecutionsRequest),
    bad("visibility", "ListClosedWorkflowExecutions", "status_filter-bad-enum",
        V.ListClosedWorkflowExecutionsRequest(
            domain=DOMAIN, start_time_filter=_window(),
            status_filter=visibility_pb2.StatusFilter(status=42)),  # type: ignore[arg-type]
        BAD_REQUEST, "CloseStatus"),
    *_list_query_faults("ListWorkflowExecutions", V.ListWorkflowExecutionsRequest),
    *_list_query_faults("ScanWorkflowExecutions", V.ScanWorkflowExecutionsRequest),
    *_list_query_faults("CountWorkflowExecutions", V.CountWorkflowExecutionsRequest,
                        paged=False),
]

# fmt: on

CASES = [
    *DOMAIN_CASES,
    *START_CASES,
    *SWS_CASES,
    *RUN_CASES,
    *TASK_LIST_CASES,
    *WORKER_CASES,
    *VISIBILITY_CASES,
]


def _message(err: CadenceRpcError) -> str:
    return str(err.args[0]) if err.args else ""


async def _call(env: Env, api: str, method: str, request: Message, timeout: float) -> Any:
    rpc = getattr(env.stubs[api], method)
    # The outer wait_for is a backstop: the call's own deadline should always end it first.
    return await asyncio.wait_for(rpc(request, timeout=timeout), timeout + 5)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_bad_request_is_rejected_with_typed_error(env: Env, case: Bad) -> None:
    request = case.build(env)
    cls, code = case.error
    with pytest.raises(CadenceRpcError) as info:
        await _call(env, case.api, case.method, request, case.timeout)
    err = info.value
    message = _message(err)
    assert (type(err), err.code) == (cls, code), message
    for fragment in case.says:
        assert fragment in message, f"{fragment!r} not in {message!r}"


async def test_case_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


# --- successes that must not be errors ---------------------------------------------------


async def test_empty_polls_return_successful_empty_responses(env: Env) -> None:
    tl = tasklist_pb2.TaskList(name=f"nobody-{uuid.uuid4()}")
    loop = asyncio.get_running_loop()
    began = loop.time()
    decision, activity = await asyncio.gather(
        _call(
            env,
            "worker",
            "PollForDecisionTask",
            K.PollForDecisionTaskRequest(domain=DOMAIN, task_list=tl, identity="t"),
            2.5,
        ),
        _call(
            env,
            "worker",
            "PollForActivityTask",
            K.PollForActivityTaskRequest(domain=DOMAIN, task_list=tl, identity="t"),
            2.5,
        ),
    )
    elapsed = loop.time() - began
    assert decision == K.PollForDecisionTaskResponse()
    assert activity == K.PollForActivityTaskResponse()
    # Answered before the client's deadline (deadline - 1 s), not by the deadline firing.
    assert elapsed < 2.4


async def test_rpcs_without_input_answer(env: Env) -> None:
    info = await _call(env, "workflow", "GetClusterInfo", W.GetClusterInfoRequest(), CALL_TIMEOUT)
    assert info.supported_client_versions.go_sdk
    assert info.supported_client_versions.java_sdk
    attrs = await _call(
        env, "visibility", "GetSearchAttributes", V.GetSearchAttributesRequest(), CALL_TIMEOUT
    )
    assert attrs.keys["WorkflowType"] == visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD
    assert attrs.keys["CustomKeywordField"] == visibility_pb2.INDEXED_VALUE_TYPE_KEYWORD
    health = await _call(env, "meta", "Health", service_meta_pb2.HealthRequest(), CALL_TIMEOUT)
    assert health.ok is True


async def test_deprecated_domain_still_answers_reads(env: Env) -> None:
    described = await _call(
        env, "domain", "DescribeDomain", D.DescribeDomainRequest(name=DEPRECATED), CALL_TIMEOUT
    )
    assert described.domain.status == domain_pb2.DOMAIN_STATUS_DEPRECATED
    listed = await _call(
        env,
        "visibility",
        "ListWorkflowExecutions",
        V.ListWorkflowExecutionsRequest(domain=DEPRECATED),
        CALL_TIMEOUT,
    )
    assert list(listed.executions) == []


async def test_already_started_names_the_running_run(env: Env) -> None:
    req = start_req(workflow_id=env.keeper.workflow_id)
    with pytest.raises(WorkflowExecutionAlreadyStartedError) as info:
        await _call(env, "workflow", "StartWorkflowExecution", req, CALL_TIMEOUT)
    assert info.value.run_id == env.keeper.run_id
    assert env.keeper.workflow_id in _message(info.value)


async def test_second_cancel_request_is_cancellation_already_requested(env: Env) -> None:
    wf = await env.client.start_workflow(
        "EchoWorkflow",
        "c",
        task_list=f"cancel-{uuid.uuid4()}",
        execution_start_to_close_timeout=timedelta(seconds=60),
    )
    first = str(uuid.uuid4())
    await _call(
        env,
        "workflow",
        "RequestCancelWorkflowExecution",
        cancel(env, execution=wf, request_id=first),
        CALL_TIMEOUT,
    )
    # The same request id again is a retry: a no-op success.
    await _call(
        env,
        "workflow",
        "RequestCancelWorkflowExecution",
        cancel(env, execution=wf, request_id=first),
        CALL_TIMEOUT,
    )
    with pytest.raises(CancellationAlreadyRequestedError) as info:
        await _call(
            env,
            "workflow",
            "RequestCancelWorkflowExecution",
            cancel(env, execution=wf, request_id=str(uuid.uuid4())),
            CALL_TIMEOUT,
        )
    assert info.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert "Cancellation already requested" in _message(info.value)
    events = await full_history(env.client, wf)
    check_history(events)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionCancelRequested",
    ]
    await _call(
        env, "workflow", "TerminateWorkflowExecution", terminate(env, execution=wf), CALL_TIMEOUT
    )


# --- worker payloads over 2 MB ----------------------------------------------------------------
#
# Cadence does not reject these calls: the frontend records the activity as failed, with a
# reason naming what was too big and the payload cut to the limit (and a heartbeat answers
# cancel_requested); decision-failure details are truncated; an oversized query answer
# becomes a failed query.

LIMIT = 2 * MB


async def _manual_run(env: Env) -> tuple[common_pb2.WorkflowExecution, str, Any]:
    """A fresh run driven by hand: returns it, its task list and its first decision task."""
    tl = f"manual-{uuid.uuid4()}"
    req = start_req(task_list=tasklist_pb2.TaskList(name=tl))
    started = await _call(env, "workflow", "StartWorkflowExecution", req, CALL_TIMEOUT)
    run = execution(req.workflow_id, started.run_id)
    task = await _call(
        env,
        "worker",
        "PollForDecisionTask",
        K.PollForDecisionTaskRequest(domain=DOMAIN, task_list=tasklist_pb2.TaskList(name=tl)),
        CALL_TIMEOUT,
    )
    assert task.task_token, "the first decision task was not delivered"
    return run, tl, task


async def _started_activity(env: Env) -> tuple[common_pb2.WorkflowExecution, Any]:
    run, tl, task = await _manual_run(env)
    schedule = decision_pb2.Decision(
        schedule_activity_task_decision_attributes=decision_pb2.ScheduleActivityTaskDecisionAttributes(
            activity_id="big",
            activity_type=common_pb2.ActivityType(name="echo"),
            task_list=tasklist_pb2.TaskList(name=tl),
            schedule_to_close_timeout=_dur(30),
        )
    )
    await _call(
        env,
        "worker",
        "RespondDecisionTaskCompleted",
        K.RespondDecisionTaskCompletedRequest(task_token=task.task_token, decisions=[schedule]),
        CALL_TIMEOUT,
    )
    activity = await _call(
        env,
        "worker",
        "PollForActivityTask",
        K.PollForActivityTaskRequest(domain=DOMAIN, task_list=tasklist_pb2.TaskList(name=tl)),
        CALL_TIMEOUT,
    )
    assert activity.activity_id == "big"
    return run, activity


def _oversized(method: str, run: common_pb2.WorkflowExecution, tok: bytes) -> Message:
    big = common_pb2.Payload(data=OVER_LIMIT)
    by_id: dict[str, Any] = {"domain": DOMAIN, "workflow_execution": run, "activity_id": "big"}
    makers: dict[str, Callable[[], Message]] = {
        "RespondActivityTaskCompleted": lambda: K.RespondActivityTaskCompletedRequest(
            task_token=tok, result=big
        ),
        "RespondActivityTaskFailed": lambda: K.RespondActivityTaskFailedRequest(
            task_token=tok, failure=common_pb2.Failure(reason="boom", details=OVER_LIMIT)
        ),
        "RespondActivityTaskCanceled": lambda: K.RespondActivityTaskCanceledRequest(
            task_token=tok, details=big
        ),
        "RecordActivityTaskHeartbeat": lambda: K.RecordActivityTaskHeartbeatRequest(
            task_token=tok, details=big
        ),
        "RespondActivityTaskCompletedByID": lambda: K.RespondActivityTaskCompletedByIDRequest(
            result=big, **by_id
        ),
        "RespondActivityTaskFailedByID": lambda: K.RespondActivityTaskFailedByIDRequest(
            failure=common_pb2.Failure(reason="boom", details=OVER_LIMIT), **by_id
        ),
        "RespondActivityTaskCanceledByID": lambda: K.RespondActivityTaskCanceledByIDRequest(
            details=big, **by_id
        ),
        "RecordActivityTaskHeartbeatByID": lambda: K.RecordActivityTaskHeartbeatByIDRequest(
            details=big, **by_id
        ),
    }
    return makers[method]()


@pytest.mark.parametrize(
    ("method", "reason"),
    [
        ("RespondActivityTaskCompleted", "COMPLETE_RESULT_EXCEEDS_LIMIT"),
        ("RespondActivityTaskFailed", "FAILURE_DETAILS_EXCEEDS_LIMIT"),
        ("RespondActivityTaskCanceled", "CANCEL_DETAILS_EXCEEDS_LIMIT"),
        ("RecordActivityTaskHeartbeat", "HEARTBEAT_EXCEEDS_LIMIT"),
        ("RespondActivityTaskCompletedByID", "COMPLETE_RESULT_EXCEEDS_LIMIT"),
        ("RespondActivityTaskFailedByID", "FAILURE_DETAILS_EXCEEDS_LIMIT"),
        ("RespondActivityTaskCanceledByID", "CANCEL_DETAILS_EXCEEDS_LIMIT"),
        ("RecordActivityTaskHeartbeatByID", "HEARTBEAT_EXCEEDS_LIMIT"),
    ],
)
async def test_activity_payload_over_2mb_fails_the_activity(
    env: Env, method: str, reason: str
) -> None:
    run, activity = await _started_activity(env)
    resp = await _call(env, "worker", method, _oversized(method, run, activity.task_token), 10)
    if "Heartbeat" in method:
        assert resp.cancel_requested is True
    events = await full_history(env.client, run)
    check_history(events)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskCompleted",
        "ActivityTaskScheduled",
        "ActivityTaskStarted",
        "ActivityTaskFailed",
        "DecisionTaskScheduled",
    ]
    failed = events[6].activity_task_failed_event_attributes
    assert failed.failure.reason == reason
    assert failed.failure.details == OVER_LIMIT[:LIMIT]
    # The activity is closed: the original (small) call now finds nothing.
    with pytest.raises(EntityNotExistsError):
        await _call(
            env,
            "worker",
            "RespondActivityTaskCompleted",
            K.RespondActivityTaskCompletedRequest(task_token=activity.task_token),
            CALL_TIMEOUT,
        )
    await _call(
        env, "workflow", "TerminateWorkflowExecution", terminate(env, execution=run), CALL_TIMEOUT
    )


async def test_decision_failed_details_over_2mb_are_truncated(env: Env) -> None:
    run, _tl, task = await _manual_run(env)
    await _call(
        env,
        "worker",
        "RespondDecisionTaskFailed",
        K.RespondDecisionTaskFailedRequest(
            task_token=task.task_token,
            cause=workflow_pb2.DECISION_TASK_FAILED_CAUSE_UNHANDLED_DECISION,
            details=common_pb2.Payload(data=OVER_LIMIT),
        ),
        10,
    )
    events = await full_history(env.client, run)
    check_history(events)
    assert event_types(events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "DecisionTaskStarted",
        "DecisionTaskFailed",
    ]
    assert all(e.ByteSize() < LIMIT + 64 * 1024 for e in events)
    await _call(
        env, "workflow", "TerminateWorkflowExecution", terminate(env, execution=run), CALL_TIMEOUT
    )


async def test_query_answer_over_2mb_fails_the_query(env: Env) -> None:
    run, tl, task = await _manual_run(env)
    await _call(
        env,
        "worker",
        "RespondDecisionTaskCompleted",
        K.RespondDecisionTaskCompletedRequest(task_token=task.task_token),
        CALL_TIMEOUT,
    )

    async def answer_with_too_much() -> None:
        polled = await _call(
            env,
            "worker",
            "PollForDecisionTask",
            K.PollForDecisionTaskRequest(domain=DOMAIN, task_list=tasklist_pb2.TaskList(name=tl)),
            CALL_TIMEOUT,
        )
        assert polled.query.query_type == "q"
        await _call(
            env,
            "worker",
            "RespondQueryTaskCompleted",
            K.RespondQueryTaskCompletedRequest(
                task_token=polled.task_token,
                result=query_pb2.WorkflowQueryResult(
                    result_type=query_pb2.QUERY_RESULT_TYPE_ANSWERED,
                    answer=common_pb2.Payload(data=OVER_LIMIT),
                ),
            ),
            CALL_TIMEOUT,
        )

    answering = asyncio.create_task(answer_with_too_much())
    with pytest.raises(QueryFailedError) as info:
        await _call(env, "workflow", "QueryWorkflow", query(env, execution=run), CALL_TIMEOUT)
    await answering
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Query result exceeds size limit" in _message(info.value)
    await _call(
        env, "workflow", "TerminateWorkflowExecution", terminate(env, execution=run), CALL_TIMEOUT
    )


# --- nothing stored was lost -------------------------------------------------------------


async def test_zz_keeper_survives_bad_input_and_completes(env: Env) -> None:
    """Last in the module: every bad call above has run; the keeper is untouched."""
    # A few more bad calls aimed squarely at the keeper, in case this test runs alone.
    for req_method, req in [
        ("SignalWorkflowExecution", signal(env, signal_input=common_pb2.Payload(data=OVER_LIMIT))),
        ("TerminateWorkflowExecution", terminate(env, details=common_pb2.Payload(data=OVER_LIMIT))),
        ("RequestCancelWorkflowExecution", cancel(env, request_id="not-a-uuid")),
        (
            "StartWorkflowExecution",
            start_req(workflow_id=env.keeper.workflow_id, request_id="nope"),
        ),
    ]:
        with pytest.raises(CadenceRpcError) as info:
            await _call(env, "workflow", req_method, req, CALL_TIMEOUT)
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    before = await full_history(env.client, env.keeper)
    check_history(before)
    assert event_types(before) == ["WorkflowExecutionStarted", "DecisionTaskScheduled"]

    async with worker_for(env.client, reg, task_list=env.keeper_task_list):
        closed = await close_event(env.client, env.keeper)
    assert closed.workflow_execution_completed_event_attributes.result.data == b'"kept"'
    events = await full_history(env.client, env.keeper)
    check_history(events)
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
    started = events[0].workflow_execution_started_event_attributes
    assert started.input.data == b'"kept"'
    # The terminated run stayed closed and untouched too.
    closed_events = await full_history(env.client, env.closed)
    check_history(closed_events)
    assert event_types(closed_events) == [
        "WorkflowExecutionStarted",
        "DecisionTaskScheduled",
        "WorkflowExecutionTerminated",
    ]
    # And the close event of the keeper is what history's close filter returns.
    resp = await _call(
        env,
        "workflow",
        "GetWorkflowExecutionHistory",
        get_history(env, history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT),
        CALL_TIMEOUT,
    )
    assert [e.event_id for e in resp.history.events] == [11]
