"""The engine's error tree. Only `engine.frontend` maps these to gRPC statuses.

EngineError
├── ServiceError                  errors a client sees, one per Cadence typed error
│   ├── BadRequestError           a malformed or illegal request (INVALID_ARGUMENT)
│   ├── EntityNotExistsError      unknown domain, run, task token (NOT_FOUND)
│   ├── WorkflowExecutionAlreadyCompletedError
│   ├── WorkflowExecutionAlreadyStartedError (carries start_request_id, run_id)
│   ├── DomainAlreadyExistsError
│   ├── CancellationAlreadyRequestedError
│   ├── QueryFailedError
│   ├── LimitExceededError
│   ├── ServiceBusyError          retryable
│   └── InternalServiceError      retryable
├── PersistenceError              raised by stores, never shown to a client as-is
│   ├── ShardOwnershipLostError   the shard's range_id moved on: a stale owner must stop
│   └── ConditionFailedError      an optimistic check (next_event_id, current run) failed
└── StartupError                  a process must not start; the message says why and what to do
    ├── InUseError                its port, database file or node id is held by another process
    └── ConfigMismatchError       its settings disagree with the cluster's (the shard count)
"""

from __future__ import annotations

from typing import ClassVar, Final

# How much of a user's value an error message quotes (see `quote`).
QUOTE_LIMIT: Final = 100


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as an error message shows it: whole when short, else its first `limit`
    characters, "..." and its full length. A message that echoed a 10,000-character name
    whole would be refused by the client's metadata limit, losing the typed error."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def can_pass(exc: BaseException) -> bool:
    """Whether trying again can help: the engine marks the error retryable, or the network
    or a deadline failed (a backend restarting). A deterministic refusal cannot pass."""
    return bool(getattr(exc, "retryable", False)) or isinstance(exc, (OSError, TimeoutError))


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class ServiceError(EngineError):
    """An error with a Cadence wire shape; `kind` names the typed error in `error.proto`."""

    kind: ClassVar[str] = "InternalServiceError"


class BadRequestError(ServiceError):
    kind = "BadRequestError"


class EntityNotExistsError(ServiceError):
    kind = "EntityNotExistsError"


class WorkflowExecutionAlreadyCompletedError(ServiceError):
    kind = "WorkflowExecutionAlreadyCompletedError"


class WorkflowExecutionAlreadyStartedError(ServiceError):
    kind = "WorkflowExecutionAlreadyStartedError"

    def __init__(self, message: str, start_request_id: str = "", run_id: str = "") -> None:
        super().__init__(message)
        self.start_request_id = start_request_id
        self.run_id = run_id


class DomainAlreadyExistsError(ServiceError):
    kind = "DomainAlreadyExistsError"


class CancellationAlreadyRequestedError(ServiceError):
    kind = "CancellationAlreadyRequestedError"


class QueryFailedError(ServiceError):
    kind = "QueryFailedError"


class LimitExceededError(ServiceError):
    kind = "LimitExceededError"


class ServiceBusyError(ServiceError):
    kind = "ServiceBusyError"
    retryable = True


class InternalServiceError(ServiceError):
    kind = "InternalServiceError"
    retryable = True


class PersistenceError(EngineError):
    """A store failed; adapters translate driver exceptions into this tree."""

    retryable = True


class ShardOwnershipLostError(PersistenceError):
    retryable = False

    def __init__(self, shard_id: int, message: str = "") -> None:
        super().__init__(message or f"shard {shard_id} ownership lost")
        self.shard_id = shard_id


class ConditionFailedError(PersistenceError):
    retryable = False


class StartupError(EngineError):
    """Refused at start-up (never reaches a client); the message names the fix."""


class InUseError(StartupError):
    pass


class ConfigMismatchError(StartupError):
    pass


_BY_KIND: dict[str, type[ServiceError]] = {
    cls.kind: cls
    for cls in (
        BadRequestError,
        EntityNotExistsError,
        WorkflowExecutionAlreadyCompletedError,
        WorkflowExecutionAlreadyStartedError,
        DomainAlreadyExistsError,
        CancellationAlreadyRequestedError,
        QueryFailedError,
        LimitExceededError,
        ServiceBusyError,
        InternalServiceError,
    )
}


def error_from_kind(kind: str, message: str, **fields: str) -> ServiceError:
    """Rebuild a ServiceError that crossed a process boundary as (kind, message, fields)."""
    cls = _BY_KIND.get(kind, InternalServiceError)
    if cls is WorkflowExecutionAlreadyStartedError:
        return WorkflowExecutionAlreadyStartedError(
            message, fields.get("start_request_id", ""), fields.get("run_id", "")
        )
    return cls(message)


def error_fields(err: ServiceError) -> dict[str, str]:
    """The extra fields of an error, for carrying it across a process boundary."""
    if isinstance(err, WorkflowExecutionAlreadyStartedError):
        return {"start_request_id": err.start_request_id, "run_id": err.run_id}
    return {}
