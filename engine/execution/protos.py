"""Small conversions between engine values and `uber.cadence.api.v1` protos."""

from __future__ import annotations

from cadence.api.v1 import common_pb2, workflow_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from engine.model.state import ActivityInfo, ParentInfo, RetryPolicyState

NS = 1_000_000_000


def ts(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // NS, nanos=ns % NS)


def ts_ns(value: timestamp_pb2.Timestamp) -> int:
    return value.seconds * NS + value.nanos


def dur(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * NS))


def secs(value: duration_pb2.Duration) -> int:
    """Whole seconds, truncated, as Cadence does for every Duration on the wire."""
    return int(value.seconds)


def payload(data: bytes | None) -> common_pb2.Payload | None:
    return None if data is None else common_pb2.Payload(data=data)


def retry_from_proto(policy: common_pb2.RetryPolicy) -> RetryPolicyState:
    return RetryPolicyState(
        initial_interval_s=secs(policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval_s=secs(policy.maximum_interval),
        maximum_attempts=policy.maximum_attempts,
        non_retryable_reasons=list(policy.non_retryable_error_reasons),
        expiration_s=secs(policy.expiration_interval),
    )


def retry_to_proto(policy: RetryPolicyState) -> common_pb2.RetryPolicy:
    return common_pb2.RetryPolicy(
        initial_interval=dur(policy.initial_interval_s),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=dur(policy.maximum_interval_s),
        maximum_attempts=policy.maximum_attempts,
        non_retryable_error_reasons=policy.non_retryable_reasons,
        expiration_interval=dur(policy.expiration_s),
    )


def retry_delay_s(
    policy: RetryPolicyState, attempt: int, reason: str, now_ns: int, expiration_ns: int
) -> int | None:
    """Seconds until the next attempt after `attempt` (0-based) failed, or None to stop.

    Cadence's rule: stop when attempts are exhausted, the reason is non-retryable, or the next
    attempt would start after the expiration time.
    """
    if policy.maximum_attempts > 0 and attempt >= policy.maximum_attempts - 1:
        return None
    if reason in policy.non_retryable_reasons or reason.endswith("_EXCEEDS_LIMIT"):
        # Size-limit failures (e.g. COMPLETE_RESULT_EXCEEDS_LIMIT) would only repeat.
        return None
    delay = policy.initial_interval_s * (policy.backoff_coefficient**attempt)
    if policy.maximum_interval_s > 0:
        delay = min(delay, policy.maximum_interval_s)
    delay_s = max(1, int(delay))
    if expiration_ns and now_ns + delay_s * NS > expiration_ns:
        return None
    return delay_s


def retry_policy_problem(policy: common_pb2.RetryPolicy) -> str | None:
    """What is wrong with a retry policy, in Cadence's words (`common.ValidateRetryPolicy`),
    or None. Shared by start validation and the ScheduleActivityTask decision."""
    initial = secs(policy.initial_interval)
    maximum = secs(policy.maximum_interval)
    expiration = secs(policy.expiration_interval)
    if initial <= 0:
        return "InitialIntervalInSeconds must be greater than 0 on retry policy."
    if policy.backoff_coefficient < 1:
        return "BackoffCoefficient cannot be less than 1 on retry policy."
    if maximum < 0:
        return "MaximumIntervalInSeconds cannot be less than 0 on retry policy."
    if 0 < maximum < initial:
        return (
            "MaximumIntervalInSeconds cannot be less than InitialIntervalInSeconds on retry policy."
        )
    if policy.maximum_attempts < 0:
        return "MaximumAttempts cannot be less than 0 on retry policy."
    if expiration < 0:
        return "ExpirationIntervalInSeconds cannot be less than 0 on retry policy."
    if policy.maximum_attempts == 0 and expiration == 0:
        return (
            "MaximumAttempts and ExpirationIntervalInSeconds are both 0. At least one of them "
            "must be specified."
        )
    return None


def parent_execution_info(p: ParentInfo) -> workflow_pb2.ParentExecutionInfo:
    return workflow_pb2.ParentExecutionInfo(
        domain_id=p.domain_id,
        domain_name=p.domain_name,
        workflow_execution=common_pb2.WorkflowExecution(workflow_id=p.workflow_id, run_id=p.run_id),
        initiated_id=p.initiated_id,
    )


def last_failure(info: ActivityInfo) -> common_pb2.Failure | None:
    """The failure of the activity's previous attempt, if it had one."""
    if not info.last_failure_reason:
        return None
    return common_pb2.Failure(
        reason=info.last_failure_reason, details=info.last_failure_details or b""
    )
