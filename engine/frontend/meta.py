"""MetaAPI: the health check."""

from __future__ import annotations

import grpc
from cadence.api.v1 import service_meta_pb2 as pb
from cadence.api.v1 import service_meta_pb2_grpc

from engine.frontend.errors import rpc


class MetaHandler(service_meta_pb2_grpc.MetaAPIServicer):
    @rpc
    async def Health(
        self, request: pb.HealthRequest, context: grpc.aio.ServicerContext
    ) -> pb.HealthResponse:
        return pb.HealthResponse(ok=True, message="cadenza is serving")
