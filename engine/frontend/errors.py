"""Map engine `ServiceError`s to gRPC statuses exactly as Cadence's frontend sends them.

This is the only place the engine's error tree meets gRPC (see `engine.errors`). The wire
shape follows Cadence's `common/types/mapper/proto/errors.go`:

- the gRPC status code carries the error class (NOT_FOUND, ALREADY_EXISTS, ...);
- typed errors add the `grpc-status-details-bin` trailer: a `google.rpc.Status` whose
  `details[0]` packs `uber.cadence.api.v1.<Name>` in an `Any`; BadRequestError and
  InternalServiceError carry no details.

The official Python client decodes errors with `grpc_status.rpc_status.from_call`, which
raises ValueError unless the Status proto's code and message equal the call's own. So both
are always built from one `google.rpc.Status` (`to_rpc_status`) and sent together.

`rpc` wraps `grpc.aio` servicer methods: it turns ServiceErrors into statuses, hides
unexpected exceptions behind InternalServiceError (logged here, never shown to the client),
and echoes the YARPC `rpc-service` header in the trailers as a YARPC server does.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, NoReturn, TypeVar

import grpc
import structlog
from cadence.api.v1 import error_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from engine.errors import (
    BadRequestError,
    CancellationAlreadyRequestedError,
    DomainAlreadyExistsError,
    EntityNotExistsError,
    InternalServiceError,
    LimitExceededError,
    QueryFailedError,
    ServiceBusyError,
    ServiceError,
    WorkflowExecutionAlreadyCompletedError,
    WorkflowExecutionAlreadyStartedError,
)

__all__ = [
    "CLUSTER_NAME",
    "RPC_SERVICE_KEY",
    "abort",
    "grpc_code",
    "rpc",
    "to_grpc_status",
    "to_rpc_status",
]

log = structlog.get_logger(__name__)

# The single cluster Cadenza presents itself as, in error details and domain replication
# config. A servicer may override it with a `cluster_name` attribute (see `rpc`).
CLUSTER_NAME: Final = "cadenza"

# YARPC's service header: clients send it, YARPC servers echo it in the trailers, and a
# YARPC client rejects a mismatched echo, so we echo the request's value or nothing.
RPC_SERVICE_KEY: Final = "rpc-service"

# What a client sees for a failure we did not raise on purpose: nothing about internals.
_INTERNAL_MESSAGE: Final = "Internal service error."

_CODES: Final[dict[type[ServiceError], grpc.StatusCode]] = {
    BadRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    EntityNotExistsError: grpc.StatusCode.NOT_FOUND,
    WorkflowExecutionAlreadyCompletedError: grpc.StatusCode.NOT_FOUND,
    WorkflowExecutionAlreadyStartedError: grpc.StatusCode.ALREADY_EXISTS,
    DomainAlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    CancellationAlreadyRequestedError: grpc.StatusCode.ALREADY_EXISTS,
    QueryFailedError: grpc.StatusCode.INVALID_ARGUMENT,
    LimitExceededError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ServiceBusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    InternalServiceError: grpc.StatusCode.INTERNAL,
}


def grpc_code(err: ServiceError) -> grpc.StatusCode:
    """The status code Cadence uses for `err`'s class (INTERNAL for anything unknown)."""
    for cls in type(err).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _details(err: ServiceError, cluster: str) -> Any:
    """The typed `uber.cadence.api.v1` message for details[0], or None (no details)."""
    if isinstance(err, EntityNotExistsError):
        return error_pb2.EntityNotExistsError(current_cluster=cluster, active_cluster=cluster)
    if isinstance(err, WorkflowExecutionAlreadyCompletedError):
        return error_pb2.WorkflowExecutionAlreadyCompletedError()
    if isinstance(err, WorkflowExecutionAlreadyStartedError):
        return error_pb2.WorkflowExecutionAlreadyStartedError(
            start_request_id=err.start_request_id, run_id=err.run_id
        )
    if isinstance(err, DomainAlreadyExistsError):
        return error_pb2.DomainAlreadyExistsError()
    if isinstance(err, CancellationAlreadyRequestedError):
        return error_pb2.CancellationAlreadyRequestedError()
    if isinstance(err, QueryFailedError):
        return error_pb2.QueryFailedError()
    if isinstance(err, LimitExceededError):
        return error_pb2.LimitExceededError()
    if isinstance(err, ServiceBusyError):
        return error_pb2.ServiceBusyError()
    # BadRequestError, InternalServiceError: Cadence sends no details for these.
    return None


def to_rpc_status(err: ServiceError, *, cluster: str = CLUSTER_NAME) -> Any:
    """The `google.rpc.Status` for `err`: code, message and (for typed errors) details[0]."""
    st = status_pb2.Status(code=grpc_code(err).value[0], message=err.message)
    details = _details(err, cluster)
    if details is not None:
        st.details.add().Pack(details)
    return st


def to_grpc_status(err: ServiceError, *, cluster: str = CLUSTER_NAME) -> grpc.Status:
    """`err` as a `grpc.Status` whose code/details and details-bin trailer agree."""
    return rpc_status.to_status(to_rpc_status(err, cluster=cluster))


def _echo(context: Any) -> tuple[tuple[str, str], ...]:
    for key, value in context.invocation_metadata() or ():
        if key == RPC_SERVICE_KEY:
            return ((RPC_SERVICE_KEY, value),)
    return ()


async def abort(
    context: Any,
    err: ServiceError,
    *,
    cluster: str = CLUSTER_NAME,
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    """End the call with `err`'s status; extra trailers (the YARPC echo) ride along.

    Equivalent to `context.abort_with_status(rpc_status.to_status(st))`, except that
    abort_with_status would replace any trailers set earlier, dropping the echo.
    """
    status = to_grpc_status(err, cluster=cluster)
    await context.abort(
        status.code, status.details, tuple(status.trailing_metadata) + trailing_metadata
    )
    # context.abort always raises; this keeps the NoReturn promise if a fake does not.
    raise AssertionError("context.abort returned")  # pragma: no cover


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def rpc(
    method: Callable[[S, Req, Any], Awaitable[Resp]],
) -> Callable[[S, Req, Any], Coroutine[Any, Any, Resp]]:
    """Wrap `async def Method(self, request, context)` of a grpc.aio servicer.

    - A `ServiceError` becomes its Cadence status (see module doc).
    - Any other exception is logged with its traceback and becomes InternalServiceError
      with a fixed message: internals never reach the client. INTERNAL is retried by the
      official clients, which resend the same request.
    - The `rpc-service` request header is echoed in the trailers, on success and failure.
    - `asyncio.CancelledError` (the client went away) and a handler's own
      `context.abort` pass through untouched.

    The servicer's `cluster_name` attribute, if any, names the cluster in error details.
    """

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: Any) -> Resp:
        echo = _echo(context)
        cluster = getattr(self, "cluster_name", CLUSTER_NAME)
        try:
            response = await method(self, request, context)
        except ServiceError as err:
            await abort(context, err, cluster=cluster, trailing_metadata=echo)
        except grpc.aio.AbortError:
            # The handler aborted the call itself; its status stands.
            raise
        except Exception:
            log.exception("rpc_internal_error", rpc_method=method.__name__)
            await abort(
                context,
                InternalServiceError(_INTERNAL_MESSAGE),
                cluster=cluster,
                trailing_metadata=echo,
            )
        if echo:
            context.set_trailing_metadata(echo)
        return response

    return wrapper
