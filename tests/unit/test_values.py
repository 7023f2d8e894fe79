"""engine.frontend.values: range checks over whole requests, and the engine's time bounds."""

from __future__ import annotations

import math

import pytest
from cadence.api.v1 import (
    common_pb2,
    decision_pb2,
    query_pb2,
    service_domain_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
)
from google.protobuf import duration_pb2, timestamp_pb2, wrappers_pb2

from engine.errors import BadRequestError
from engine.execution.protos import (
    MAX_DURATION_SECONDS,
    MAX_TIME_NS,
    after_ns,
    retry_delay_s,
    secs,
    ts_ns,
)
from engine.frontend.values import check_values
from engine.model.state import RetryPolicyState
from engine.visibility.attributes import value_problem

YEAR = 365 * 86_400


def _decisions(
    *decisions: decision_pb2.Decision,
) -> service_worker_pb2.RespondDecisionTaskCompletedRequest:
    return service_worker_pb2.RespondDecisionTaskCompletedRequest(
        task_token=b"t", decisions=list(decisions)
    )


def _timer(seconds: int, nanos: int = 0) -> decision_pb2.Decision:
    return decision_pb2.Decision(
        start_timer_decision_attributes=decision_pb2.StartTimerDecisionAttributes(
            timer_id="t", start_to_fire_timeout=duration_pb2.Duration(seconds=seconds, nanos=nanos)
        )
    )


def test_a_duration_past_the_longest_is_clamped_in_place() -> None:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=1000 * YEAR, nanos=5)
    )
    check_values(req)
    assert req.execution_start_to_close_timeout.seconds == MAX_DURATION_SECONDS
    assert req.execution_start_to_close_timeout.nanos == 0


def test_durations_within_range_are_untouched() -> None:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=60, nanos=500)
    )
    before = req.SerializeToString()
    check_values(req)
    assert req.SerializeToString() == before


def test_nested_and_repeated_paths_are_named() -> None:
    req = _decisions(_timer(5), _timer(0, -1), _timer(1, -1))
    with pytest.raises(BadRequestError, match=r"decisions\[2\]\.start_timer_decision_attributes"):
        check_values(req, negatives=False)
    req = _decisions(_timer(5), _timer(1000 * YEAR))
    check_values(req, negatives=False)
    assert (
        req.decisions[1].start_timer_decision_attributes.start_to_fire_timeout.seconds
        == MAX_DURATION_SECONDS
    )


def test_negatives_are_refused_unless_the_history_service_checks_them() -> None:
    req = _decisions(_timer(0, -1))
    check_values(req, negatives=False)  # the decision fails in history, with its cause
    with pytest.raises(BadRequestError, match="cannot be negative"):
        check_values(req)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_everywhere(value: float) -> None:
    policy = common_pb2.RetryPolicy(backoff_coefficient=value)
    with pytest.raises(
        BadRequestError, match=r"retry_policy\.backoff_coefficient must be a finite number"
    ):
        check_values(service_workflow_pb2.StartWorkflowExecutionRequest(retry_policy=policy))
    meta = tasklist_pb2.TaskListMetadata(max_tasks_per_second=wrappers_pb2.DoubleValue(value=value))
    poll = service_worker_pb2.PollForActivityTaskRequest(task_list_metadata=meta)
    with pytest.raises(BadRequestError, match=r"max_tasks_per_second must be a finite number\."):
        check_values(poll)


def test_unknown_enum_values_in_maps_are_named_by_key() -> None:
    req = _decisions()
    req.query_results["q1"].CopyFrom(query_pb2.WorkflowQueryResult(result_type=7))  # type: ignore[arg-type]
    with pytest.raises(BadRequestError, match=r"query_results\['q1'\]\.result_type: 7"):
        check_values(req)


def test_a_huge_map_key_is_cut_in_the_message() -> None:
    req = _decisions()
    req.query_results["k" * 10_000].CopyFrom(query_pb2.WorkflowQueryResult(result_type=9))  # type: ignore[arg-type]
    with pytest.raises(BadRequestError) as info:
        check_values(req)
    assert len(info.value.message) < 200


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(253_402_300_800, 0), (-62_135_596_801, 0), (0, -1), (0, 1_000_000_000)],
    ids=["year-10000", "before-year-1", "negative-nanos", "nanos-overflow"],
)
def test_timestamps_outside_the_proto_range_are_refused(seconds: int, nanos: int) -> None:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        first_run_at=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)
    )
    with pytest.raises(BadRequestError, match="first_run_at is not a valid timestamp"):
        check_values(req)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(1, -1), (-1, 1), (0, 1_000_000_000), (315_576_000_001, 0)],
    ids=["mixed-signs-1", "mixed-signs-2", "nanos-overflow", "beyond-10000-years"],
)
def test_malformed_durations_are_refused_even_in_decisions(seconds: int, nanos: int) -> None:
    with pytest.raises(BadRequestError, match="is not a valid duration"):
        check_values(_decisions(_timer(seconds, nanos)), negatives=False)


def test_negative_counts_are_refused_but_failover_versions_may_be_negative() -> None:
    with pytest.raises(BadRequestError, match="page_size cannot be negative"):
        check_values(service_domain_pb2.ListDomainsRequest(page_size=-1))
    info = service_domain_pb2.RegisterDomainRequest()
    info.active_clusters.region_to_cluster["r"].failover_version = -1
    check_values(info)


def test_the_engine_saturates_times_it_derives() -> None:
    assert secs(duration_pb2.Duration(seconds=10**12)) == MAX_DURATION_SECONDS
    assert after_ns(MAX_TIME_NS - 5, 10) == MAX_TIME_NS
    far = timestamp_pb2.Timestamp(seconds=253_402_300_799)
    assert ts_ns(far) == MAX_TIME_NS


def _policy(coefficient: float, maximum_s: int = 0) -> RetryPolicyState:
    return RetryPolicyState(
        initial_interval_s=1,
        backoff_coefficient=coefficient,
        maximum_interval_s=maximum_s,
        maximum_attempts=0,
        non_retryable_reasons=[],
        expiration_s=0,
    )


def test_a_stored_nan_coefficient_stops_retrying_instead_of_raising() -> None:
    assert retry_delay_s(_policy(math.nan), 3, "boom", 0, 0) is None
    assert retry_delay_s(_policy(math.inf), 3, "boom", 0, 0) is None


def test_a_retry_delay_that_overflows_a_float_is_bounded() -> None:
    assert retry_delay_s(_policy(2.0), 5000, "boom", 0, 0) == MAX_DURATION_SECONDS
    assert retry_delay_s(_policy(2.0, maximum_s=60), 5000, "boom", 0, 0) == 60


@pytest.mark.parametrize(
    ("key", "raw", "ok"),
    [
        ("CustomIntField", b"5", True),
        ("CustomIntField", b'"5"', False),
        ("CustomIntField", b"true", False),
        ("CustomIntField", b"1.5", False),
        ("CustomIntField", b"99999999999999999999", False),
        ("CustomDoubleField", b"1.5", True),
        ("CustomDoubleField", b"7", True),
        ("CustomDoubleField", b"NaN", False),
        ("CustomDoubleField", b"Infinity", False),
        ("CustomBoolField", b"false", True),
        ("CustomBoolField", b"0", False),
        ("CustomKeywordField", b'"k"', True),
        ("CustomKeywordField", b'["a", "b"]', True),
        ("CustomKeywordField", b"[1]", False),
        ("CustomStringField", b'"some text"', True),
        ("CustomStringField", b"12", False),
        ("CustomDatetimeField", b"1700000000000000000", True),
        ("CustomDatetimeField", b'"2026-12-03T10:00:00Z"', True),
        ("CustomDatetimeField", b'"2026-12-03T10:00:00.123456789+02:00"', True),
        ("CustomDatetimeField", b'"2026-02-30T10:00:00Z"', False),
        ("CustomDatetimeField", b'"yesterday"', False),
        ("CustomStringField", b"\xff", False),
    ],
)
def test_search_attribute_values_must_fit_their_type(key: str, raw: bytes, ok: bool) -> None:
    assert (value_problem(key, raw) is None) is ok
