"""W1 echo: start a workflow that runs one activity and completes, N times, C in flight.

Measures what a user sees through the official cadence-python-client: throughput of
completed workflows and start-to-close latency percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from cadence import Client, Registry, workflow
from cadence.api.v1 import history_pb2, service_domain_pb2, service_workflow_pb2
from cadence.error import DomainAlreadyExistsError
from cadence.worker import Worker
from google.protobuf import duration_pb2

registry = Registry()


@registry.activity()
async def w1_echo(message: str) -> str:
    return message


@registry.workflow()
class W1Echo:
    @workflow.run
    async def run(self, message: str) -> str:
        return await w1_echo.with_options(schedule_to_close_timeout=timedelta(seconds=60)).execute(
            message
        )


@dataclass
class W1Result:
    workflows: int
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    failed: int

    @property
    def throughput(self) -> float:
        return self.workflows / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return 0.0
        return data[min(len(data) - 1, int(p / 100 * len(data)))]

    def summary(self) -> str:
        mean = statistics.fmean(self.latencies_ms) if self.latencies_ms else 0.0
        return (
            f"W1: {self.workflows} workflows, {self.concurrency} in flight, "
            f"{self.seconds:.2f} s, {self.throughput:.1f} workflows/s, failed {self.failed}; "
            f"latency ms mean {mean:.0f} p50 {self.percentile(50):.0f} "
            f"p95 {self.percentile(95):.0f} p99 {self.percentile(99):.0f} "
            f"max {max(self.latencies_ms, default=0):.0f}"
        )


async def ensure_domain(client: Client, domain: str) -> None:
    with contextlib.suppress(DomainAlreadyExistsError):
        await client.domain_stub.RegisterDomain(
            service_domain_pb2.RegisterDomainRequest(
                name=domain,
                workflow_execution_retention_period=duration_pb2.Duration(seconds=86400),
            )
        )


async def run_w1(
    target: str, workflows: int, concurrency: int, domain: str = "default"
) -> W1Result:
    client = Client(domain=domain, target=target)
    await ensure_domain(client, domain)
    task_list = f"w1-{uuid.uuid4()}"
    latencies: list[float] = []
    failed = 0
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(i: int) -> None:
        nonlocal failed, done
        async with sem:
            t0 = time.perf_counter()
            execution = await client.start_workflow(
                "W1Echo",
                f"m{i}",
                task_list=task_list,
                execution_start_to_close_timeout=timedelta(seconds=300),
            )
            while True:
                resp = await client.workflow_stub.GetWorkflowExecutionHistory(
                    service_workflow_pb2.GetWorkflowExecutionHistoryRequest(
                        domain=domain,
                        workflow_execution=execution,
                        wait_for_new_event=True,
                        history_event_filter_type=history_pb2.EVENT_FILTER_TYPE_CLOSE_EVENT,
                    ),
                    timeout=60,
                )
                if resp.history.events:
                    break
            if not resp.history.events[-1].HasField(
                "workflow_execution_completed_event_attributes"
            ):
                failed += 1
            latencies.append((time.perf_counter() - t0) * 1000)
            done += 1

    worker = Worker(client, task_list, registry, decision_task_pollers=32, activity_task_pollers=32)
    async with worker:
        start = time.perf_counter()
        progress = asyncio.create_task(_progress(lambda: done, workflows))
        await asyncio.gather(*(one(i) for i in range(workflows)))
        elapsed = time.perf_counter() - start
        progress.cancel()
    await client.close()
    return W1Result(workflows, concurrency, elapsed, latencies, failed)


async def _progress(done: object, total: int) -> None:
    import sys

    get = done if callable(done) else (lambda: 0)
    while True:
        await asyncio.sleep(2)
        print(f"  ... {get()}/{total} completed", file=sys.stderr, flush=True)
