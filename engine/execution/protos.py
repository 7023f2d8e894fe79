"""Small conversions between engine values and `uber.cadence.api.v1` protos, and the bounds
every time the engine stores must respect."""

from __future__ import annotations

import math

from cadence.api.v1 import common_pb2, workflow_pb2
from google.protobuf import duration_pb2, timestamp_pb2

from engine.model.state import ActivityInfo, ParentInfo, RetryPolicyState

NS = 1_000_000_000

# The longest Duration the engine takes: 2**31 - 1 seconds (about 68 years), the widest value
# Cadence's int32-second fields hold. The frontend clamps longer ones to it (see
# engine.frontend.values); `secs` clamps again, for requests recorded before it did.
MAX_DURATION_SECONDS = 2**31 - 1
# Times are int64 unix nanoseconds in every store (year 2262); deadlines saturate here.
MAX_TIME_NS = 2**63 - 1


def ts(ns: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=ns // NS, nanos=ns % NS)


def ts_ns(value: timestamp_pb2.Timestamp) -> int:
    """Unix nanoseconds, saturated to the int64 range the stores hold."""
    return max(-MAX_TIME_NS - 1, min(value.seconds * NS + value.nanos, MAX_TIME_NS))


def after_ns(now_ns: int, seconds: float) -> int:
    """The time `seconds` after `now_ns`, saturated at MAX_TIME_NS (never past what a store
    can hold, whatever a timeout says)."""
    return min(now_ns + int(seconds * NS), MAX_TIME_NS)


def dur(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * NS))


def secs(value: duration_pb2.Duration) -> int:
    """Whole seconds, truncated, as Cadence does for every Duration on the wire; at most
    MAX_DURATION_SECONDS."""
    return min(int(value.seconds), MAX_DURATION_SECONDS)


def is_negative(value: duration_pb2.Duration) -> bool:
    """Whether a Duration is below zero, also by its nanos alone (-0.5 s truncates to 0 s)."""
    return value.seconds < 0 or value.nanos < 0


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
    coefficient = policy.backoff_coefficient
    if not math.isfinite(coefficient) or coefficient < 1:
        # A policy stored before the frontend refused such coefficients: no retry rather
        # than a computation that raises and loses the timer.
        return None
    try:
        delay = policy.initial_interval_s * (coefficient**attempt)
    except OverflowError:
        delay = math.inf
    if policy.maximum_interval_s > 0:
        delay = min(delay, policy.maximum_interval_s)
    delay_s = max(1, int(min(delay, MAX_DURATION_SECONDS)))
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
    if not policy.backoff_coefficient >= 1:  # also NaN
        return "BackoffCoefficient cannot be less than 1 on retry policy."
    if math.isinf(policy.backoff_coefficient):
        return "BackoffCoefficient must be a finite number on retry policy."
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
