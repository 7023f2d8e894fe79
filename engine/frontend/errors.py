"""Map engine `ServiceError`s to gRPC statuses exactly as Cadence's frontend sends them.

This is the only place the engine's error tree meets gRPC (see `engine.errors`). The wire
shape follows Cadence's `common/types/mapper/proto/errors.go`:

- the gRPC status code carries the error class (NOT_FOUND, ALREADY_EXISTS, ...);
- typed errors add the `grpc-status-details-bin` trailer: a `google.rpc.Status` whose
  `details[0]` packs `uber.cadence.api.v1.<Name>` in an `Any`; BadRequestError and
  InternalServiceError carry no details.

The official Python client decodes errors with `grpc_status.rpc_status.from_call`, which
raises ValueError unless the Status proto's code and message equal the call's own. So both
are always built from one `google.rpc.Status` (`status_proto`, through `to_rpc_status`) and
sent together. Two rules hold there, whatever the caller passed:

- An INTERNAL status says nothing of the internals: its message is the fixed
  "Internal service error (id X)." whatever the error's own text (an exception's repr built
  by a shard, a store's message, ...). X is a correlation id that the one log line of the
  failure carries too, with the real text (and, for an unexpected exception, the
  traceback), so an operator can find what a user reports.
- A message is at most `MAX_MESSAGE_BYTES` of UTF-8: it travels twice in the trailers
  (`grpc-message`, percent-encoded, and inside `grpc-status-details-bin`), and a client
  refuses trailers past its metadata limit (8 KiB by default) with RESOURCE_EXHAUSTED
  "Stream removed", losing the typed error. Messages quote user input through
  `engine.errors.quote`; this cap is the backstop.

`guard` runs one RPC: ServiceErrors become statuses, unexpected exceptions become INTERNAL
(logged once, here, with the traceback), and the YARPC `rpc-service` header is echoed in
the trailers as a YARPC server does. `rpc` applies it to a grpc.aio servicer method;
`engine.frontend.services` applies it when it registers the servicers.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, NoReturn, TypeVar

import grpc
import structlog
from cadence.api.v1 import error_pb2
from google.protobuf.message import Message
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
    "MAX_MESSAGE_BYTES",
    "RPC_METHOD_ATTR",
    "RPC_SERVICE_KEY",
    "abort",
    "abort_with",
    "grpc_code",
    "guard",
    "internal_message",
    "rpc",
    "rpc_service_echo",
    "status_proto",
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

# What a client sees of any INTERNAL failure: nothing about internals (see module doc).
_INTERNAL_MESSAGE: Final = "Internal service error."

# The most UTF-8 bytes of a status message. Worst case on the wire (every byte
# percent-encoded in grpc-message, plus the base64 Status) stays near 4.5 KiB, well inside
# a client's 8 KiB metadata limit with room for the other trailers.
MAX_MESSAGE_BYTES: Final = 1024

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


def _details(err: ServiceError, cluster: str) -> Message | None:
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


def internal_message(error_id: str = "") -> str:
    """The only message an INTERNAL status carries: fixed text and the correlation id."""
    return f"Internal service error (id {error_id})." if error_id else _INTERNAL_MESSAGE


def _capped(message: str) -> str:
    """`message` cut to MAX_MESSAGE_BYTES of UTF-8 (at a character boundary), saying so."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    suffix = f"... (message cut, {len(raw)} bytes)"
    head = raw[: MAX_MESSAGE_BYTES - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


def status_proto(
    code: grpc.StatusCode, message: str, details: Message | None = None, *, error_id: str = ""
) -> status_pb2.Status:
    """The `google.rpc.Status` of a call: the one place a status is built (see module doc).

    An INTERNAL status carries `internal_message(error_id)` whatever `message` says; any
    other message is capped at MAX_MESSAGE_BYTES.
    """
    if code == grpc.StatusCode.INTERNAL:
        message = internal_message(error_id)
    st = status_pb2.Status(code=code.value[0], message=_capped(message))
    if details is not None:
        st.details.add().Pack(details)
    return st


def to_rpc_status(
    err: ServiceError, *, cluster: str = CLUSTER_NAME, error_id: str = ""
) -> status_pb2.Status:
    """The `google.rpc.Status` for `err`: code, message and (for typed errors) details[0]."""
    return status_proto(grpc_code(err), err.message, _details(err, cluster), error_id=error_id)


def to_grpc_status(
    err: ServiceError, *, cluster: str = CLUSTER_NAME, error_id: str = ""
) -> grpc.Status:
    """`err` as a `grpc.Status` whose code/details and details-bin trailer agree."""
    return rpc_status.to_status(to_rpc_status(err, cluster=cluster, error_id=error_id))


def rpc_service_echo(context: grpc.aio.ServicerContext) -> tuple[tuple[str, str], ...]:
    """The trailer echoing the request's `rpc-service` header, or nothing without one."""
    for key, value in context.invocation_metadata() or ():
        if key == RPC_SERVICE_KEY:
            return ((RPC_SERVICE_KEY, value),)
    return ()


async def abort_with(
    context: grpc.aio.ServicerContext,
    st: status_pb2.Status,
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    """End the call with the `google.rpc.Status` `st`; extra trailers (the YARPC echo) ride
    along.

    Equivalent to `context.abort_with_status(rpc_status.to_status(st))`, except that
    abort_with_status would replace any trailers set earlier, dropping the echo.
    """
    status = rpc_status.to_status(st)
    await context.abort(
        status.code, status.details, tuple(status.trailing_metadata) + trailing_metadata
    )
    # context.abort always raises; this keeps the NoReturn promise if a fake does not.
    raise AssertionError("context.abort returned")  # pragma: no cover


async def abort(
    context: grpc.aio.ServicerContext,
    err: ServiceError,
    *,
    cluster: str = CLUSTER_NAME,
    error_id: str = "",
    trailing_metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> NoReturn:
    """End the call with `err`'s status (see `to_rpc_status`, `abort_with`)."""
    st = to_rpc_status(err, cluster=cluster, error_id=error_id)
    await abort_with(context, st, trailing_metadata)


T = TypeVar("T")


async def guard(
    name: str, context: grpc.aio.ServicerContext, call: Awaitable[T], *, cluster: str = CLUSTER_NAME
) -> T:
    """Run one RPC named `name` (await `call`), answering failures as Cadence does.

    - A `ServiceError` becomes its Cadence status (see module doc).
    - Any other exception is logged with its traceback and becomes InternalServiceError:
      internals never reach the client. INTERNAL is retried by the official clients,
      which resend the same request.
    - Every INTERNAL answer is logged here, once, under a fresh correlation id that its
      message carries. An InternalServiceError raised on purpose (a shard's reply) is
      logged without traceback: where it happened logged that.
    - The `rpc-service` request header is echoed in the trailers, on success and failure.
    - `asyncio.CancelledError` (the client went away) and a handler's own
      `context.abort` pass through untouched.
    """
    echo = rpc_service_echo(context)
    try:
        response = await call
    except ServiceError as err:
        error_id = ""
        if grpc_code(err) == grpc.StatusCode.INTERNAL:
            error_id = secrets.token_hex(4)
            log.error("rpc_internal_error", rpc_method=name, error_id=error_id, error=err.message)
        await abort(context, err, cluster=cluster, error_id=error_id, trailing_metadata=echo)
    except grpc.aio.AbortError:
        # The handler aborted the call itself; its status stands.
        raise
    except Exception:
        error_id = secrets.token_hex(4)
        log.exception("rpc_internal_error", rpc_method=name, error_id=error_id)
        await abort(
            context,
            InternalServiceError(_INTERNAL_MESSAGE),
            cluster=cluster,
            error_id=error_id,
            trailing_metadata=echo,
        )
    if echo:
        context.set_trailing_metadata(echo)
    return response


S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")

# The attribute of an `rpc`-wrapped method that holds the undecorated one, for
# `engine.frontend.services`, which applies `guard` itself.
RPC_METHOD_ATTR: Final = "__cadenza_rpc_method__"


def rpc(
    method: Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext], Coroutine[Any, Any, Resp]]:
    """Wrap `async def Method(self, request, context)` of a grpc.aio servicer in `guard`.

    The servicer's `cluster_name` attribute, if any, names the cluster in error details.
    """

    @functools.wraps(method)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        cluster = getattr(self, "cluster_name", CLUSTER_NAME)
        return await guard(
            method.__name__, context, method(self, request, context), cluster=cluster
        )

    setattr(wrapper, RPC_METHOD_ATTR, method)
    return wrapper
