"""Request validation for the frontend: pure checks that raise `BadRequestError`.

One `validate_*` function per request of WorkflowAPI, WorkerAPI, VisibilityAPI and DomainAPI
that carries user input. Each raises `BadRequestError` naming the offending field, with
Cadence's own message where Cadence has one (`service/frontend/validate/errors.go`,
`common/util.go`), so clients and tests written against Cadence see the same text. Checks
run in Cadence's order, so the first error reported is the one Cadence would report.

Where Cadence normalises instead of rejecting (the decision task timeout cap, the default
retention), the function returns the normalised value and leaves the request untouched.

Nothing here does I/O: domain existence, token decoding and the search-attribute allow-list
belong to other modules and come in as arguments. Durations are truncated to whole seconds
as Cadence does on the wire (a 0.5 s timeout is 0 s, hence invalid).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

from cadence.api.v1 import (
    common_pb2,
    domain_pb2,
    history_pb2,
    query_pb2,
    service_domain_pb2,
    service_visibility_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
    workflow_pb2,
)
from google.protobuf.message import Message

from engine.errors import BadRequestError, quote
from engine.execution.checks import cron_period_seconds, cron_problem
from engine.execution.protos import MAX_DURATION_SECONDS, retry_policy_problem
from engine.frontend.values import check_values
from engine.visibility.attributes import value_problem

# --- limits (Cadence's dynamic-config defaults) ---------------------------------------------

# BlobSizeLimitError: any single payload (input, memo, signal, details) above it is rejected.
BLOB_SIZE_LIMIT: Final = 2 * 1024 * 1024
# A whole client request above this is rejected before any other work.
REQUEST_SIZE_LIMIT: Final = 2 * 1024 * 1024
# {Domain,WorkflowID,WorkflowType,TaskList,SignalName,RequestID,Identity}MaxLength.
MAX_ID_LENGTH: Final = 1000
# MaxDecisionStartToCloseSeconds: the decision task timeout is capped here.
MAX_TASK_TIMEOUT_SECONDS: Final = 240
# SearchAttributes{NumberOfKeys,SizeOfValue,TotalSize}Limit.
MAX_SEARCH_ATTRIBUTE_KEYS: Final = 100
MAX_SEARCH_ATTRIBUTE_VALUE_BYTES: Final = 2 * 1024
MAX_SEARCH_ATTRIBUTES_TOTAL_BYTES: Final = 40 * 1024
# Domain retention range (MinRetentionDays/MaxRetentionDays) and the CLI's default.
DEFAULT_RETENTION_DAYS: Final = 3
MIN_RETENTION_DAYS: Final = 1
MAX_RETENTION_DAYS: Final = 30

SECONDS_PER_DAY: Final = 86_400

# Cadence's domain-name rule (common/domain/handler.go).
DOMAIN_NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9-]+$")

# System search attributes are written by the server only; a client may never set them.
SYSTEM_SEARCH_ATTRIBUTES: Final = frozenset(
    {
        "DomainID",
        "WorkflowID",
        "RunID",
        "WorkflowType",
        "StartTime",
        "ExecutionTime",
        "CloseTime",
        "CloseStatus",
        "HistoryLength",
        "TaskList",
        "IsCron",
        "NumClusters",
        "UpdateTime",
        "ExecutionStatus",
        "ShardID",
        "CronSchedule",
        "ClusterAttributeScope",
        "ClusterAttributeName",
    }
)


class _HasSeconds(Protocol):
    """A `google.protobuf.Duration` as far as validation needs it."""

    seconds: int


class _Message(Protocol):
    def ByteSize(self) -> int: ...


# The request types that validators shared by several RPCs accept.
ExecutionRequest: TypeAlias = (
    service_workflow_pb2.RestartWorkflowExecutionRequest
    | service_workflow_pb2.RefreshWorkflowTasksRequest
    | service_workflow_pb2.DiagnoseWorkflowExecutionRequest
    | service_worker_pb2.ResetStickyTaskListRequest
)
PollRequest: TypeAlias = (
    service_worker_pb2.PollForDecisionTaskRequest | service_worker_pb2.PollForActivityTaskRequest
)
ActivityResponse: TypeAlias = (
    service_worker_pb2.RespondActivityTaskCompletedRequest
    | service_worker_pb2.RespondActivityTaskFailedRequest
    | service_worker_pb2.RespondActivityTaskCanceledRequest
    | service_worker_pb2.RecordActivityTaskHeartbeatRequest
)
ActivityByIdRequest: TypeAlias = (
    service_worker_pb2.RespondActivityTaskCompletedByIDRequest
    | service_worker_pb2.RespondActivityTaskFailedByIDRequest
    | service_worker_pb2.RespondActivityTaskCanceledByIDRequest
    | service_worker_pb2.RecordActivityTaskHeartbeatByIDRequest
)
TokenRequest: TypeAlias = (
    ActivityResponse
    | service_worker_pb2.RespondDecisionTaskCompletedRequest
    | service_worker_pb2.RespondDecisionTaskFailedRequest
)
StartTimeRequest: TypeAlias = (
    service_visibility_pb2.ListOpenWorkflowExecutionsRequest
    | service_visibility_pb2.ListClosedWorkflowExecutionsRequest
)
ListRequest: TypeAlias = (
    service_visibility_pb2.ListWorkflowExecutionsRequest
    | service_visibility_pb2.ScanWorkflowExecutionsRequest
    | service_visibility_pb2.ListArchivedWorkflowExecutionsRequest
)
DomainNameRequest: TypeAlias = (
    service_domain_pb2.DeprecateDomainRequest | service_domain_pb2.DeleteDomainRequest
)

# Decodes an opaque task token; raises on garbage. Owned by the token module.
TokenDecoder = Callable[[bytes], object]


@dataclass(frozen=True, slots=True)
class StartTimeouts:
    """A start request's timeouts in whole seconds, after Cadence's normalisation."""

    execution_seconds: int
    # min(requested, MAX_TASK_TIMEOUT_SECONDS, execution_seconds)
    task_seconds: int


# --- building blocks ------------------------------------------------------------------------


def duration_seconds(d: _HasSeconds) -> int:
    """Whole seconds of a Duration, truncated toward zero (Cadence keeps int32 seconds)."""
    # Duration normalises seconds and nanos to the same sign, so dropping nanos truncates
    # toward zero for negative durations too (-0.5 s -> 0). Longer than the engine keeps:
    # clamped, as check_values clamps the request itself.
    return min(int(d.seconds), MAX_DURATION_SECONDS)


def retention_days(d: _HasSeconds) -> int:
    """A retention Duration in whole days, truncated, as Cadence stores it."""
    return duration_seconds(d) // SECONDS_PER_DAY


def check_payload_size(name: str, data: bytes, limit: int = BLOB_SIZE_LIMIT) -> None:
    """Reject one blob above `limit` bytes."""
    if len(data) > limit:
        raise BadRequestError(f"{name} exceeds size limit.")


def check_request_size(request: _Message, limit: int = REQUEST_SIZE_LIMIT) -> None:
    """Reject a whole request whose serialized size is above `limit` bytes."""
    if request.ByteSize() > limit:
        raise BadRequestError("Request exceeds size limit.")


def check_domain(domain: str) -> None:
    if not domain:
        raise BadRequestError("Domain not set on request.")
    if len(domain) > MAX_ID_LENGTH:
        raise BadRequestError("Domain length exceeds limit.")


def check_domain_name(name: str) -> None:
    """A name a new domain may take: set, short enough, alphanumerics and dashes only."""
    check_domain(name)
    if not DOMAIN_NAME_PATTERN.match(name):
        raise BadRequestError("Domain name can only include alphanumeric and dash characters.")


def check_workflow_id(workflow_id: str) -> None:
    if not workflow_id:
        raise BadRequestError("WorkflowId is not set on request.")
    if len(workflow_id) > MAX_ID_LENGTH:
        raise BadRequestError("WorkflowID length exceeds limit.")


def check_identity(identity: str) -> None:
    if len(identity) > MAX_ID_LENGTH:
        raise BadRequestError("Identity length exceeds limit.")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def check_request_id(request_id: str, *, required: bool) -> None:
    """`request_id` must parse as a UUID; when not `required`, empty is fine."""
    if not request_id and not required:
        return
    if len(request_id) > MAX_ID_LENGTH:
        raise BadRequestError("RequestID length exceeds limit.")
    if not _is_uuid(request_id):
        # Go's %q quoting, which json.dumps matches for printable strings.
        raise BadRequestError(f"requestId {json.dumps(quote(request_id))} is not a valid UUID")


def check_task_list(request: Message, field: str = "task_list") -> None:
    """`request.<field>` must be a TaskList with a name of at most MAX_ID_LENGTH."""
    task_list: tasklist_pb2.TaskList = getattr(request, field)
    if not request.HasField(field) or not task_list.name:
        raise BadRequestError("TaskList is not set on request.")
    if len(task_list.name) > MAX_ID_LENGTH:
        raise BadRequestError("TaskList length exceeds limit.")


def check_execution(request: Message, field: str = "workflow_execution") -> None:
    """`request.<field>` must name a workflow_id; a run_id, if given, must be a UUID."""
    if not request.HasField(field):
        raise BadRequestError("Execution is not set on request.")
    execution: common_pb2.WorkflowExecution = getattr(request, field)
    check_workflow_id(execution.workflow_id)
    if execution.run_id and not _is_uuid(execution.run_id):
        raise BadRequestError("Invalid RunId.")


def _check_first_execution_run_id(run_id: str) -> None:
    if run_id and not _is_uuid(run_id):
        raise BadRequestError("Invalid FirstExecutionRunId.")


def check_page_size(page_size: int) -> None:
    if page_size < 0:
        raise BadRequestError("PageSize cannot be negative.")


def check_enum(name: str, value: int, valid: Iterable[int]) -> None:
    """`value` must be a known member of the enum (0, the INVALID member, means unset)."""
    if value != 0 and value not in set(valid):
        raise BadRequestError(f"Invalid {name}: {value}.")


def check_task_token(token: bytes, decode: TokenDecoder | None = None) -> None:
    """A task token must be set and, when a decoder is given, decode."""
    if not token:
        raise BadRequestError("Task token not set on request.")
    if decode is None:
        return
    try:
        decode(token)
    except BadRequestError:
        raise
    except Exception as exc:
        # Any decoder failure means the client sent garbage: not an internal error.
        raise BadRequestError("Invalid TaskToken.") from exc


def validate_retry_policy(policy: common_pb2.RetryPolicy) -> None:
    """Cadence's `common.ValidateRetryPolicy`, on whole seconds."""
    problem = retry_policy_problem(policy)
    if problem:
        raise BadRequestError(problem)


def validate_cron_schedule(schedule: str) -> None:
    """A standard 5-field cron expression (or a fixed descriptor such as @daily) that fires."""
    problem = cron_problem(schedule)
    if problem:
        raise BadRequestError(problem)


def validate_memo(memo: common_pb2.Memo) -> None:
    for key, value in memo.fields.items():
        check_payload_size(f"Memo field {quote(key)}", value.data)


def validate_search_attributes(
    attributes: common_pb2.SearchAttributes, allowed_keys: Container[str]
) -> None:
    """Allow-listed, writable keys with JSON values, within Cadence's count and size limits."""
    fields = attributes.indexed_fields
    if len(fields) > MAX_SEARCH_ATTRIBUTE_KEYS:
        raise BadRequestError(
            f"number of keys {len(fields)} exceed limit {MAX_SEARCH_ATTRIBUTE_KEYS}"
        )
    total = 0
    for key, value in fields.items():
        if key in SYSTEM_SEARCH_ATTRIBUTES:
            raise BadRequestError(f"{quote(key)} is read-only Cadence reserved attribute")
        if key not in allowed_keys:
            raise BadRequestError(f"{quote(key)} is not a valid search attribute key")
        if len(value.data) > MAX_SEARCH_ATTRIBUTE_VALUE_BYTES:
            raise BadRequestError(f"size limit exceed for key {key}")
        problem = value_problem(key, value.data)
        if problem:
            raise BadRequestError(problem)
        total += len(key) + len(value.data)
    if total > MAX_SEARCH_ATTRIBUTES_TOTAL_BYTES:
        raise BadRequestError(
            f"total size of search attributes {total} exceed limit "
            f"{MAX_SEARCH_ATTRIBUTES_TOTAL_BYTES}"
        )


# --- WorkflowAPI ----------------------------------------------------------------------------


def validate_start_request(
    request: service_workflow_pb2.StartWorkflowExecutionRequest,
    search_attribute_keys: Container[str],
) -> StartTimeouts:
    """StartWorkflowExecution (and the start half of signal-with-start).

    Returns the timeouts normalised: the task timeout capped at
    min(MAX_TASK_TIMEOUT_SECONDS, execution timeout).
    """
    check_domain(request.domain)
    check_workflow_id(request.workflow_id)
    check_request_id(request.request_id, required=True)
    if not request.HasField("workflow_type") or not request.workflow_type.name:
        raise BadRequestError("WorkflowType is not set on request.")
    if len(request.workflow_type.name) > MAX_ID_LENGTH:
        raise BadRequestError("WorkflowType length exceeds limit.")
    if request.HasField("retry_policy"):
        validate_retry_policy(request.retry_policy)
    check_task_list(request)
    execution_seconds = duration_seconds(request.execution_start_to_close_timeout)
    if execution_seconds <= 0:
        raise BadRequestError("A valid ExecutionStartToCloseTimeoutSeconds is not set on request.")
    task_seconds = duration_seconds(request.task_start_to_close_timeout)
    if task_seconds <= 0:
        raise BadRequestError("A valid TaskStartToCloseTimeoutSeconds is not set on request.")
    if duration_seconds(request.delay_start) < 0:
        raise BadRequestError("A valid DelayStartSeconds is not set on request.")
    jitter_seconds = duration_seconds(request.jitter_start)
    if jitter_seconds < 0:
        raise BadRequestError("A valid JitterStartSeconds is not set on request (negative).")
    if request.cron_schedule:
        validate_cron_schedule(request.cron_schedule)
        if jitter_seconds > 0 and jitter_seconds > cron_period_seconds(request.cron_schedule):
            raise BadRequestError(
                "A valid JitterStartSeconds is not set on request (larger than cron duration)."
            )
    check_enum(
        "WorkflowIdReusePolicy",
        request.workflow_id_reuse_policy,
        workflow_pb2.WorkflowIdReusePolicy.values(),
    )
    check_enum(
        "CronOverlapPolicy", request.cron_overlap_policy, workflow_pb2.CronOverlapPolicy.values()
    )
    check_identity(request.identity)
    if request.HasField("search_attributes"):
        validate_search_attributes(request.search_attributes, search_attribute_keys)
    check_payload_size("Input", request.input.data)
    validate_memo(request.memo)
    # Cadence bounds the started event's blobs together: input plus every memo field.
    memo_bytes = sum(len(v.data) for v in request.memo.fields.values())
    if len(request.input.data) + memo_bytes > BLOB_SIZE_LIMIT:
        raise BadRequestError("Input and memo exceed size limit.")
    check_request_size(request)
    check_values(request)
    return StartTimeouts(
        execution_seconds=execution_seconds,
        task_seconds=min(task_seconds, MAX_TASK_TIMEOUT_SECONDS, execution_seconds),
    )


def _check_signal(name: str, payload: common_pb2.Payload, control: bytes) -> None:
    if not name:
        raise BadRequestError("SignalName is not set on request.")
    if len(name) > MAX_ID_LENGTH:
        raise BadRequestError("SignalName length exceeds limit.")
    check_payload_size("Signal input", payload.data)
    check_payload_size("Control", control)


def validate_signal_with_start_request(
    request: service_workflow_pb2.SignalWithStartWorkflowExecutionRequest,
    search_attribute_keys: Container[str],
) -> StartTimeouts:
    timeouts = validate_start_request(request.start_request, search_attribute_keys)
    _check_signal(request.signal_name, request.signal_input, request.control)
    check_request_size(request)
    # No check_values: the start request (checked above) is the only part with ranged values.
    return timeouts


def validate_signal_request(request: service_workflow_pb2.SignalWorkflowExecutionRequest) -> None:
    check_domain(request.domain)
    check_execution(request)
    _check_signal(request.signal_name, request.signal_input, request.control)
    check_request_id(request.request_id, required=False)
    check_identity(request.identity)
    check_request_size(request)
    check_values(request)


def validate_request_cancel_request(
    request: service_workflow_pb2.RequestCancelWorkflowExecutionRequest,
) -> None:
    check_domain(request.domain)
    check_execution(request)
    check_request_id(request.request_id, required=False)
    _check_first_execution_run_id(request.first_execution_run_id)
    check_identity(request.identity)
    check_values(request)


def validate_terminate_request(
    request: service_workflow_pb2.TerminateWorkflowExecutionRequest,
) -> None:
    check_domain(request.domain)
    check_execution(request)
    _check_first_execution_run_id(request.first_execution_run_id)
    check_payload_size("Details", request.details.data)
    check_identity(request.identity)
    check_request_size(request)
    check_values(request)


def validate_reset_request(request: service_workflow_pb2.ResetWorkflowExecutionRequest) -> None:
    check_domain(request.domain)
    check_execution(request)
    check_request_id(request.request_id, required=False)
    # The upper bound (<= next_event_id) needs the run; history checks it.
    if request.decision_finish_event_id <= 1:
        raise BadRequestError("Decision finish ID must be > 1 && <= workflow next event ID.")
    check_values(request)


def validate_get_history_request(
    request: service_workflow_pb2.GetWorkflowExecutionHistoryRequest,
) -> None:
    check_domain(request.domain)
    check_execution(request)
    check_page_size(request.page_size)
    check_enum(
        "HistoryEventFilterType",
        request.history_event_filter_type,
        history_pb2.EventFilterType.values(),
    )
    check_enum(
        "QueryConsistencyLevel",
        request.query_consistency_level,
        query_pb2.QueryConsistencyLevel.values(),
    )
    check_values(request)


def validate_describe_request(
    request: service_workflow_pb2.DescribeWorkflowExecutionRequest,
) -> None:
    check_domain(request.domain)
    check_execution(request)
    check_enum(
        "QueryConsistencyLevel",
        request.query_consistency_level,
        query_pb2.QueryConsistencyLevel.values(),
    )
    check_values(request)


def validate_query_request(request: service_workflow_pb2.QueryWorkflowRequest) -> None:
    check_domain(request.domain)
    check_execution(request)
    if not request.HasField("query"):
        raise BadRequestError("WorkflowQuery is not set on request.")
    if not request.query.query_type:
        raise BadRequestError("QueryType is not set on request.")
    check_payload_size("Query args", request.query.query_args.data)
    check_enum(
        "QueryRejectCondition",
        request.query_reject_condition,
        query_pb2.QueryRejectCondition.values(),
    )
    check_enum(
        "QueryConsistencyLevel",
        request.query_consistency_level,
        query_pb2.QueryConsistencyLevel.values(),
    )
    check_request_size(request)
    check_values(request)


def validate_describe_task_list_request(
    request: service_workflow_pb2.DescribeTaskListRequest,
) -> None:
    check_domain(request.domain)
    if request.task_list_type == tasklist_pb2.TASK_LIST_TYPE_INVALID:
        raise BadRequestError("TaskListType is not set on request.")
    check_enum("TaskListType", request.task_list_type, tasklist_pb2.TaskListType.values())
    check_task_list(request)
    check_values(request)


def validate_list_task_list_partitions_request(
    request: service_workflow_pb2.ListTaskListPartitionsRequest,
) -> None:
    check_domain(request.domain)
    check_task_list(request)
    check_values(request)


def validate_get_task_lists_by_domain_request(
    request: service_workflow_pb2.GetTaskListsByDomainRequest,
) -> None:
    check_domain(request.domain)
    check_values(request)


def validate_execution_request(request: ExecutionRequest) -> None:
    """Requests that carry only (domain, workflow_execution[, identity]): Restart,
    RefreshWorkflowTasks, DiagnoseWorkflowExecution, ResetStickyTaskList."""
    check_domain(request.domain)
    check_execution(request)
    identity = getattr(request, "identity", "")
    check_identity(identity)
    check_values(request)


# --- WorkerAPI ------------------------------------------------------------------------------


def validate_poll_request(request: PollRequest) -> None:
    """PollForDecisionTask and PollForActivityTask."""
    check_domain(request.domain)
    check_task_list(request)
    check_identity(request.identity)
    check_values(request)


def _check_token_request(request: TokenRequest, decode: TokenDecoder | None) -> None:
    check_task_token(request.task_token, decode)
    check_identity(request.identity)


def validate_decision_completed_request(
    request: service_worker_pb2.RespondDecisionTaskCompletedRequest,
    decode: TokenDecoder | None = None,
) -> None:
    """Decision blobs over the limit fail the workflow (history's job), not the call."""
    _check_token_request(request, decode)
    check_values(request, negatives=False)


def validate_decision_failed_request(
    request: service_worker_pb2.RespondDecisionTaskFailedRequest,
    decode: TokenDecoder | None = None,
) -> None:
    _check_token_request(request, decode)
    check_values(request)


def validate_activity_response(
    request: ActivityResponse, decode: TokenDecoder | None = None
) -> None:
    """RespondActivityTask{Completed,Failed,Canceled} and RecordActivityTaskHeartbeat.

    Oversized results are not rejected here: Cadence turns them into a failed activity,
    which the history service does.
    """
    _check_token_request(request, decode)
    check_values(request)


def validate_query_completed_request(
    request: service_worker_pb2.RespondQueryTaskCompletedRequest,
    decode: TokenDecoder | None = None,
) -> None:
    check_task_token(request.task_token, decode)
    check_values(request)


def validate_activity_by_id(request: ActivityByIdRequest) -> None:
    """RespondActivityTask{Completed,Failed,Canceled}ByID and RecordActivityTaskHeartbeatByID."""
    check_domain(request.domain)
    check_execution(request)
    if not request.activity_id:
        raise BadRequestError("ActivityID is not set on request.")
    check_identity(request.identity)
    check_values(request)


# --- VisibilityAPI --------------------------------------------------------------------------


def _check_start_time_filter(request: StartTimeRequest) -> None:
    if not request.HasField("start_time_filter"):
        raise BadRequestError("StartTimeFilter is required")
    flt = request.start_time_filter
    if not flt.HasField("earliest_time"):
        raise BadRequestError("EarliestTime in StartTimeFilter is required")
    if not flt.HasField("latest_time"):
        raise BadRequestError("LatestTime in StartTimeFilter is required")
    earliest = (flt.earliest_time.seconds, flt.earliest_time.nanos)
    latest = (flt.latest_time.seconds, flt.latest_time.nanos)
    if earliest > latest:
        raise BadRequestError(
            "EarliestTime in StartTimeFilter should not be larger than LatestTime"
        )


def validate_list_open_request(
    request: service_visibility_pb2.ListOpenWorkflowExecutionsRequest,
) -> None:
    check_domain(request.domain)
    check_page_size(request.page_size)
    _check_start_time_filter(request)
    check_values(request)


def validate_list_closed_request(
    request: service_visibility_pb2.ListClosedWorkflowExecutionsRequest,
) -> None:
    check_domain(request.domain)
    check_page_size(request.page_size)
    _check_start_time_filter(request)
    if request.HasField("status_filter"):
        check_enum(
            "CloseStatus",
            request.status_filter.status,
            workflow_pb2.WorkflowExecutionCloseStatus.values(),
        )
    check_values(request)


def validate_list_request(request: ListRequest) -> None:
    """ListWorkflowExecutions, ScanWorkflowExecutions, ListArchivedWorkflowExecutions.

    The query itself is parsed (and rejected) by the visibility query module.
    """
    check_domain(request.domain)
    check_page_size(request.page_size)
    check_values(request)


def validate_count_request(
    request: service_visibility_pb2.CountWorkflowExecutionsRequest,
) -> None:
    check_domain(request.domain)
    check_values(request)


# --- DomainAPI ------------------------------------------------------------------------------


def validate_retention(
    days: int, *, min_days: int = MIN_RETENTION_DAYS, max_days: int = MAX_RETENTION_DAYS
) -> None:
    if days > max_days:
        raise BadRequestError("RetentionDays is invalid.")
    if days < min_days:
        raise BadRequestError("A valid retention period is not set on request.")


def validate_register_domain_request(
    request: service_domain_pb2.RegisterDomainRequest,
    *,
    default_retention_days: int = DEFAULT_RETENTION_DAYS,
    min_retention_days: int = MIN_RETENTION_DAYS,
    max_retention_days: int = MAX_RETENTION_DAYS,
) -> int:
    """RegisterDomain; returns the retention in days (the default when unset)."""
    check_domain_name(request.name)
    if request.HasField("workflow_execution_retention_period"):
        days = retention_days(request.workflow_execution_retention_period)
    else:
        days = default_retention_days
    validate_retention(days, min_days=min_retention_days, max_days=max_retention_days)
    check_enum(
        "HistoryArchivalStatus",
        request.history_archival_status,
        domain_pb2.ArchivalStatus.values(),
    )
    check_enum(
        "VisibilityArchivalStatus",
        request.visibility_archival_status,
        domain_pb2.ArchivalStatus.values(),
    )
    check_values(request)
    return days


def validate_describe_domain_request(request: service_domain_pb2.DescribeDomainRequest) -> None:
    if not request.name and not request.id:
        raise BadRequestError("Domain not set on request.")
    check_values(request)


def validate_update_domain_request(request: service_domain_pb2.UpdateDomainRequest) -> None:
    """The request-level checks; the mask paths are applied (and checked) by the handler."""
    check_domain(request.name)
    check_values(request)


def validate_domain_name_request(request: DomainNameRequest) -> None:
    """DeprecateDomain and DeleteDomain: a name is all they carry."""
    check_domain(request.name)
    check_values(request)


def validate_list_domains_request(request: service_domain_pb2.ListDomainsRequest) -> None:
    check_page_size(request.page_size)
    check_values(request)
