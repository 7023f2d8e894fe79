"""`engine.frontend.errors` end to end: a real grpc.aio server, the official client's decoding.

A tiny DomainAPI servicer raises the error named by the request; the client side is the
official `CadenceErrorInterceptor` (which decodes with `rpc_status.from_call`, so a code or
message mismatch between the status and its details would surface as ValueError here).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import structlog
from cadence import error as cadence_error
from cadence._internal.rpc.error import CadenceErrorInterceptor
from cadence.api.v1 import error_pb2, service_domain_pb2, service_domain_pb2_grpc
from cadence.client import Client
from google.rpc import status_pb2
from grpc_status import rpc_status

from engine import errors
from engine.frontend.errors import (
    MAX_MESSAGE_BYTES,
    RPC_SERVICE_KEY,
    grpc_code,
    internal_message,
    rpc,
    to_rpc_status,
)

ERRORS: dict[str, errors.ServiceError] = {
    "not-exists": errors.EntityNotExistsError("Domain: x does not exist."),
    "completed": errors.WorkflowExecutionAlreadyCompletedError(
        "Workflow execution already completed."
    ),
    "started": errors.WorkflowExecutionAlreadyStartedError("already started", "req-1", "run-1"),
    "domain-exists": errors.DomainAlreadyExistsError("Domain already exists."),
    "cancel-requested": errors.CancellationAlreadyRequestedError("cancel already requested"),
    "query-failed": errors.QueryFailedError("query failed: boom"),
    "limit": errors.LimitExceededError("too many signals"),
    "busy": errors.ServiceBusyError("slow down"),
    "bad": errors.BadRequestError("WorkflowId is not set on request."),
    "internal": errors.InternalServiceError("shard moved"),
    "unicode": errors.BadRequestError("naïve \u2013 ☃ request"),
    # An unknown kind rebuilt from another process's reply (engine/history/bus.py).
    "rebuilt": errors.error_from_kind("NoSuchKind", "KeyError('run_id') in apply"),
    # Echoes 20,000 characters: over the client's metadata limit unless capped.
    "huge": errors.EntityNotExistsError("Domain: " + "d" * 20_000 + " does not exist."),
}
INTERNAL_TEXT = re.compile(r"Internal service error \(id ([0-9a-f]{8})\)\.")


class _Servicer(service_domain_pb2_grpc.DomainAPIServicer):
    cluster_name = "test-cluster"

    @rpc
    async def DescribeDomain(
        self, request: service_domain_pb2.DescribeDomainRequest, context: Any
    ) -> service_domain_pb2.DescribeDomainResponse:
        if request.name == "ok":
            return service_domain_pb2.DescribeDomainResponse()
        if request.name == "crash":
            raise RuntimeError("secret internals: password=hunter2")
        if request.name == "self-abort":
            await context.abort(grpc.StatusCode.UNAVAILABLE, "handler aborted itself")
        raise ERRORS[request.name]


@pytest.fixture
async def target() -> AsyncIterator[str]:
    server = grpc.aio.server()
    service_domain_pb2_grpc.add_DomainAPIServicer_to_server(_Servicer(), server)  # type: ignore[no-untyped-call]  # generated grpc code is untyped
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def typed_stub(target: str) -> AsyncIterator[service_domain_pb2_grpc.DomainAPIStub]:
    """A stub whose errors are decoded by the official client's interceptor (no retries)."""
    channel = grpc.aio.insecure_channel(target, interceptors=[CadenceErrorInterceptor()])
    yield service_domain_pb2_grpc.DomainAPIStub(channel)  # type: ignore[no-untyped-call]  # generated grpc code is untyped
    await channel.close()


@pytest.fixture
async def raw_stub(target: str) -> AsyncIterator[service_domain_pb2_grpc.DomainAPIStub]:
    channel = grpc.aio.insecure_channel(target)
    yield service_domain_pb2_grpc.DomainAPIStub(channel)  # type: ignore[no-untyped-call]  # generated grpc code is untyped
    await channel.close()


async def _raise(stub: service_domain_pb2_grpc.DomainAPIStub, name: str) -> Exception:
    with pytest.raises(Exception) as info:
        await stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name=name))
    return info.value


@pytest.mark.parametrize(
    ("name", "exc_type", "code"),
    [
        ("not-exists", cadence_error.EntityNotExistsError, grpc.StatusCode.NOT_FOUND),
        (
            "completed",
            cadence_error.WorkflowExecutionAlreadyCompletedError,
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "started",
            cadence_error.WorkflowExecutionAlreadyStartedError,
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        ("domain-exists", cadence_error.DomainAlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
        (
            "cancel-requested",
            cadence_error.CancellationAlreadyRequestedError,
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        ("query-failed", cadence_error.QueryFailedError, grpc.StatusCode.INVALID_ARGUMENT),
        ("limit", cadence_error.LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("busy", cadence_error.ServiceBusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_typed_errors_decode_to_client_exception_classes(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
    name: str,
    exc_type: type[cadence_error.CadenceRpcError],
    code: grpc.StatusCode,
) -> None:
    exc = await _raise(typed_stub, name)
    assert type(exc) is exc_type
    assert isinstance(exc, cadence_error.CadenceRpcError)
    assert exc.code == code
    assert exc.args[0] == ERRORS[name].message


async def test_already_started_carries_request_and_run_ids(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    exc = await _raise(typed_stub, "started")
    assert isinstance(exc, cadence_error.WorkflowExecutionAlreadyStartedError)
    assert exc.start_request_id == "req-1"
    assert exc.run_id == "run-1"


async def test_entity_not_exists_names_the_cluster(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    exc = await _raise(typed_stub, "not-exists")
    assert isinstance(exc, cadence_error.EntityNotExistsError)
    # The servicer's cluster_name; equal clusters mean "do not retry elsewhere".
    assert exc.current_cluster == "test-cluster"
    assert exc.active_cluster == "test-cluster"


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("bad", grpc.StatusCode.INVALID_ARGUMENT),
        ("unicode", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_untyped_errors_have_code_and_message_but_no_details(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
    name: str,
    code: grpc.StatusCode,
) -> None:
    exc = await _raise(typed_stub, name)
    assert type(exc) is cadence_error.CadenceRpcError
    assert exc.code == code
    assert exc.args[0] == ERRORS[name].message
    raw = await _raise(raw_stub, name)
    assert isinstance(raw, grpc.aio.AioRpcError)
    status = rpc_status.from_call(raw)
    # A Status is still sent (code and message agree with the call) but with no details.
    assert status is not None
    assert list(status.details) == []


async def test_details_are_typed_any_and_status_matches_call(
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    raw = await _raise(raw_stub, "started")
    assert isinstance(raw, grpc.aio.AioRpcError)
    status = rpc_status.from_call(raw)  # raises ValueError on any code/message mismatch
    assert status is not None
    assert status.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert status.message == raw.details() == "already started"
    assert status.details[0].type_url == (
        "type.googleapis.com/uber.cadence.api.v1.WorkflowExecutionAlreadyStartedError"
    )
    started = error_pb2.WorkflowExecutionAlreadyStartedError()
    assert status.details[0].Unpack(started)
    assert (started.start_request_id, started.run_id) == ("req-1", "run-1")


async def test_unexpected_exception_becomes_internal_without_internals(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    with structlog.testing.capture_logs() as logs:
        exc = await _raise(typed_stub, "crash")
    assert type(exc) is cadence_error.CadenceRpcError
    assert exc.code == grpc.StatusCode.INTERNAL
    assert "secret" not in str(exc)
    assert "hunter2" not in str(exc)
    m = INTERNAL_TEXT.fullmatch(exc.args[0])
    assert m is not None, exc.args[0]
    # One line, with the traceback, under the id the client was given.
    assert [e["event"] for e in logs] == ["rpc_internal_error"]
    assert logs[0]["rpc_method"] == "DescribeDomain"
    assert logs[0]["log_level"] == "error"
    assert logs[0]["error_id"] == m.group(1)
    assert logs[0]["exc_info"] is True


@pytest.mark.parametrize("name", ["internal", "rebuilt"])
async def test_internal_error_text_never_reaches_the_client(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
    name: str,
) -> None:
    # An InternalServiceError raised on purpose (a shard's reply, rebuilt by the bus) says
    # what went wrong inside: that text is for the log, not for the caller.
    with structlog.testing.capture_logs() as logs:
        exc = await _raise(typed_stub, name)
    assert type(exc) is cadence_error.CadenceRpcError
    assert exc.code == grpc.StatusCode.INTERNAL
    m = INTERNAL_TEXT.fullmatch(exc.args[0])
    assert m is not None, exc.args[0]
    assert [e["event"] for e in logs] == ["rpc_internal_error"]
    assert logs[0]["error_id"] == m.group(1)
    assert logs[0]["error"] == ERRORS[name].message
    # Where it happened logged the traceback; the frontend does not log it again.
    assert "exc_info" not in logs[0]
    raw = await _raise(raw_stub, name)
    assert isinstance(raw, grpc.aio.AioRpcError)
    status = rpc_status.from_call(raw)
    assert status is not None
    assert INTERNAL_TEXT.fullmatch(status.message)
    assert list(status.details) == []


async def test_a_huge_message_is_capped_and_keeps_its_typed_error(
    typed_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    # Sent whole, 20,000 characters broke the client's metadata limit: RESOURCE_EXHAUSTED.
    exc = await _raise(typed_stub, "huge")
    assert type(exc) is cadence_error.EntityNotExistsError
    assert exc.code == grpc.StatusCode.NOT_FOUND
    message = exc.args[0]
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message.startswith("Domain: ddd")
    assert message.endswith(f"... (message cut, {len(ERRORS['huge'].message)} bytes)")


def test_message_cap_cuts_at_a_character_boundary() -> None:
    long = "\u20ac" * 2000  # 3 bytes of UTF-8 each
    st = to_rpc_status(errors.BadRequestError(long))
    raw = st.message.encode("utf-8")
    assert len(raw) <= MAX_MESSAGE_BYTES
    assert st.message.startswith("\u20ac" * 300)
    assert st.message.endswith("... (message cut, 6000 bytes)")
    short = errors.BadRequestError("x" * MAX_MESSAGE_BYTES)
    assert to_rpc_status(short).message == short.message


def test_quote_keeps_short_values_and_cuts_long_ones() -> None:
    assert errors.quote("orders") == "orders"
    assert errors.quote("x" * errors.QUOTE_LIMIT) == "x" * errors.QUOTE_LIMIT
    assert errors.quote("y" * 10_000) == "y" * errors.QUOTE_LIMIT + "... (10000 characters)"
    assert errors.quote("abcdef", limit=3) == "abc... (6 characters)"


async def test_handler_abort_passes_through(
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    raw = await _raise(raw_stub, "self-abort")
    assert isinstance(raw, grpc.aio.AioRpcError)
    assert raw.code() == grpc.StatusCode.UNAVAILABLE
    assert raw.details() == "handler aborted itself"


async def test_rpc_service_is_echoed_in_trailers_on_success_and_error(
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    md = ((RPC_SERVICE_KEY, "cadence-frontend"), ("rpc-caller", "test"))
    call = raw_stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="ok"), metadata=md)
    await call
    assert (RPC_SERVICE_KEY, "cadence-frontend") in tuple(await call.trailing_metadata())

    call = raw_stub.DescribeDomain(
        service_domain_pb2.DescribeDomainRequest(name="not-exists"), metadata=md
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    trailers = tuple(await call.trailing_metadata())
    assert (RPC_SERVICE_KEY, "cadence-frontend") in trailers
    # The echo did not displace the status details.
    assert rpc_status.from_call(await _as_call(call)) is not None


async def _as_call(call: Any) -> Any:
    """An object with the sync grpc.Call accessors `from_call` needs."""

    class _Done:
        def __init__(self, code: Any, details: Any, trailers: Any) -> None:
            self._c, self._d, self._t = code, details, trailers

        def code(self) -> Any:
            return self._c

        def details(self) -> Any:
            return self._d

        def trailing_metadata(self) -> Any:
            return self._t

    return _Done(await call.code(), await call.details(), await call.trailing_metadata())


async def test_no_echo_without_rpc_service_header(
    raw_stub: service_domain_pb2_grpc.DomainAPIStub,
) -> None:
    call = raw_stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="ok"))
    await call
    assert all(k != RPC_SERVICE_KEY for k, _ in tuple(await call.trailing_metadata()))


async def test_official_client_sees_typed_error_through_its_full_stack(target: str) -> None:
    # The real Client adds YARPC metadata, retries and metrics interceptors on top.
    async with Client(domain="d", target=target) as client:
        with pytest.raises(cadence_error.DomainAlreadyExistsError):
            await client.domain_stub.DescribeDomain(
                service_domain_pb2.DescribeDomainRequest(name="domain-exists")
            )
        await client.domain_stub.DescribeDomain(service_domain_pb2.DescribeDomainRequest(name="ok"))


def test_to_rpc_status_for_every_error_kind() -> None:
    for err in ERRORS.values():
        st = to_rpc_status(err)
        assert isinstance(st, status_pb2.Status)
        assert st.code == grpc_code(err).value[0]
        if grpc_code(err) == grpc.StatusCode.INTERNAL:
            assert st.message == internal_message() == "Internal service error."
        elif err is not ERRORS["huge"]:
            assert st.message == err.message
        untyped = isinstance(err, errors.BadRequestError | errors.InternalServiceError)
        assert len(st.details) == (0 if untyped else 1)
        if not untyped:
            assert st.details[0].type_url.endswith(f"uber.cadence.api.v1.{err.kind}")


def test_unknown_service_error_subclass_maps_to_its_base() -> None:
    class DomainMissing(errors.EntityNotExistsError):
        pass

    assert grpc_code(DomainMissing("x")) == grpc.StatusCode.NOT_FOUND
    assert grpc_code(errors.ServiceError("x")) == grpc.StatusCode.INTERNAL
