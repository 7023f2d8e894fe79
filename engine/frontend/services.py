"""Register the frontend's servicers on a grpc.aio server, method by method, from the
`uber.cadence.api.v1` service descriptors.

The generated `add_*Servicer_to_server` functions hand grpc the protobuf parser and the
servicer's methods as they are, so two kinds of call end in a traceback in the server log
and a status the client cannot type:

- request bytes that do not parse (garbage, a truncated message, invalid UTF-8 in a string
  field): the parser raises inside grpc, which logs it and answers UNKNOWN with the
  exception's text;
- a method the servicer does not override (the generated base raises NotImplementedError),
  or a service the server has no servicer for (ScheduleAPI: grpc's bare "Method not found!").

`add_services` registers every method of every service itself:

- the request deserializer cannot raise: bytes that do not parse become `Undecodable`,
  answered with BadRequestError (INVALID_ARGUMENT) naming the method;
- a method without an implementation is answered UNIMPLEMENTED, "<Method> is not
  implemented by this server.";
- an implemented method runs under `errors.guard` (ServiceError -> its status, anything
  else -> INTERNAL), and its response is serialized inside the guard, so no exception of
  ours reaches grpc.

The first two log one warning line each, without traceback. All answers are built by
`engine.frontend.errors` (one `google.rpc.Status`, the `rpc-service` echo).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Final

import grpc
import structlog
from cadence.api.v1 import (
    service_domain_pb2,
    service_domain_pb2_grpc,
    service_meta_pb2,
    service_meta_pb2_grpc,
    service_schedule_pb2,
    service_schedule_pb2_grpc,
    service_visibility_pb2,
    service_visibility_pb2_grpc,
    service_worker_pb2,
    service_worker_pb2_grpc,
    service_workflow_pb2,
    service_workflow_pb2_grpc,
)
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from engine.errors import BadRequestError
from engine.frontend.errors import (
    CLUSTER_NAME,
    RPC_METHOD_ATTR,
    abort,
    abort_with,
    guard,
    rpc_service_echo,
    status_proto,
)

__all__ = ["SERVICES", "Undecodable", "add_services"]

log = structlog.get_logger(__name__)

# Every service of the API: (its proto module, its generated grpc module).
_MODULES: Final[tuple[tuple[ModuleType, ModuleType], ...]] = (
    (service_domain_pb2, service_domain_pb2_grpc),
    (service_meta_pb2, service_meta_pb2_grpc),
    (service_schedule_pb2, service_schedule_pb2_grpc),
    (service_visibility_pb2, service_visibility_pb2_grpc),
    (service_worker_pb2, service_worker_pb2_grpc),
    (service_workflow_pb2, service_workflow_pb2_grpc),
)


@dataclass(frozen=True)
class Service:
    """One gRPC service of the API and the generated servicer base class it has."""

    descriptor: ServiceDescriptor
    base: type

    @property
    def name(self) -> str:
        return self.descriptor.name


SERVICES: Final[tuple[Service, ...]] = tuple(
    Service(desc, getattr(grpc_module, f"{desc.name}Servicer"))
    for pb_module, grpc_module in _MODULES
    for desc in pb_module.DESCRIPTOR.services_by_name.values()
)


@dataclass(frozen=True, slots=True)
class Undecodable:
    """What the deserializer hands the handler for request bytes that do not parse."""

    size: int
    reason: str


Handler = Callable[[Message | Undecodable, grpc.aio.ServicerContext], Awaitable[bytes]]


def _deserializer(message_class: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    def parse(data: bytes) -> Message | Undecodable:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # noqa: BLE001  (any parse failure is the client's)
            return Undecodable(len(data), str(exc))

    return parse


def _implementation(
    servicer: object, service: Service, method: str
) -> Callable[..., Awaitable[Message]] | None:
    """The servicer's own coroutine function for `method` (undecorated from `rpc`), or None
    when the servicer leaves it to the generated base, which only raises."""
    if servicer is None:
        return None
    fn = getattr(type(servicer), method, None)
    if fn is None or fn is getattr(service.base, method, None):
        return None
    impl: Callable[..., Awaitable[Message]] = getattr(fn, RPC_METHOD_ATTR, fn)
    return impl


def _handler(servicer: object, service: Service, method: MethodDescriptor) -> Handler:
    name = method.name
    impl = _implementation(servicer, service, name)
    cluster = getattr(servicer, "cluster_name", CLUSTER_NAME)

    async def unimplemented(
        request: Message | Undecodable, context: grpc.aio.ServicerContext
    ) -> bytes:
        log.warning("rpc_unimplemented", service=service.name, rpc_method=name)
        st = status_proto(
            grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this server."
        )
        await abort_with(context, st, rpc_service_echo(context))

    if impl is None:
        return unimplemented

    async def call(request: Message, context: grpc.aio.ServicerContext) -> bytes:
        # Serialized inside the guard: no exception of ours reaches grpc.
        response = await impl(servicer, request, context)
        data: bytes = response.SerializeToString()
        return data

    async def handle(request: Message | Undecodable, context: grpc.aio.ServicerContext) -> bytes:
        if isinstance(request, Undecodable):
            log.warning(
                "rpc_request_undecodable",
                service=service.name,
                rpc_method=name,
                size=request.size,
                reason=request.reason,
            )
            err = BadRequestError(f"Request body of {name} could not be decoded.")
            await abort(context, err, cluster=cluster, trailing_metadata=rpc_service_echo(context))
        return await guard(name, context, call(request, context), cluster=cluster)

    return handle


def add_services(server: grpc.aio.Server, servicers: Mapping[str, object]) -> None:
    """Register every API service on `server`, `servicers[service name]` serving it.

    A service with no servicer here (ScheduleAPI) answers UNIMPLEMENTED for every method.

    Raises:
        ValueError: a servicer is named for no service of the API, or is not an instance
            of its service's generated servicer class.
    """
    known = {s.name: s for s in SERVICES}
    for name, servicer in servicers.items():
        service = known.get(name)
        if service is None or not isinstance(servicer, service.base):
            raise ValueError(f"{servicer!r} does not serve a {name} of uber.cadence.api.v1")
    for service in SERVICES:
        servicer = servicers.get(service.name)
        handlers = {
            method.name: grpc.unary_unary_rpc_method_handler(
                _handler(servicer, service, method),
                request_deserializer=_deserializer(
                    message_factory.GetMessageClass(method.input_type)
                ),
                # The handler serializes the response itself (inside the guard).
                response_serializer=None,
            )
            for method in service.descriptor.methods
        }
        full_name = service.descriptor.full_name
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(full_name, handlers),)
        )
        # As the generated code does: lets grpc route these methods without a lookup.
        server.add_registered_method_handlers(full_name, handlers)
