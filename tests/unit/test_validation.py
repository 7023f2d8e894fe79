"""`engine.frontend.validation`: one test (or table row) per rule, on real request protos."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from cadence.api.v1 import (
    common_pb2,
    domain_pb2,
    query_pb2,
    service_domain_pb2,
    service_visibility_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    visibility_pb2,
    workflow_pb2,
)
from google.protobuf import duration_pb2, timestamp_pb2

from engine.errors import BadRequestError
from engine.frontend import validation as v

ALLOWED = frozenset({"CustomKeywordField", "CustomIntField", "WorkflowID"})
MB2 = 2 * 1024 * 1024


def dur(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def execution(workflow_id: str = "wf-1", run_id: str = "") -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=workflow_id, run_id=run_id)


def start(**fields: Any) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    base: dict[str, Any] = {
        "domain": "dom",
        "workflow_id": "wf-1",
        "workflow_type": common_pb2.WorkflowType(name="MyWorkflow"),
        "task_list": tasklist_pb2.TaskList(name="tl"),
        "execution_start_to_close_timeout": dur(3600),
        "task_start_to_close_timeout": dur(10),
        "request_id": str(uuid.uuid4()),
        "identity": "worker@host",
    }
    base.update(fields)
    return service_workflow_pb2.StartWorkflowExecutionRequest(**base)


def rejects(fn: Callable[[], object], *fragments: str) -> BadRequestError:
    with pytest.raises(BadRequestError) as info:
        fn()
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message
    return info.value


def check_start(req: service_workflow_pb2.StartWorkflowExecutionRequest) -> v.StartTimeouts:
    return v.validate_start_request(req, ALLOWED)


# --- building blocks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, 0), (0.5, 0), (1.5, 1), (59.999, 59), (-0.5, 0), (-1.5, -1), (86400, 86400)],
)
def test_duration_seconds_truncates_toward_zero(seconds: float, expected: int) -> None:
    assert v.duration_seconds(dur(seconds)) == expected


def test_retention_days_truncates() -> None:
    assert v.retention_days(dur(86400 * 1.9)) == 1
    assert v.retention_days(dur(3600)) == 0


def test_check_payload_size() -> None:
    v.check_payload_size("Input", b"x" * MB2)
    rejects(lambda: v.check_payload_size("Input", b"x" * (MB2 + 1)), "Input exceeds size limit")


def test_check_request_size() -> None:
    ok = start(input=common_pb2.Payload(data=b"x" * (MB2 - 1024)))
    v.check_request_size(ok)
    big = service_workflow_pb2.SignalWorkflowExecutionRequest(
        domain="d", signal_input=common_pb2.Payload(data=b"x" * MB2)
    )
    rejects(lambda: v.check_request_size(big), "Request exceeds size limit")


@pytest.mark.parametrize("good", ["abc", "ABC-123", "a", "-", "x" * 1000])
def test_domain_name_accepts(good: str) -> None:
    v.check_domain_name(good)


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("", "Domain not set"),
        ("has space", "alphanumeric and dash"),
        ("under_score", "alphanumeric and dash"),
        ("dot.ted", "alphanumeric and dash"),
        ("ünïcode", "alphanumeric and dash"),
        ("x" * 1001, "Domain length exceeds limit"),
    ],
)
def test_domain_name_rejects(bad: str, fragment: str) -> None:
    rejects(lambda: v.check_domain_name(bad), fragment)


@pytest.mark.parametrize(
    "good",
    [str(uuid.uuid4()), str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}", uuid.uuid4().hex],
)
def test_request_id_accepts_uuid_forms(good: str) -> None:
    v.check_request_id(good, required=True)


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", str(uuid.uuid4())[:-1], "x" * 1001])
def test_request_id_rejects_non_uuids(bad: str) -> None:
    rejects(lambda: v.check_request_id(bad, required=False), "equest")


def test_request_id_required_vs_optional() -> None:
    v.check_request_id("", required=False)
    rejects(lambda: v.check_request_id("", required=True), 'requestId "" is not a valid UUID')


def test_identity_length() -> None:
    v.check_identity("x" * 1000)
    rejects(lambda: v.check_identity("x" * 1001), "Identity length exceeds limit")


def test_page_size() -> None:
    v.check_page_size(0)
    v.check_page_size(1000)
    rejects(lambda: v.check_page_size(-1), "PageSize")


def test_task_token_checks() -> None:
    rejects(lambda: v.check_task_token(b""), "Task token not set")
    v.check_task_token(b"opaque")

    def decode(raw: bytes) -> object:
        return raw.decode("ascii")

    v.check_task_token(b"fine", decode)
    err = rejects(lambda: v.check_task_token(b"\xff\xfe", decode), "Invalid TaskToken")
    assert isinstance(err.__cause__, UnicodeDecodeError)

    def strict(raw: bytes) -> object:
        raise BadRequestError("token from another cluster")

    rejects(lambda: v.check_task_token(b"x", strict), "token from another cluster")


# --- retry policy ---------------------------------------------------------------------------


def policy(**fields: Any) -> common_pb2.RetryPolicy:
    base: dict[str, Any] = {
        "initial_interval": dur(1),
        "backoff_coefficient": 2.0,
        "maximum_interval": dur(10),
        "maximum_attempts": 3,
    }
    base.update(fields)
    return common_pb2.RetryPolicy(**base)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"maximum_interval": dur(0)},  # unset maximum: no cap
        {"backoff_coefficient": 1.0},
        {"maximum_attempts": 0, "expiration_interval": dur(60)},
        {"maximum_interval": dur(1)},  # equal to initial
    ],
)
def test_retry_policy_accepts(fields: dict[str, Any]) -> None:
    v.validate_retry_policy(policy(**fields))


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"initial_interval": dur(0)}, "InitialIntervalInSeconds must be greater than 0"),
        ({"initial_interval": dur(0.5)}, "InitialIntervalInSeconds must be greater than 0"),
        ({"backoff_coefficient": 0.99}, "BackoffCoefficient cannot be less than 1"),
        ({"backoff_coefficient": 0.0}, "BackoffCoefficient cannot be less than 1"),
        ({"maximum_interval": dur(-5)}, "MaximumIntervalInSeconds cannot be less than 0"),
        (
            {"initial_interval": dur(5), "maximum_interval": dur(2)},
            "MaximumIntervalInSeconds cannot be less than InitialIntervalInSeconds",
        ),
        ({"maximum_attempts": -1}, "MaximumAttempts cannot be less than 0"),
        ({"expiration_interval": dur(-1)}, "ExpirationIntervalInSeconds cannot be less than 0"),
        ({"maximum_attempts": 0}, "are both 0"),
        ({"maximum_attempts": 0, "expiration_interval": dur(0.9)}, "are both 0"),
    ],
)
def test_retry_policy_rejects(fields: dict[str, Any], fragment: str) -> None:
    rejects(lambda: v.validate_retry_policy(policy(**fields)), fragment)


# --- cron -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good", ["* * * * *", "*/5 * * * *", "0 12 * * 1-5", " 15 3 1 * * ", "@daily", "@hourly"]
)
def test_cron_accepts(good: str) -> None:
    v.validate_cron_schedule(good)


@pytest.mark.parametrize(
    "bad",
    ["", "* * * *", "* * * * * *", "0 0 * * * * 2030", "61 * * * *", "hello", "@every 1h", "@x"],
)
def test_cron_rejects(bad: str) -> None:
    rejects(lambda: v.validate_cron_schedule(bad), "Invalid CronSchedule")


# --- search attributes and memo -------------------------------------------------------------


def attrs(**values: bytes) -> common_pb2.SearchAttributes:
    return common_pb2.SearchAttributes(
        indexed_fields={k: common_pb2.Payload(data=val) for k, val in values.items()}
    )


def test_search_attributes_accepts_allowed_json() -> None:
    v.validate_search_attributes(attrs(CustomKeywordField=b'"blue"', CustomIntField=b"42"), ALLOWED)


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"Unknown": b'"x"'}, "Unknown is not a valid search attribute key"),
        ({"WorkflowID": b'"x"'}, "WorkflowID is read-only"),
        ({"CustomKeywordField": b"not json"}, "CustomKeywordField value is not valid JSON"),
        ({"CustomKeywordField": b""}, "not valid JSON"),
        ({"CustomKeywordField": b'"' + b"x" * 3000 + b'"'}, "size limit exceed"),
    ],
)
def test_search_attributes_rejects(values: dict[str, bytes], fragment: str) -> None:
    rejects(lambda: v.validate_search_attributes(attrs(**values), ALLOWED), fragment)


def test_search_attributes_key_count_and_total_size() -> None:
    many = {f"K{i}": b"1" for i in range(101)}
    rejects(lambda: v.validate_search_attributes(attrs(**many), set(many)), "number of keys 101")
    big = {f"K{i}": b'"' + b"x" * 2000 + b'"' for i in range(25)}
    rejects(lambda: v.validate_search_attributes(attrs(**big), set(big)), "total size")


def test_memo_blob_limit() -> None:
    v.validate_memo(common_pb2.Memo(fields={"a": common_pb2.Payload(data=b"x" * MB2)}))
    memo = common_pb2.Memo(fields={"a": common_pb2.Payload(data=b"x" * (MB2 + 1))})
    rejects(lambda: v.validate_memo(memo), "Memo field a exceeds size limit")


# --- StartWorkflowExecution -----------------------------------------------------------------


def test_start_valid_returns_timeouts() -> None:
    assert check_start(start()) == v.StartTimeouts(execution_seconds=3600, task_seconds=10)


@pytest.mark.parametrize(
    ("execution", "task", "expected_task"),
    [
        (3600, 600, 240),  # capped at the 240 s maximum
        (30, 60, 30),  # capped at the execution timeout
        (3600, 240, 240),
        (100.9, 10.9, 10),  # truncated to whole seconds
    ],
)
def test_start_task_timeout_is_normalised(
    execution: float, task: float, expected_task: int
) -> None:
    req = start(
        execution_start_to_close_timeout=dur(execution), task_start_to_close_timeout=dur(task)
    )
    before = req.SerializeToString()
    got = check_start(req)
    assert got.task_seconds == expected_task
    assert got.execution_seconds == int(execution)
    assert req.SerializeToString() == before, "the request itself is left untouched"


START_REJECTIONS: list[tuple[dict[str, Any], str]] = [
    ({"domain": ""}, "Domain not set on request."),
    ({"domain": "d" * 1001}, "Domain length exceeds limit."),
    ({"workflow_id": ""}, "WorkflowId is not set on request."),
    ({"workflow_id": "w" * 1001}, "WorkflowID length exceeds limit."),
    ({"request_id": ""}, "is not a valid UUID"),
    ({"request_id": "abc"}, 'requestId "abc" is not a valid UUID'),
    ({"workflow_type": common_pb2.WorkflowType(name="")}, "WorkflowType is not set"),
    ({"workflow_type": common_pb2.WorkflowType(name="t" * 1001)}, "WorkflowType length"),
    ({"task_list": tasklist_pb2.TaskList(name="")}, "TaskList is not set on request."),
    ({"task_list": tasklist_pb2.TaskList(name="t" * 1001)}, "TaskList length exceeds limit."),
    ({"execution_start_to_close_timeout": dur(0)}, "ExecutionStartToCloseTimeoutSeconds"),
    ({"execution_start_to_close_timeout": dur(0.5)}, "ExecutionStartToCloseTimeoutSeconds"),
    ({"execution_start_to_close_timeout": dur(-10)}, "ExecutionStartToCloseTimeoutSeconds"),
    ({"task_start_to_close_timeout": dur(0)}, "TaskStartToCloseTimeoutSeconds"),
    ({"task_start_to_close_timeout": dur(0.5)}, "TaskStartToCloseTimeoutSeconds"),
    ({"delay_start": dur(-1)}, "DelayStartSeconds"),
    ({"jitter_start": dur(-1)}, "JitterStartSeconds is not set on request (negative)"),
    ({"cron_schedule": "every day"}, "Invalid CronSchedule."),
    ({"cron_schedule": "*/5 * * * *", "jitter_start": dur(301)}, "larger than cron duration"),
    ({"retry_policy": common_pb2.RetryPolicy()}, "InitialIntervalInSeconds"),
    ({"workflow_id_reuse_policy": 99}, "Invalid WorkflowIdReusePolicy"),
    ({"cron_overlap_policy": 7}, "Invalid CronOverlapPolicy"),
    ({"identity": "i" * 1001}, "Identity length exceeds limit."),
    ({"search_attributes": attrs(Nope=b"1")}, "Nope is not a valid search attribute key"),
    ({"input": common_pb2.Payload(data=b"x" * (MB2 + 1))}, "exceeds size limit"),
]


@pytest.mark.parametrize(("fields", "fragment"), START_REJECTIONS)
def test_start_rejects(fields: dict[str, Any], fragment: str) -> None:
    rejects(lambda: check_start(start(**fields)), fragment)


def test_start_rejects_missing_messages() -> None:
    req = start()
    req.ClearField("workflow_type")
    rejects(lambda: check_start(req), "WorkflowType is not set")
    req = start()
    req.ClearField("task_list")
    rejects(lambda: check_start(req), "TaskList is not set")
    req = start()
    req.ClearField("execution_start_to_close_timeout")
    rejects(lambda: check_start(req), "ExecutionStartToCloseTimeoutSeconds")


def test_start_accepts_optional_features() -> None:
    check_start(
        start(
            retry_policy=policy(),
            cron_schedule="*/5 * * * *",
            jitter_start=dur(300),
            delay_start=dur(60),
            workflow_id_reuse_policy=workflow_pb2.WORKFLOW_ID_REUSE_POLICY_TERMINATE_IF_RUNNING,
            cron_overlap_policy=workflow_pb2.CRON_OVERLAP_POLICY_BUFFER_ONE,
            memo=common_pb2.Memo(fields={"m": common_pb2.Payload(data=b"1")}),
            search_attributes=attrs(CustomIntField=b"1"),
        )
    )


def test_start_input_and_memo_share_one_blob_limit() -> None:
    half = b"x" * (MB2 // 2 + 1)
    req = start(
        input=common_pb2.Payload(data=half),
        memo=common_pb2.Memo(fields={"m": common_pb2.Payload(data=half)}),
    )
    rejects(lambda: check_start(req), "Input and memo exceed size limit")


def test_start_rejects_whole_request_over_limit() -> None:
    # Every blob is within its own limit; the headers push the whole request over.
    req = start(
        input=common_pb2.Payload(data=b"x" * (MB2 - 100)),
        header=common_pb2.Header(fields={"h": common_pb2.Payload(data=b"z" * 1000)}),
    )
    rejects(lambda: check_start(req), "Request exceeds size limit")


def test_start_reports_fields_in_cadence_order() -> None:
    # Domain first, then workflow id, then request id: the first broken field wins.
    rejects(lambda: check_start(start(domain="", workflow_id="", request_id="x")), "Domain")
    rejects(lambda: check_start(start(workflow_id="", request_id="x")), "WorkflowId")


# --- SignalWithStart and Signal -------------------------------------------------------------


def signal_with_start(
    **fields: Any,
) -> service_workflow_pb2.SignalWithStartWorkflowExecutionRequest:
    base: dict[str, Any] = {"start_request": start(), "signal_name": "sig"}
    base.update(fields)
    return service_workflow_pb2.SignalWithStartWorkflowExecutionRequest(**base)


def test_signal_with_start() -> None:
    got = v.validate_signal_with_start_request(signal_with_start(), ALLOWED)
    assert got.task_seconds == 10
    rejects(
        lambda: v.validate_signal_with_start_request(signal_with_start(signal_name=""), ALLOWED),
        "SignalName is not set",
    )
    rejects(
        lambda: v.validate_signal_with_start_request(
            signal_with_start(start_request=start(request_id="nope")), ALLOWED
        ),
        "not a valid UUID",
    )
    rejects(
        lambda: v.validate_signal_with_start_request(
            signal_with_start(signal_input=common_pb2.Payload(data=b"x" * (MB2 + 1))), ALLOWED
        ),
        "exceeds size limit",
    )
    rejects(
        lambda: v.validate_signal_with_start_request(
            signal_with_start(start_request=start(cron_schedule="bad")), ALLOWED
        ),
        "Invalid CronSchedule",
    )


def signal(**fields: Any) -> service_workflow_pb2.SignalWorkflowExecutionRequest:
    base: dict[str, Any] = {"domain": "dom", "workflow_execution": execution(), "signal_name": "s"}
    base.update(fields)
    return service_workflow_pb2.SignalWorkflowExecutionRequest(**base)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"domain": ""}, "Domain not set"),
        ({"workflow_execution": execution("")}, "WorkflowId is not set"),
        ({"workflow_execution": execution(run_id="not-uuid")}, "Invalid RunId."),
        ({"signal_name": ""}, "SignalName is not set on request."),
        ({"signal_name": "s" * 1001}, "SignalName length exceeds limit."),
        ({"request_id": "nope"}, "not a valid UUID"),
        ({"identity": "i" * 1001}, "Identity length"),
        ({"signal_input": common_pb2.Payload(data=b"x" * (MB2 + 1))}, "exceeds size limit"),
        ({"control": b"x" * (MB2 + 1)}, "exceeds size limit"),
    ],
)
def test_signal_rejects(fields: dict[str, Any], fragment: str) -> None:
    rejects(lambda: v.validate_signal_request(signal(**fields)), fragment)


def test_signal_accepts() -> None:
    v.validate_signal_request(signal())
    v.validate_signal_request(
        signal(request_id=str(uuid.uuid4()), workflow_execution=execution(run_id=str(uuid.uuid4())))
    )
    req = signal()
    req.ClearField("workflow_execution")
    rejects(lambda: v.validate_signal_request(req), "Execution is not set on request.")


# --- other WorkflowAPI requests -------------------------------------------------------------


def test_request_cancel() -> None:
    ok = service_workflow_pb2.RequestCancelWorkflowExecutionRequest(
        domain="d", workflow_execution=execution(), request_id=str(uuid.uuid4())
    )
    v.validate_request_cancel_request(ok)
    cases: list[tuple[dict[str, object], str]] = [
        ({"domain": ""}, "Domain not set"),
        ({"request_id": "x"}, "not a valid UUID"),
        ({"first_execution_run_id": "x"}, "Invalid FirstExecutionRunId."),
        ({"workflow_execution": execution("")}, "WorkflowId is not set"),
    ]
    for fields, fragment in cases:
        req = service_workflow_pb2.RequestCancelWorkflowExecutionRequest()
        req.CopyFrom(ok)
        for name, value in fields.items():
            if isinstance(value, common_pb2.WorkflowExecution):
                getattr(req, name).CopyFrom(value)
            else:
                setattr(req, name, value)
        rejects(partial(v.validate_request_cancel_request, req), fragment)


def test_terminate() -> None:
    v.validate_terminate_request(
        service_workflow_pb2.TerminateWorkflowExecutionRequest(
            domain="d", workflow_execution=execution(), reason="r"
        )
    )
    rejects(
        lambda: v.validate_terminate_request(
            service_workflow_pb2.TerminateWorkflowExecutionRequest(
                domain="d", workflow_execution=execution(), first_execution_run_id="x"
            )
        ),
        "FirstExecutionRunId",
    )
    rejects(
        lambda: v.validate_terminate_request(
            service_workflow_pb2.TerminateWorkflowExecutionRequest(domain="d")
        ),
        "Execution is not set",
    )


def test_reset() -> None:
    ok = service_workflow_pb2.ResetWorkflowExecutionRequest(
        domain="d", workflow_execution=execution(), decision_finish_event_id=4
    )
    v.validate_reset_request(ok)
    ok.decision_finish_event_id = 1
    rejects(lambda: v.validate_reset_request(ok), "Decision finish ID must be > 1")


def test_get_history_needs_workflow_id_and_sane_page_size() -> None:
    req = service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
        domain="d", workflow_execution=execution()
    )
    v.validate_get_history_request(req)
    req.page_size = -1
    rejects(lambda: v.validate_get_history_request(req), "PageSize")
    req = service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
        domain="d", workflow_execution=execution("")
    )
    rejects(lambda: v.validate_get_history_request(req), "WorkflowId is not set")


def test_describe_needs_workflow_id() -> None:
    v.validate_describe_request(
        service_workflow_pb2.DescribeWorkflowExecutionRequest(
            domain="d", workflow_execution=execution()
        )
    )
    rejects(
        lambda: v.validate_describe_request(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(domain="d")
        ),
        "Execution is not set",
    )


def test_query_workflow() -> None:
    def query(**fields: Any) -> service_workflow_pb2.QueryWorkflowRequest:
        base: dict[str, Any] = {
            "domain": "d",
            "workflow_execution": execution(),
            "query": query_pb2.WorkflowQuery(query_type="state"),
        }
        base.update(fields)
        return service_workflow_pb2.QueryWorkflowRequest(**base)

    v.validate_query_request(query())
    req = query()
    req.ClearField("query")
    rejects(lambda: v.validate_query_request(req), "WorkflowQuery is not set")
    rejects(
        lambda: v.validate_query_request(query(query=query_pb2.WorkflowQuery(query_type=""))),
        "QueryType is not set",
    )
    rejects(lambda: v.validate_query_request(query(query_reject_condition=9)), "Invalid Query")
    rejects(lambda: v.validate_query_request(query(query_consistency_level=9)), "Invalid Query")


def test_task_list_requests() -> None:
    tl = tasklist_pb2.TaskList(name="tl")
    ok = service_workflow_pb2.DescribeTaskListRequest(
        domain="d", task_list=tl, task_list_type=tasklist_pb2.TASK_LIST_TYPE_DECISION
    )
    v.validate_describe_task_list_request(ok)
    rejects(
        lambda: v.validate_describe_task_list_request(
            service_workflow_pb2.DescribeTaskListRequest(domain="d", task_list=tl)
        ),
        "TaskListType is not set",
    )
    rejects(
        lambda: v.validate_describe_task_list_request(
            service_workflow_pb2.DescribeTaskListRequest(
                domain="d", task_list_type=tasklist_pb2.TASK_LIST_TYPE_DECISION
            )
        ),
        "TaskList is not set",
    )
    v.validate_list_task_list_partitions_request(
        service_workflow_pb2.ListTaskListPartitionsRequest(domain="d", task_list=tl)
    )
    rejects(
        lambda: v.validate_get_task_lists_by_domain_request(
            service_workflow_pb2.GetTaskListsByDomainRequest()
        ),
        "Domain not set",
    )


def test_execution_only_requests() -> None:
    for cls in (
        service_workflow_pb2.RestartWorkflowExecutionRequest,
        service_workflow_pb2.RefreshWorkflowTasksRequest,
        service_workflow_pb2.DiagnoseWorkflowExecutionRequest,
        service_worker_pb2.ResetStickyTaskListRequest,
    ):
        v.validate_execution_request(cls(domain="d", workflow_execution=execution()))
        rejects(partial(v.validate_execution_request, cls(domain="d")), "Execution is not set")
        rejects(
            partial(v.validate_execution_request, cls(workflow_execution=execution())),
            "Domain not set",
        )


# --- WorkerAPI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls",
    [service_worker_pb2.PollForDecisionTaskRequest, service_worker_pb2.PollForActivityTaskRequest],
)
def test_polls_need_domain_and_task_list(cls: Any) -> None:
    tl = tasklist_pb2.TaskList(name="tl")
    v.validate_poll_request(cls(domain="d", task_list=tl, identity="w"))
    rejects(lambda: v.validate_poll_request(cls(domain="d")), "TaskList is not set")
    rejects(
        lambda: v.validate_poll_request(cls(domain="d", task_list=tasklist_pb2.TaskList())),
        "TaskList is not set",
    )
    rejects(lambda: v.validate_poll_request(cls(task_list=tl)), "Domain not set")
    rejects(
        lambda: v.validate_poll_request(cls(domain="d", task_list=tl, identity="i" * 1001)),
        "Identity length",
    )


@pytest.mark.parametrize(
    ("fn", "cls"),
    [
        (
            v.validate_decision_completed_request,
            service_worker_pb2.RespondDecisionTaskCompletedRequest,
        ),
        (v.validate_decision_failed_request, service_worker_pb2.RespondDecisionTaskFailedRequest),
        (v.validate_activity_response, service_worker_pb2.RespondActivityTaskCompletedRequest),
        (v.validate_activity_response, service_worker_pb2.RespondActivityTaskFailedRequest),
        (v.validate_activity_response, service_worker_pb2.RespondActivityTaskCanceledRequest),
        (v.validate_activity_response, service_worker_pb2.RecordActivityTaskHeartbeatRequest),
    ],
)
def test_token_requests(fn: Any, cls: Any) -> None:
    fn(cls(task_token=b"tok", identity="w"))
    rejects(lambda: fn(cls(identity="w")), "Task token not set")
    rejects(lambda: fn(cls(task_token=b"tok", identity="i" * 1001)), "Identity length")

    def decode(raw: bytes) -> object:
        raise ValueError("garbage")

    rejects(lambda: fn(cls(task_token=b"tok"), decode), "Invalid TaskToken")


def test_decision_completed_does_not_reject_big_decisions() -> None:
    # Oversized decision blobs fail the workflow in history, not the call.
    req = service_worker_pb2.RespondDecisionTaskCompletedRequest(
        task_token=b"tok", execution_context=b"x" * (MB2 + 1)
    )
    v.validate_decision_completed_request(req)


def test_respond_query_task_completed_needs_token() -> None:
    v.validate_query_completed_request(
        service_worker_pb2.RespondQueryTaskCompletedRequest(task_token=b"t")
    )
    rejects(
        lambda: v.validate_query_completed_request(
            service_worker_pb2.RespondQueryTaskCompletedRequest()
        ),
        "Task token not set",
    )


@pytest.mark.parametrize(
    "cls",
    [
        service_worker_pb2.RespondActivityTaskCompletedByIDRequest,
        service_worker_pb2.RespondActivityTaskFailedByIDRequest,
        service_worker_pb2.RespondActivityTaskCanceledByIDRequest,
        service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest,
    ],
)
def test_by_id_requests(cls: Any) -> None:
    v.validate_activity_by_id(cls(domain="d", workflow_execution=execution(), activity_id="a1"))
    rejects(
        lambda: v.validate_activity_by_id(cls(domain="d", workflow_execution=execution())),
        "ActivityID is not set",
    )
    rejects(lambda: v.validate_activity_by_id(cls(domain="d", activity_id="a")), "Execution")


# --- VisibilityAPI --------------------------------------------------------------------------


def window(earliest: int | None = 0, latest: int | None = 10) -> visibility_pb2.StartTimeFilter:
    flt = visibility_pb2.StartTimeFilter()
    if earliest is not None:
        flt.earliest_time.CopyFrom(timestamp_pb2.Timestamp(seconds=earliest))
    if latest is not None:
        flt.latest_time.CopyFrom(timestamp_pb2.Timestamp(seconds=latest))
    return flt


@pytest.mark.parametrize(
    ("fn", "cls"),
    [
        (v.validate_list_open_request, service_visibility_pb2.ListOpenWorkflowExecutionsRequest),
        (
            v.validate_list_closed_request,
            service_visibility_pb2.ListClosedWorkflowExecutionsRequest,
        ),
    ],
)
def test_list_open_and_closed(fn: Any, cls: Any) -> None:
    fn(cls(domain="d", start_time_filter=window()))
    fn(cls(domain="d", start_time_filter=window(5, 5)))
    rejects(lambda: fn(cls(domain="d")), "StartTimeFilter is required")
    rejects(lambda: fn(cls(domain="d", start_time_filter=window(None, 5))), "EarliestTime")
    rejects(lambda: fn(cls(domain="d", start_time_filter=window(5, None))), "LatestTime")
    rejects(lambda: fn(cls(domain="d", start_time_filter=window(6, 5))), "should not be larger")
    rejects(lambda: fn(cls(domain="d", page_size=-1, start_time_filter=window())), "PageSize")
    rejects(lambda: fn(cls(start_time_filter=window())), "Domain not set")


def test_list_closed_status_filter() -> None:
    req = service_visibility_pb2.ListClosedWorkflowExecutionsRequest(
        domain="d",
        start_time_filter=window(),
        status_filter=visibility_pb2.StatusFilter(
            status=workflow_pb2.WORKFLOW_EXECUTION_CLOSE_STATUS_FAILED
        ),
    )
    v.validate_list_closed_request(req)
    req.status_filter.status = 42  # type: ignore[assignment]
    rejects(lambda: v.validate_list_closed_request(req), "Invalid CloseStatus")


@pytest.mark.parametrize(
    "cls",
    [
        service_visibility_pb2.ListWorkflowExecutionsRequest,
        service_visibility_pb2.ScanWorkflowExecutionsRequest,
        service_visibility_pb2.ListArchivedWorkflowExecutionsRequest,
    ],
)
def test_list_by_query(cls: Any) -> None:
    v.validate_list_request(cls(domain="d", query="WorkflowType = 'x'"))
    rejects(lambda: v.validate_list_request(cls(domain="d", page_size=-5)), "PageSize")
    rejects(lambda: v.validate_list_request(cls()), "Domain not set")


def test_count() -> None:
    v.validate_count_request(service_visibility_pb2.CountWorkflowExecutionsRequest(domain="d"))
    rejects(
        lambda: v.validate_count_request(service_visibility_pb2.CountWorkflowExecutionsRequest()),
        "Domain not set",
    )


# --- DomainAPI ------------------------------------------------------------------------------


def test_register_domain_retention() -> None:
    req = service_domain_pb2.RegisterDomainRequest(name="good-name")
    assert v.validate_register_domain_request(req) == v.DEFAULT_RETENTION_DAYS
    assert v.validate_register_domain_request(req, default_retention_days=7) == 7
    req.workflow_execution_retention_period.CopyFrom(dur(86400 * 2.5))
    assert v.validate_register_domain_request(req) == 2
    req.workflow_execution_retention_period.CopyFrom(dur(3600))
    rejects(lambda: v.validate_register_domain_request(req), "valid retention period")
    req.workflow_execution_retention_period.CopyFrom(dur(86400 * 31))
    rejects(lambda: v.validate_register_domain_request(req), "RetentionDays is invalid")
    assert v.validate_register_domain_request(req, max_retention_days=60) == 31


def test_register_domain_name_and_archival() -> None:
    rejects(
        lambda: v.validate_register_domain_request(service_domain_pb2.RegisterDomainRequest()),
        "Domain not set",
    )
    rejects(
        lambda: v.validate_register_domain_request(
            service_domain_pb2.RegisterDomainRequest(name="bad name")
        ),
        "alphanumeric and dash",
    )
    rejects(
        lambda: v.validate_register_domain_request(
            service_domain_pb2.RegisterDomainRequest(
                name="ok",
                history_archival_status=9,  # type: ignore[arg-type]  # out of range on purpose
            )
        ),
        "Invalid HistoryArchivalStatus",
    )
    v.validate_register_domain_request(
        service_domain_pb2.RegisterDomainRequest(
            name="ok", visibility_archival_status=domain_pb2.ARCHIVAL_STATUS_ENABLED
        )
    )


def test_other_domain_requests() -> None:
    v.validate_describe_domain_request(service_domain_pb2.DescribeDomainRequest(name="x"))
    v.validate_describe_domain_request(service_domain_pb2.DescribeDomainRequest(id="x"))
    rejects(
        lambda: v.validate_describe_domain_request(service_domain_pb2.DescribeDomainRequest()),
        "Domain not set",
    )
    rejects(
        lambda: v.validate_update_domain_request(service_domain_pb2.UpdateDomainRequest()),
        "Domain not set",
    )
    for cls in (service_domain_pb2.DeprecateDomainRequest, service_domain_pb2.DeleteDomainRequest):
        v.validate_domain_name_request(cls(name="x"))
        rejects(partial(v.validate_domain_name_request, cls()), "Domain not set")
    v.validate_list_domains_request(service_domain_pb2.ListDomainsRequest(page_size=0))
    rejects(
        lambda: v.validate_list_domains_request(
            service_domain_pb2.ListDomainsRequest(page_size=-1)
        ),
        "PageSize",
    )
