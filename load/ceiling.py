"""The transport's ceiling: how many Cadence gRPC calls this machine serves with no engine.

A W1 workflow costs at least 7 calls at the protocol level (start, poll and answer the first
decision, poll and answer the activity, poll and answer the closing decision), so no server
behind Python's grpc.aio can run more W1 workflows per second than a server that does nothing
but answer calls can serve, divided by 7. This measures that bound on the machine at hand.

Server processes (`--servers`, sharing one port through SO_REUSEPORT) run a grpc.aio
`WorkerAPI` whose `RespondActivityTaskCompleted` returns at once; client processes
(`--clients`, each with `--concurrency` calls in flight on one channel) send it requests the
size of a W1 activity completion, with the YARPC headers the official client sends. Each
process reports its own CPU time, so the figures say where the cores go.

    python -m load.ceiling --seconds 10 --servers 1 --clients 1 --concurrency 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc
import grpc.aio
from cadence.api.v1 import common_pb2, service_worker_pb2, service_worker_pb2_grpc

from load.api import METADATA

CALLS_PER_W1 = 7


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class _NoEngine(service_worker_pb2_grpc.WorkerAPIServicer):
    async def RespondActivityTaskCompleted(
        self, request: Any, context: Any
    ) -> service_worker_pb2.RespondActivityTaskCompletedResponse:
        return service_worker_pb2.RespondActivityTaskCompletedResponse()


def _serve(port: int, ready: Connection, done: Connection) -> None:
    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        service_worker_pb2_grpc.add_WorkerAPIServicer_to_server(_NoEngine(), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        started = _cpu_s()  # the imports and the start are not the calls' cost
        ready.send(None)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, done.recv)  # the parent says the run is over
        ready.send(_cpu_s() - started)
        await server.stop(None)

    asyncio.run(main())


def _drive(port: int, concurrency: int, seconds: float, out: Connection) -> None:
    request = service_worker_pb2.RespondActivityTaskCompletedRequest(
        task_token=os.urandom(120),  # the size of a Cadenza task token
        result=common_pb2.Payload(data=b'"echo 000123"'),
        identity="ceiling@load",
    )

    async def main() -> tuple[int, float]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub: Any = service_worker_pb2_grpc.WorkerAPIStub(channel)  # type: ignore[no-untyped-call]
        await channel.channel_ready()
        started = _cpu_s()
        deadline = time.monotonic() + seconds
        calls = 0

        async def loop() -> None:
            nonlocal calls
            while time.monotonic() < deadline:
                await stub.RespondActivityTaskCompleted(request, metadata=METADATA)
                calls += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        used = _cpu_s() - started
        await channel.close()
        return calls, used

    out.send(asyncio.run(main()))


@dataclass
class Ceiling:
    servers: int
    clients: int
    concurrency: int
    seconds: float
    calls: int
    server_cpu_s: float
    client_cpu_s: float

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds

    def report(self) -> dict[str, Any]:
        return {
            "servers": self.servers,
            "clients": self.clients,
            "concurrency_per_client": self.concurrency,
            "seconds": self.seconds,
            "calls": self.calls,
            "calls_per_s": round(self.calls_per_s),
            "server_cpu_ms_per_call": round(1000 * self.server_cpu_s / self.calls, 4),
            "client_cpu_ms_per_call": round(1000 * self.client_cpu_s / self.calls, 4),
            "w1_workflows_per_s_bound": round(self.calls_per_s / CALLS_PER_W1),
        }


def measure(servers: int, clients: int, concurrency: int, seconds: float) -> Ceiling:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    server_pipes = []
    procs = []
    for _ in range(servers):
        ready_parent, ready_child = ctx.Pipe()
        done_parent, done_child = ctx.Pipe()
        proc = ctx.Process(target=_serve, args=(port, ready_child, done_child))
        proc.start()
        procs.append(proc)
        server_pipes.append((ready_parent, done_parent))
    for ready, _ in server_pipes:
        ready.recv()
    client_pipes = []
    for _ in range(clients):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_drive, args=(port, concurrency, seconds, child))
        proc.start()
        procs.append(proc)
        client_pipes.append(parent)
    results = [pipe.recv() for pipe in client_pipes]
    for _, done in server_pipes:
        done.send(None)
    server_cpu = sum(ready.recv() for ready, _ in server_pipes)
    for proc in procs:
        proc.join(10)
    return Ceiling(
        servers=servers,
        clients=clients,
        concurrency=concurrency,
        seconds=seconds,
        calls=sum(calls for calls, _ in results),
        server_cpu_s=server_cpu,
        client_cpu_s=sum(cpu for _, cpu in results),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m load.ceiling", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--servers", type=int, default=1, help="server processes (one port)")
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--concurrency", type=int, default=100, help="calls in flight per client")
    args = parser.parse_args(argv)
    for name in ("seconds", "servers", "clients", "concurrency"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    print(json.dumps(measure(args.servers, args.clients, args.concurrency, args.seconds).report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
