"""The runner: one scenario, one driver, one server; measure, then analyze and check.

Order of a run:
1. connect, register the domain if missing, open the driver;
2. enter the driver's workers on a fresh task list (pollers running before the clock starts);
3. the measured phase: `scenario.drive(run)` starts/signals/waits through `Run`;
4. after the clock stops: fetch every history, validate it with the engine's checker
   (`engine.execution.checker.check_history`), let the scenario derive its figures;
5. reduce everything into a `RunResult`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from engine.execution.checker import check_history
from load import api
from load.config import RunConfig
from load.drivers import Driver, make_driver
from load.progress import ProgressBoard, progress_board
from load.result import Execution, RunResult
from load.scenarios import SCENARIOS
from load.scenarios.base import Analysis, History, Scenario
from load.stats import Summary, bucket_width, summarize, throughput

log = logging.getLogger(__name__)

KEEP_ERRORS = 5
"""Harness errors kept verbatim in the result; the rest are only counted."""


class Run:
    """What the scenario drives through during the measured phase, and what it records."""

    def __init__(
        self,
        config: RunConfig,
        scenario: Scenario,
        driver: Driver,
        task_list: str,
        board: ProgressBoard,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.driver = driver
        self.task_list = task_list
        self.board = board
        self.executions: dict[int, Execution] = {}
        self.latencies_ms: list[float] = []
        self.closed_at: list[float] = []
        self.close_kinds: Counter[str] = Counter()
        self.errors: list[str] = []
        self.error_count = 0
        self.sent_signals = 0
        self.marks: dict[str, float] = {}
        """Unix times a scenario notes during its drive (W3: when signalling began/ended)."""
        self.wall0 = 0.0
        self.load_average = 0.0
        self.elapsed_s = 0.0
        self.cpu_s = 0.0
        self._perf0 = 0.0
        self._cpu0 = 0.0
        self._started: dict[int, float] = {}

    def workflow_id(self, index: int) -> str:
        return f"{self.task_list}-{index}"

    async def for_each(
        self, count: int, fn: Callable[[int], Awaitable[None]], *, label: str
    ) -> None:
        """fn(0) .. fn(count-1), `concurrency` at a time; a failure is recorded, not raised."""
        advance = self.board.counter(label, count)
        indexes = iter(range(count))

        async def worker() -> None:
            for i in indexes:
                try:
                    await fn(i)
                except Exception as e:  # noqa: BLE001 - a benchmark counts a failed call, goes on
                    self._error(f"{label}[{i}]: {type(e).__name__}: {e}")
                advance(1)

        await asyncio.gather(*(worker() for _ in range(min(self.config.concurrency, count))))

    async def start(self, index: int) -> None:
        wid = self.workflow_id(index)
        args = self.scenario.workflow_args(index, wid)
        self._started[index] = time.perf_counter()
        self.executions[index] = await self.driver.start(
            self.scenario.workflow_type, args, workflow_id=wid, task_list=self.task_list
        )

    async def wait(self, index: int) -> None:
        execution = self.executions.get(index)
        if execution is None:
            return  # its start failed, and was recorded then
        kind = await self.driver.wait_closed(execution)
        self.latencies_ms.append((time.perf_counter() - self._started[index]) * 1000)
        self.closed_at.append(api.wall_now())
        self.close_kinds[kind] += 1

    async def warm(self, index: int) -> None:
        """One unrecorded workflow (start and wait), before the measured phase."""
        wid = f"{self.task_list}-warmup-{index}"
        execution = await self.driver.start(
            self.scenario.workflow_type,
            self.scenario.workflow_args(index, wid),
            workflow_id=wid,
            task_list=self.task_list,
        )
        await self.driver.wait_closed(execution)

    async def start_and_wait(self, index: int) -> None:
        await self.start(index)
        await self.wait(index)

    async def signal(self, index: int, name: str, args: list[Any]) -> None:
        await self.driver.signal(self.executions[index], name, args)
        self.sent_signals += 1

    def begin(self) -> None:
        self.load_average = os.getloadavg()[0]
        self.wall0 = api.wall_now()
        self._perf0 = time.perf_counter()
        self._cpu0 = time.process_time()

    def end(self) -> None:
        self.elapsed_s = time.perf_counter() - self._perf0
        self.cpu_s = time.process_time() - self._cpu0

    def _error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < KEEP_ERRORS:
            self.errors.append(message)
        log.warning("harness_error: %s", message)


async def run_scenario(config: RunConfig, driver: Driver | None = None) -> RunResult:
    """Run `config.scenario` with `driver` (default: the one `config.driver` names)."""
    scenario = SCENARIOS[config.scenario](config)
    driver = driver or make_driver(config)
    try:
        if driver.cadence_api:
            channel = api.open_channel(config.target)
            try:
                await api.wait_ready(channel, config.target)
                await api.ensure_domain(channel, config.domain)
            finally:
                await channel.close()
        task_list = f"load-{scenario.name}-{driver.name}-{uuid.uuid4().hex[:8]}"
        with progress_board(config.progress) as board:
            run = Run(config, scenario, driver, task_list, board)
            async with driver.workers(scenario, task_list):
                if config.warmup:
                    await run.for_each(config.warmup, run.warm, label="warmup")
                    if run.error_count:
                        raise RuntimeError(f"warm-up failed: {run.errors[0]}")
                run.begin()
                await scenario.drive(run)
                run.end()
            analysis, checked, violations = Analysis(), 0, list[str]()
            if driver.cadence_api:
                analysis, checked, violations = await _inspect(run)
    finally:
        await driver.close()
    return _result(run, analysis, checked, violations)


async def _inspect(run: Run) -> tuple[Analysis, int, list[str]]:
    """Fetch the runs' histories (and related runs'), check them, analyze them."""
    channel = api.open_channel(run.config.target)
    stub = api.workflow_stub(channel)
    try:
        executions = [run.executions[i] for i in sorted(run.executions)]
        histories = await _histories(run, stub, executions, "histories")
        violations: list[str] = []
        checked = 0
        if run.config.check_histories:
            related = [r for h in histories for r in run.scenario.related(h)]
            for execution, events in zip(
                executions + related,
                histories + await _histories(run, stub, related, "related"),
                strict=True,
            ):
                checked += 1
                try:
                    check_history(events)
                except AssertionError as e:
                    violations.append(f"{execution.workflow_id}: {e}")
        return run.scenario.analyze(histories, run), checked, violations
    finally:
        await channel.close()


async def _histories(
    run: Run, stub: Any, executions: Sequence[Execution], label: str
) -> list[History]:
    if not executions:
        return []
    out: list[History] = [[] for _ in executions]

    async def fetch(i: int) -> None:
        out[i] = await api.full_history(stub, run.config.domain, executions[i])

    await run.for_each(len(executions), fetch, label=label)
    return out


def _result(run: Run, analysis: Analysis, checked: int, violations: list[str]) -> RunResult:
    config, elapsed = run.config, run.elapsed_s
    completed = run.close_kinds["completed"]
    latency: dict[str, Summary] = {}
    for name, values in {"workflow start→close": run.latencies_ms, **analysis.latencies_ms}.items():
        summary = summarize(values)
        if summary is not None:
            latency[name] = summary
    times = {"workflows closed": run.closed_at, **analysis.event_times}
    return RunResult(
        scenario=run.scenario.name,
        title=run.scenario.title,
        driver=run.driver.name,
        target=config.target,
        domain=config.domain,
        params={
            **run.scenario.param_dict(),
            "pollers": config.pollers,
            "seed": config.seed,
            **({"warmup": config.warmup} if config.warmup else {}),
        },
        started_at=datetime.fromtimestamp(run.wall0, UTC).isoformat(timespec="seconds"),
        elapsed_s=elapsed,
        harness_cpu_s=run.cpu_s,
        workflows_started=len(run.executions),
        workflows_completed=completed,
        workflows_failed=sum(run.close_kinds.values()) - completed,
        errors=run.errors,
        error_count=run.error_count,
        counts={**analysis.counts, **run.driver.stats()},
        rates={"workflows": completed / elapsed if elapsed else 0.0, **analysis.rates},
        latency_ms=latency,
        throughput={
            name: throughput([t - run.wall0 for t in ts], bucket_width(elapsed), end=elapsed)
            for name, ts in times.items()
            if ts
        },
        histories_checked=checked,
        violations=violations,
        load_average=run.load_average,
        executions=[run.executions[i] for i in sorted(run.executions)],
    )
