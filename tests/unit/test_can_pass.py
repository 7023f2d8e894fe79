"""`engine.errors.can_pass`: which failures are worth another try (transfer tasks retried, a
polled task handed back) and which are deterministic refusals that would only repeat."""

from __future__ import annotations

import pytest

from engine import errors


@pytest.mark.parametrize(
    "exc",
    [
        errors.ServiceBusyError("slow down"),
        errors.InternalServiceError("shard moved"),
        ConnectionRefusedError("kafka down"),
        OSError("reset"),
        TimeoutError(),
    ],
)
def test_transient_failures_can_pass(exc: BaseException) -> None:
    assert errors.can_pass(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.BadRequestError("WorkflowId is not set on request."),
        errors.EntityNotExistsError("gone"),
        errors.ShardOwnershipLostError(3),
        errors.ConditionFailedError("next_event_id moved"),
        ValueError("a bug"),
    ],
)
def test_deterministic_failures_cannot_pass(exc: BaseException) -> None:
    assert not errors.can_pass(exc)
