"""What reaches the wire when a call goes wrong below the API: a started server, called
through the official client's stubs or a raw grpc.aio channel.

- Request bytes that do not parse are answered INVALID_ARGUMENT (a BadRequestError naming
  the method), methods the server does not implement UNIMPLEMENTED; each logs one line and
  no traceback (engine/frontend/services.py).
- An INTERNAL answer says nothing of the internals: a fixed text and a correlation id that
  the server's log line carries with the real cause (engine/frontend/errors.py).
- An error that echoes a huge input stays within the transport's metadata limit and keeps
  its typed class: echoed values are cut (engine.errors.quote), and every message is capped
  where the status is built.

Calls that test one answer go through `typed`: a channel with the official client's error
decoding (CadenceErrorInterceptor) but without its retries, so one call is one attempt and
its log lines can be counted.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import structlog
from cadence import Client
from cadence._internal.rpc.error import CadenceErrorInterceptor
from cadence.api.v1 import (
    common_pb2,
    service_domain_pb2,
    service_domain_pb2_grpc,
    service_meta_pb2,
    service_schedule_pb2,
    service_schedule_pb2_grpc,
    service_workflow_pb2,
    service_workflow_pb2_grpc,
    tasklist_pb2,
)
from cadence.error import (
    CadenceRpcError,
    EntityNotExistsError,
    WorkflowExecutionAlreadyStartedError,
)
from google.protobuf import duration_pb2, field_mask_pb2
from grpc_status import rpc_status

from engine.frontend.errors import MAX_MESSAGE_BYTES, RPC_SERVICE_KEY
from engine.persistence.sqlite.store import SqliteStore
from engine.server import Server
from tests.e2e.harness import DOMAIN, register_domain, started_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

CALL_TIMEOUT = 5.0
WORKFLOW_API = "/uber.cadence.api.v1.WorkflowAPI"
INTERNAL_TEXT = re.compile(r"Internal service error \(id ([0-9a-f]{8})\)\.")


@dataclass
class Env:
    server: Server
    client: Client
    channel: grpc.aio.Channel  # plain: statuses and trailers as sent
    typed: grpc.aio.Channel  # the official client's error decoding, no retries


@contextlib.asynccontextmanager
async def _env(server: Server) -> AsyncIterator[Env]:
    client = Client(domain=DOMAIN, target=server.address)
    channel = grpc.aio.insecure_channel(server.address)
    typed = grpc.aio.insecure_channel(server.address, interceptors=[CadenceErrorInterceptor()])
    try:
        await register_domain(client)
        yield Env(server, client, channel, typed)
    finally:
        await typed.close()
        await channel.close()
        await client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    server = await started_server(tmp_path_factory.mktemp("wire") / "cadenza.db")
    try:
        async with _env(server) as e:
            yield e
    finally:
        await server.stop()


@dataclass
class Logs:
    events: list[MutableMapping[str, Any]]  # structlog
    records: list[logging.LogRecord]  # stdlib: where grpc itself logs


@contextlib.contextmanager
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    """The server's log lines while the block runs; of the stdlib ones, those of grpc
    itself (its "Unexpected error in servicer" tracebacks) and any with a traceback (the
    drivers of the distributed backends may warn of other things meanwhile)."""
    caplog.clear()
    with caplog.at_level(logging.WARNING), structlog.testing.capture_logs() as events:
        logs = Logs(events, [])
        yield logs
    logs.records = [r for r in caplog.records if r.name.startswith("grpc") or r.exc_info]


def assert_one_line(logs: Logs, event: str, rpc_method: str) -> MutableMapping[str, Any]:
    """Exactly one line about the call, no traceback anywhere, nothing from grpc itself."""
    about = [e for e in logs.events if e.get("rpc_method") == rpc_method]
    assert [e["event"] for e in about] == [event]
    assert not [e for e in logs.events if "exc_info" in e or "exception" in e]
    assert logs.records == [], [r.getMessage() for r in logs.records]
    return about[0]


async def raw_call(channel: grpc.aio.Channel, method: str, body: bytes, **kw: Any) -> bytes:
    """Send `body` as the request of `method` byte for byte (identity serializers)."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    response: bytes = await call(body, timeout=CALL_TIMEOUT, **kw)
    return response


async def raw_error(channel: grpc.aio.Channel, method: str, body: bytes, **kw: Any) -> Any:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_call(channel, method, body, **kw)
    return info.value


def valid_start(**fields: Any) -> service_workflow_pb2.StartWorkflowExecutionRequest:
    req = service_workflow_pb2.StartWorkflowExecutionRequest(
        domain=DOMAIN,
        workflow_id=f"wire-{uuid.uuid4()}",
        workflow_type=common_pb2.WorkflowType(name="Wire"),
        task_list=tasklist_pb2.TaskList(name="wire-tl"),
        execution_start_to_close_timeout=duration_pb2.Duration(seconds=60),
        task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
        request_id=str(uuid.uuid4()),
    )
    for name, value in fields.items():
        setattr(req, name, value)
    return req


# --- item 6: undecodable requests ------------------------------------------------------------

# A string field (domain, field 1) whose bytes are not UTF-8: protobuf refuses it at parse.
BAD_UTF8 = b"\x0a\x03\xff\xfe\xfd"
GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


def _truncated() -> bytes:
    data = valid_start().SerializeToString()
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "body", [GARBAGE, BAD_UTF8, _truncated()], ids=["garbage", "invalid-utf8", "truncated"]
)
async def test_undecodable_request_is_a_bad_request_naming_the_method(
    env: Env, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    method = f"{WORKFLOW_API}/StartWorkflowExecution"
    with captured(caplog) as logs:
        with pytest.raises(CadenceRpcError) as info:
            await raw_call(env.typed, method, body)
        raw = await raw_error(env.channel, method, body)
    exc = info.value
    # A BadRequestError in Cadence's wire shape: INVALID_ARGUMENT, no details.
    assert type(exc) is CadenceRpcError
    assert exc.code == grpc.StatusCode.INVALID_ARGUMENT
    assert exc.args[0] == "Request body of StartWorkflowExecution could not be decoded."
    status = rpc_status.from_call(raw)  # raises unless code and message agree with the call
    assert status is not None
    assert status.message == raw.details() == exc.args[0]
    assert list(status.details) == []
    # One line per call (the typed and the raw one), and no traceback.
    about = [e for e in logs.events if e.get("rpc_method") == "StartWorkflowExecution"]
    assert [e["event"] for e in about] == ["rpc_request_undecodable"] * 2
    assert about[0]["size"] == len(body)
    assert not [e for e in logs.events if "exc_info" in e]
    assert logs.records == [], [r.getMessage() for r in logs.records]


async def test_undecodable_request_logs_one_line_without_traceback(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    with captured(caplog) as logs:
        err = await raw_error(env.channel, "/uber.cadence.api.v1.DomainAPI/DescribeDomain", GARBAGE)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Request body of DescribeDomain could not be decoded."
    line = assert_one_line(logs, "rpc_request_undecodable", "DescribeDomain")
    assert line["service"] == "DomainAPI"


async def test_empty_body_is_a_valid_request_of_defaults(env: Env) -> None:
    # An empty body parses (every field at its default): the call is served as such.
    health = service_meta_pb2.HealthResponse.FromString(
        await raw_call(env.channel, "/uber.cadence.api.v1.MetaAPI/Health", b"")
    )
    assert health.ok
    # And validated as such: the first missing field is named, not a decoding failure.
    err = await raw_error(env.channel, f"{WORKFLOW_API}/StartWorkflowExecution", b"")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "Domain not set on request."


async def test_rpc_service_is_echoed_on_undecodable_and_unimplemented(env: Env) -> None:
    md = ((RPC_SERVICE_KEY, "cadence-frontend"),)
    for method in (
        f"{WORKFLOW_API}/StartWorkflowExecution",
        f"{WORKFLOW_API}/ResetWorkflowExecution",
    ):
        err = await raw_error(env.channel, method, GARBAGE, metadata=md)
        assert (RPC_SERVICE_KEY, "cadence-frontend") in tuple(err.trailing_metadata())
        # The echo did not displace the status details.
        assert rpc_status.from_call(err) is not None


async def test_a_good_request_still_works_after_bad_ones(env: Env) -> None:
    await raw_error(env.channel, f"{WORKFLOW_API}/StartWorkflowExecution", GARBAGE)
    run = await env.client.workflow_stub.StartWorkflowExecution(valid_start(), timeout=CALL_TIMEOUT)
    assert run.run_id


# --- item 6: unimplemented methods ------------------------------------------------------------


async def test_unimplemented_workflow_methods_are_unimplemented_with_one_line(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    stub = service_workflow_pb2_grpc.WorkflowAPIStub(env.typed)  # type: ignore[no-untyped-call]
    for name, request in (
        ("ResetWorkflowExecution", service_workflow_pb2.ResetWorkflowExecutionRequest()),
        (
            "StartWorkflowExecutionAsync",
            service_workflow_pb2.StartWorkflowExecutionAsyncRequest(request=valid_start()),
        ),
    ):
        with captured(caplog) as logs, pytest.raises(CadenceRpcError) as info:
            await getattr(stub, name)(request, timeout=CALL_TIMEOUT)
        assert type(info.value) is CadenceRpcError
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
        assert info.value.args[0] == f"{name} is not implemented by this server."
        line = assert_one_line(logs, "rpc_unimplemented", name)
        assert line["service"] == "WorkflowAPI"


async def test_schedule_api_is_unimplemented_through_the_official_client(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # The official client has ScheduleAPI calls; the server has no schedules yet.
    with captured(caplog) as logs, pytest.raises(CadenceRpcError) as info:
        await env.client.describe_schedule("nightly")
    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert info.value.args[0] == "DescribeSchedule is not implemented by this server."
    assert_one_line(logs, "rpc_unimplemented", "DescribeSchedule")
    stub = service_schedule_pb2_grpc.ScheduleAPIStub(env.channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.CreateSchedule(
            service_schedule_pb2.CreateScheduleRequest(domain=DOMAIN), timeout=CALL_TIMEOUT
        )
    assert raw.value.code() == grpc.StatusCode.UNIMPLEMENTED
    status = rpc_status.from_call(raw.value)
    assert status is not None
    assert status.message == "CreateSchedule is not implemented by this server."


# --- item 8: errors that echo huge input ------------------------------------------------------


def assert_short(message: str) -> None:
    assert len(message) < 300, message


async def test_describe_domain_with_a_long_name_names_it_briefly(env: Env) -> None:
    name = "d" * 1000  # the longest name a domain request may carry
    with pytest.raises(EntityNotExistsError) as info:
        await env.client.domain_stub.DescribeDomain(
            service_domain_pb2.DescribeDomainRequest(name=name), timeout=CALL_TIMEOUT
        )
    message = info.value.args[0]
    assert_short(message)
    assert message.startswith("Domain: " + "d" * 100 + "...")
    assert "(1000 characters)" in message


async def test_describe_domain_with_a_huge_name_keeps_its_typed_error(env: Env) -> None:
    # 10,000 characters: echoed whole, the trailers broke the client's metadata limit and it
    # saw RESOURCE_EXHAUSTED "Stream removed" instead of the server's answer.
    stub = service_domain_pb2_grpc.DomainAPIStub(env.typed)  # type: ignore[no-untyped-call]
    with pytest.raises(CadenceRpcError) as info:
        await stub.DescribeDomain(
            service_domain_pb2.DescribeDomainRequest(name="d" * 10_000), timeout=CALL_TIMEOUT
        )
    exc = info.value
    # NOT_FOUND naming the domain, or INVALID_ARGUMENT if the frontend refuses names over
    # 1,000 characters first: a typed answer either way, never the transport's.
    assert (type(exc), exc.code) in {
        (EntityNotExistsError, grpc.StatusCode.NOT_FOUND),
        (CadenceRpcError, grpc.StatusCode.INVALID_ARGUMENT),
    }, exc
    assert_short(exc.args[0])


async def test_signal_to_an_unknown_long_workflow_id_names_it_briefly(env: Env) -> None:
    workflow_id = "w" * 1000
    with pytest.raises(EntityNotExistsError) as info:
        await env.client.workflow_stub.SignalWorkflowExecution(
            service_workflow_pb2.SignalWorkflowExecutionRequest(
                domain=DOMAIN,
                workflow_execution=common_pb2.WorkflowExecution(workflow_id=workflow_id),
                signal_name="s" * 1000,
                request_id=str(uuid.uuid4()),
            ),
            timeout=CALL_TIMEOUT,
        )
    message = info.value.args[0]
    assert_short(message)
    assert message.startswith("Workflow execution not found: " + "w" * 100 + "...")
    assert "(1000 characters)" in message


async def test_already_started_with_a_long_workflow_id_names_it_briefly(env: Env) -> None:
    workflow_id = f"{uuid.uuid4()}-" + "x" * 900
    await env.client.workflow_stub.StartWorkflowExecution(
        valid_start(workflow_id=workflow_id), timeout=CALL_TIMEOUT
    )
    with pytest.raises(WorkflowExecutionAlreadyStartedError) as info:
        await env.client.workflow_stub.StartWorkflowExecution(
            valid_start(workflow_id=workflow_id), timeout=CALL_TIMEOUT
        )
    assert_short(info.value.args[0])
    assert workflow_id[:100] in info.value.args[0]
    assert info.value.run_id


async def test_update_domain_with_a_huge_mask_path_names_it_briefly(env: Env) -> None:
    with pytest.raises(CadenceRpcError) as info:
        await env.client.domain_stub.UpdateDomain(
            service_domain_pb2.UpdateDomainRequest(
                name=DOMAIN, update_mask=field_mask_pb2.FieldMask(paths=["p" * 20_000])
            ),
            timeout=CALL_TIMEOUT,
        )
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert_short(info.value.args[0])
    assert "(20000 characters)" in info.value.args[0]


async def test_every_message_is_capped_where_the_status_is_built(env: Env) -> None:
    # A message that echoes input without `quote` (here: the request id, quoted Go-style
    # with every non-ASCII character escaped to six) is cut by the final cap.
    with pytest.raises(CadenceRpcError) as info:
        await env.client.workflow_stub.StartWorkflowExecution(
            valid_start(request_id="\u20ac" * 1000), timeout=CALL_TIMEOUT
        )
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = info.value.args[0]
    assert len(message.encode()) <= MAX_MESSAGE_BYTES
    assert message.startswith("requestId ")


# --- item 7: internals never reach the client ------------------------------------------------

SECRET = "OverflowError('secret internals: Python int too large to convert to C long')"


class FaultyStore(SqliteStore):
    """Fault injection: any lookup of a `poison-` workflow fails like a bug would."""

    async def get_current_run(self, shard_id: int, domain_id: str, workflow_id: str) -> Any:
        if workflow_id.startswith("poison-"):
            raise OverflowError("secret internals: Python int too large to convert to C long")
        return await super().get_current_run(shard_id, domain_id, workflow_id)


@pytest_asyncio.fixture(loop_scope="module")
async def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Env]:
    monkeypatch.setattr(
        "engine.server.open_store", lambda url: FaultyStore(url[len("sqlite:///") :])
    )
    server = await started_server(tmp_path / "cadenza.db")
    try:
        async with _env(server) as e:
            yield e
    finally:
        await server.stop()


def _poisoned_execution() -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=f"poison-{uuid.uuid4()}")


def assert_internal(exc: CadenceRpcError) -> str:
    """The fixed INTERNAL answer; returns its correlation id."""
    assert type(exc) is CadenceRpcError
    assert exc.code == grpc.StatusCode.INTERNAL
    text = str(exc)
    for leak in ("secret", "Overflow", "Traceback", "apply"):
        assert leak not in text
    m = INTERNAL_TEXT.fullmatch(exc.args[0])
    assert m is not None, exc.args[0]
    return m.group(1)


@pytest.mark.embedded_only  # injects faults into the SQLite store
async def test_shard_failure_reaches_the_client_as_a_fixed_internal_error(
    faulty: Env, caplog: pytest.LogCaptureFixture
) -> None:
    # The shard applies the signal, hits the bug, and replies InternalServiceError; neither
    # the shard's reply nor the frontend's answer may carry the exception's text.
    stub = service_workflow_pb2_grpc.WorkflowAPIStub(faulty.typed)  # type: ignore[no-untyped-call]
    execution = _poisoned_execution()
    with captured(caplog) as logs, pytest.raises(CadenceRpcError) as info:
        await stub.SignalWorkflowExecution(
            service_workflow_pb2.SignalWorkflowExecutionRequest(
                domain=DOMAIN,
                workflow_execution=execution,
                signal_name="s",
                request_id=str(uuid.uuid4()),
            ),
            timeout=CALL_TIMEOUT,
        )
    error_id = assert_internal(info.value)
    # The frontend's one line carries the id and what the shard answered, for the operator;
    # the traceback was logged once, where it happened (the shard, naming the workflow).
    lines = [e for e in logs.events if e["event"] == "rpc_internal_error"]
    assert len(lines) == 1
    assert lines[0]["error_id"] == error_id
    assert lines[0]["rpc_method"] == "SignalWorkflowExecution"
    assert "exc_info" not in lines[0]
    with_traceback = [e for e in logs.events if e.get("exc_info")]
    assert [(e["event"], e["workflow_id"]) for e in with_traceback] == [
        ("command_failed", execution.workflow_id)
    ]
    assert "Overflow" not in lines[0]["error"]


@pytest.mark.embedded_only  # injects faults into the SQLite store
async def test_frontend_failure_is_logged_once_with_its_traceback(
    faulty: Env, caplog: pytest.LogCaptureFixture
) -> None:
    stub = service_workflow_pb2_grpc.WorkflowAPIStub(faulty.typed)  # type: ignore[no-untyped-call]
    with captured(caplog) as logs, pytest.raises(CadenceRpcError) as info:
        await stub.DescribeWorkflowExecution(
            service_workflow_pb2.DescribeWorkflowExecutionRequest(
                domain=DOMAIN, workflow_execution=_poisoned_execution()
            ),
            timeout=CALL_TIMEOUT,
        )
    error_id = assert_internal(info.value)
    with_traceback = [e for e in logs.events if "exc_info" in e]
    assert [(e["event"], e["error_id"]) for e in with_traceback] == [
        ("rpc_internal_error", error_id)
    ]
    assert logs.records == []
