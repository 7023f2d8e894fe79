"""Fuzzing the frontend: every RPC of every service, requests drawn from the proto descriptors.

Hypothesis builds requests field by field from each method's input descriptor: numbers at and
past every edge (NaN, infinities, int32/int64 limits, negatives), Durations and Timestamps in
and out of their ranges (year 10000, nanos of the wrong sign, 1,000 years), enum numbers the
server does not know, strings empty, huge, or naming a real domain, random bytes for tokens,
payloads and page tokens, nested messages, repeated fields and maps. A second test sends raw
mutated bytes (truncated, bit-flipped, random) as the request body.

Against one live embedded server (in a thread of its own, called with the sync gRPC client)
every call must come back with a Cadence status: never INTERNAL or UNKNOWN, never a hang (the
long polls may run to their deadline), messages short enough for the transport. Afterwards
the server is healthy and the workflow that existed before (in a domain the fuzzer never
names) is unchanged: its history, its description, its domain.

CADENZA_FUZZ_EXAMPLES sets the examples per method (default 40: about 2,300 requests, a
minute or so); a long run is, e.g., CADENZA_FUZZ_EXAMPLES=2000.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cadence.api.v1 import (
    common_pb2,
    service_domain_pb2,
    service_meta_pb2,
    service_schedule_pb2,
    service_visibility_pb2,
    service_worker_pb2,
    service_workflow_pb2,
    tasklist_pb2,
)
from google.protobuf import duration_pb2, timestamp_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from engine.config import EngineConfig
from engine.server import Server

EXAMPLES = int(os.environ.get("CADENZA_FUZZ_EXAMPLES", "40"))
FUZZ_DOMAIN = "fuzz-domain"
KEEPER_DOMAIN = "keeper-domain-never-named"
CALL_TIMEOUT = 3.0
# Methods that may wait for something to happen until the caller's deadline.
WAITING = {
    "PollForDecisionTask",
    "PollForActivityTask",
    "GetWorkflowExecutionHistory",
    "QueryWorkflow",
}
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# A status message longer than this would strain the transport's metadata limit.
MAX_MESSAGE = 4096

SERVICES = [
    m.DESCRIPTOR.services_by_name[name]
    for m, name in (
        (service_workflow_pb2, "WorkflowAPI"),
        (service_worker_pb2, "WorkerAPI"),
        (service_visibility_pb2, "VisibilityAPI"),
        (service_domain_pb2, "DomainAPI"),
        (service_meta_pb2, "MetaAPI"),
        (service_schedule_pb2, "ScheduleAPI"),
    )
]
METHODS = [method for service in SERVICES for method in service.methods]

_F = FieldDescriptor
_INT32_EDGES = [0, 1, -1, 2, 100, 2**31 - 1, -(2**31)]
_INT64_EDGES = [*_INT32_EDGES, 2**63 - 1, -(2**63), 10**12]
_FLOAT_EDGES = [0.0, -0.0, 1.0, 2.0, -1.0, 0.5, float("nan"), float("inf"), float("-inf"), 1e308]
_SECONDS_EDGES = [0, 1, -1, 60, 2**31 - 1, 2**31, 1000 * 365 * 86_400, 315_576_000_000, 10**15]
_NANOS_EDGES = [0, 1, -1, 999_999_999, 1_000_000_000, -1_000_000_000, 2**31 - 1]
_STRINGS = [
    "",
    FUZZ_DOMAIN,
    "fuzz-wf",
    "x" * 1001,
    "y" * 20_000,
    str(uuid.UUID(int=7)),
    "\x00",
    "é漢字🙂",
    "CustomIntField",
    "WorkflowType = 'x' ORDER BY StartTime",
    "0 0 30 2 *",
    "* * * * *",
    "cadenza",
]
_BYTES = [b"", b"{}", b"\xff\xfe", b"null", b'"x"', b"x" * 3_000_000, b"[1,2]"]


def _leaf(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = fd.type
    if t in (_F.TYPE_INT32, _F.TYPE_SINT32, _F.TYPE_SFIXED32):
        return st.sampled_from(_INT32_EDGES) | st.integers(-(2**31), 2**31 - 1)
    if t in (_F.TYPE_INT64, _F.TYPE_SINT64, _F.TYPE_SFIXED64):
        return st.sampled_from(_INT64_EDGES) | st.integers(-(2**63), 2**63 - 1)
    if t in (_F.TYPE_UINT32, _F.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (_F.TYPE_UINT64, _F.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t in (_F.TYPE_DOUBLE, _F.TYPE_FLOAT):
        return st.sampled_from(_FLOAT_EDGES) | st.floats(width=32 if t == _F.TYPE_FLOAT else 64)
    if t == _F.TYPE_BOOL:
        return st.booleans()
    if t == _F.TYPE_STRING:
        return st.sampled_from(_STRINGS) | st.text(max_size=40)
    if t == _F.TYPE_BYTES:
        return st.sampled_from(_BYTES) | st.binary(max_size=64)
    if t == _F.TYPE_ENUM:
        assert fd.enum_type is not None  # every enum field has its enum type
        known = [v.number for v in fd.enum_type.values]
        return st.sampled_from([*known, 99, -1, 2**31 - 1])
    raise AssertionError(f"unhandled field type {t} of {fd.full_name}")


def _duration() -> st.SearchStrategy[duration_pb2.Duration]:
    return st.builds(
        duration_pb2.Duration,
        # Mostly the edges: a random int64 is almost never one that matters.
        seconds=st.sampled_from(_SECONDS_EDGES)
        | st.sampled_from(_SECONDS_EDGES)
        | st.integers(-(2**40), 2**40),
        nanos=st.sampled_from([0, 0, 0, *_NANOS_EDGES]),
    )


def _timestamp() -> st.SearchStrategy[timestamp_pb2.Timestamp]:
    return st.builds(
        timestamp_pb2.Timestamp,
        seconds=st.sampled_from([0, -1, 253_402_300_799, 253_402_300_800, -62_135_596_801])
        | st.integers(-(2**40), 2**40),
        nanos=st.sampled_from(_NANOS_EDGES),
    )


# Valid values by field name: half the requests start from them, so that random values also
# reach the paths behind validation (the shard, the stores) instead of stopping at the first
# missing field.
_VALID: dict[str, Any] = {
    "domain": FUZZ_DOMAIN,
    "name": FUZZ_DOMAIN,
    "workflow_id": "fuzz-wf",
    "workflow_type": common_pb2.WorkflowType(name="FuzzWorkflow"),
    "task_list": tasklist_pb2.TaskList(name="fuzz-tl"),
    "execution_start_to_close_timeout": duration_pb2.Duration(seconds=60),
    "task_start_to_close_timeout": duration_pb2.Duration(seconds=10),
    "workflow_execution": common_pb2.WorkflowExecution(workflow_id="fuzz-wf"),
    "signal_name": "fuzz-signal",
    "identity": "fuzzer",
    "activity_id": "fuzz-activity",
    "page_size": 10,
}


def _valid_base(desc: Descriptor) -> dict[str, Any]:
    base: dict[str, Any] = {}
    for fd in desc.fields:
        if fd.name == "request_id":
            base[fd.name] = str(uuid.uuid4())
        elif fd.name in _VALID and fd.message_type is not None:
            if fd.message_type.full_name == _VALID[fd.name].DESCRIPTOR.full_name:
                base[fd.name] = _VALID[fd.name]
        elif fd.name in _VALID and not isinstance(_VALID[fd.name], Message):
            base[fd.name] = _VALID[fd.name]
        elif fd.message_type is not None and fd.name in ("start_request", "request"):
            base[fd.name] = _build(GetMessageClass(fd.message_type), _valid_base(fd.message_type))
    return base


def _message(desc: Descriptor, depth: int) -> st.SearchStrategy[Message]:
    cls = GetMessageClass(desc)
    if desc.full_name == "google.protobuf.Duration":
        return _duration()
    if desc.full_name == "google.protobuf.Timestamp":
        return _timestamp()
    if depth > 3:
        return st.just(cls())
    fields = {fd.name: st.none() | _field(fd, depth) for fd in desc.fields}
    drawn = st.fixed_dictionaries({}, optional=fields)
    if depth == 0 and fields:
        # A few random fields over a valid request, or a request of random fields only.
        names = sorted(fields)
        few = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True).flatmap(
            lambda chosen: st.fixed_dictionaries({n: fields[n] for n in chosen})
        )
        over_valid = few.map(lambda values: _valid_base(desc) | values)
        return st.one_of(drawn, over_valid).map(lambda values: _build(cls, values))
    return drawn.map(lambda values: _build(cls, values))


def _field(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        key = _leaf(fd.message_type.fields_by_name["key"])
        value_fd = fd.message_type.fields_by_name["value"]
        value = _single(value_fd, depth + 1)
        return st.dictionaries(key, value, max_size=2)
    one = _single(fd, depth + 1)
    if fd.is_repeated:
        return st.lists(one, max_size=3)
    return one


def _single(fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if fd.message_type is not None:
        return _message(fd.message_type, depth)
    return _leaf(fd)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    for name, value in values.items():
        if value is None:
            continue
        target = getattr(msg, name)
        fd = msg.DESCRIPTOR.fields_by_name[name]
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, Message):
                    target[k].CopyFrom(v)
                else:
                    target[k] = v
        elif isinstance(value, list):
            if fd.message_type is not None:
                for v in value:
                    target.add().CopyFrom(v)
            else:
                target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(msg, name, value)
    return msg


# -- the live server ----------------------------------------------------------------------------


@dataclass
class Live:
    server: Server
    loop: asyncio.AbstractEventLoop
    channel: grpc.Channel
    keeper: common_pb2.WorkflowExecution

    def call(self, method: MethodDescriptor, body: bytes) -> tuple[grpc.StatusCode, str]:
        path = f"/{method.containing_service.full_name}/{method.name}"
        stub = self.channel.unary_unary(path)
        try:
            stub(body, timeout=CALL_TIMEOUT)
        except grpc.RpcError as err:
            return err.code(), err.details() or ""
        return grpc.StatusCode.OK, ""

    def keeper_snapshot(self) -> tuple[bytes, ...]:
        wf = service_workflow_pb2
        history = self._unary(
            "WorkflowAPI",
            "GetWorkflowExecutionHistory",
            wf.GetWorkflowExecutionHistoryRequest(
                domain=KEEPER_DOMAIN, workflow_execution=self.keeper
            ),
            wf.GetWorkflowExecutionHistoryResponse,
        )
        described = self._unary(
            "WorkflowAPI",
            "DescribeWorkflowExecution",
            wf.DescribeWorkflowExecutionRequest(
                domain=KEEPER_DOMAIN, workflow_execution=self.keeper
            ),
            wf.DescribeWorkflowExecutionResponse,
        )
        domain = self._unary(
            "DomainAPI",
            "DescribeDomain",
            service_domain_pb2.DescribeDomainRequest(name=KEEPER_DOMAIN),
            service_domain_pb2.DescribeDomainResponse,
        )
        return (
            history.history.SerializeToString(deterministic=True),
            described.SerializeToString(deterministic=True),
            domain.SerializeToString(deterministic=True),
        )

    def _unary(self, service: str, method: str, request: Message, response: Any) -> Any:
        stub = self.channel.unary_unary(
            f"/uber.cadence.api.v1.{service}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response.FromString,
        )
        return stub(request, timeout=10)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    db: Path = tmp_path_factory.mktemp("fuzz") / "cadenza.db"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    server = Server(EngineConfig(persistence_url=f"sqlite:///{db}", port=0))
    run(server.start())
    channel = grpc.insecure_channel(server.address)
    live = Live(server, loop, channel, common_pb2.WorkflowExecution())
    try:
        for name in (FUZZ_DOMAIN, KEEPER_DOMAIN):
            live._unary(
                "DomainAPI",
                "RegisterDomain",
                service_domain_pb2.RegisterDomainRequest(
                    name=name,
                    workflow_execution_retention_period=duration_pb2.Duration(seconds=86400),
                ),
                service_domain_pb2.RegisterDomainResponse,
            )
        wf = service_workflow_pb2
        start = wf.StartWorkflowExecutionRequest(
            domain=KEEPER_DOMAIN,
            workflow_id="keeper",
            workflow_type=common_pb2.WorkflowType(name="Keeper"),
            task_list=tasklist_pb2.TaskList(name="keeper-tl"),
            execution_start_to_close_timeout=duration_pb2.Duration(seconds=3600),
            task_start_to_close_timeout=duration_pb2.Duration(seconds=10),
            request_id=str(uuid.uuid4()),
        )
        started = live._unary(
            "WorkflowAPI", "StartWorkflowExecution", start, wf.StartWorkflowExecutionResponse
        )
        live.keeper = common_pb2.WorkflowExecution(workflow_id="keeper", run_id=started.run_id)
        live._unary(
            "WorkflowAPI",
            "SignalWorkflowExecution",
            wf.SignalWorkflowExecutionRequest(
                domain=KEEPER_DOMAIN, workflow_execution=live.keeper, signal_name="before"
            ),
            wf.SignalWorkflowExecutionResponse,
        )
        yield live
    finally:
        channel.close()
        run(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def before(live: Live) -> tuple[bytes, ...]:
    return live.keeper_snapshot()


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


def _send_and_check(live: Live, method: MethodDescriptor, body: bytes) -> None:
    """Send `body` as a request of `method`; the answer must be a Cadence status."""
    code, message = live.call(method, body)
    note(f"{code} {message[:200]!r}")
    assert code not in NEVER, f"{method.name}: {code} {message[:300]!r}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        assert method.name in WAITING, f"{method.name} hung until the deadline"
    assert len(message) <= MAX_MESSAGE, f"{method.name}: a {len(message)}-character message"


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
@FUZZ
@given(data=st.data())
def test_generated_requests_get_typed_answers(
    live: Live, before: tuple[bytes, ...], method: MethodDescriptor, data: st.DataObject
) -> None:
    request = data.draw(_message(method.input_type, 0), label="request")
    _send_and_check(live, method, request.SerializeToString())


@st.composite
def _mutated(draw: st.DrawFn, method: MethodDescriptor) -> bytes:
    seed = draw(_message(method.input_type, 2)).SerializeToString()
    how = draw(st.sampled_from(["truncate", "flip", "random", "append"]))
    if how == "random" or not seed:
        return draw(st.binary(min_size=1, max_size=200))
    if how == "truncate":
        return seed[: draw(st.integers(0, max(0, len(seed) - 1)))]
    if how == "append":
        return seed + draw(st.binary(min_size=1, max_size=16))
    i = draw(st.integers(0, len(seed) - 1))
    return seed[:i] + bytes([seed[i] ^ draw(st.integers(1, 255))]) + seed[i + 1 :]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.containing_service.name}.{m.name}")
@settings(FUZZ, max_examples=max(5, EXAMPLES // 4))
@given(data=st.data())
def test_mutated_bytes_get_typed_answers(
    live: Live, before: tuple[bytes, ...], method: MethodDescriptor, data: st.DataObject
) -> None:
    _send_and_check(live, method, data.draw(_mutated(method), label="body"))


def test_afterwards_the_server_is_healthy_and_nothing_stored_changed(
    live: Live, before: tuple[bytes, ...]
) -> None:
    """Runs after the fuzzing tests of this module (pytest keeps the file's order)."""
    assert live.keeper_snapshot() == before
    health = live._unary(
        "MetaAPI",
        "Health",
        service_meta_pb2.HealthRequest(),
        service_meta_pb2.HealthResponse,
    )
    assert health.ok
    # The keeper's run still takes a signal, and answers for it.
    wf = service_workflow_pb2
    live._unary(
        "WorkflowAPI",
        "SignalWorkflowExecution",
        wf.SignalWorkflowExecutionRequest(
            domain=KEEPER_DOMAIN, workflow_execution=live.keeper, signal_name="after"
        ),
        wf.SignalWorkflowExecutionResponse,
    )
    assert live.keeper_snapshot()[0] != before[0]
