"""Every load scenario (W1..W5) on both drivers, at tiny sizes, against an in-process server.

These assert what a run did, never how fast: every workflow completed, the counts add up,
each history (children included) passes the engine's checker, and the histories hold the
events each scenario promises. A last test runs the CLI itself and reads its files.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cadence import Client
from cadence.api.v1 import common_pb2

from engine.server import Server
from load import codec
from load.config import DRIVERS, DriverName, RunConfig, ScenarioParams
from load.result import Execution, RunResult
from load.runner import run_scenario
from tests.e2e.harness import DOMAIN, checked_history, event_types

# Small enough for a few seconds per case; W2's timers are 1..2 s.
CASES: dict[str, dict[str, Any]] = {
    "w1": {"workflows": 5, "concurrency": 5},
    "w2": {
        "workflows": 4,
        "concurrency": 4,
        "params": ScenarioParams(timer_min_s=1, timer_max_s=2),
    },
    "w3": {"workflows": 3, "concurrency": 4, "params": ScenarioParams(signals=10)},
    "w4": {"workflows": 1, "concurrency": 1, "params": ScenarioParams(activities=10)},
    "w5": {"workflows": 1, "concurrency": 1, "params": ScenarioParams(children=5)},
}
# What the scenario's own analysis must count, and how many histories the runner checks.
EXPECTED_COUNTS: dict[str, dict[str, int]] = {
    "w1": {"activities completed": 5},
    "w2": {"timers fired": 4},
    "w3": {"signals sent": 10, "signals received": 10, "signals processed": 10},
    "w4": {"activities completed": 10},
    "w5": {"children completed": 5},
}
CHECKED = {"w1": 5, "w2": 4, "w3": 3, "w4": 1, "w5": 6}


def config_for(server: Server, scenario: str, driver: DriverName, **extra: Any) -> RunConfig:
    return RunConfig(
        scenario=scenario,
        target=server.address,
        domain=DOMAIN,
        driver=driver,
        pollers=4,
        workflow_timeout_s=60,
        progress=False,
        out=None,
        **{**CASES[scenario], **extra},
    )


def assert_all_completed(result: RunResult, workflows: int) -> None:
    assert (result.error_count, result.errors) == (0, [])
    assert result.workflows_started == workflows
    assert result.workflows_completed == workflows
    assert result.workflows_failed == 0
    assert result.violations == []
    assert result.ok
    assert len({e.workflow_id for e in result.executions}) == workflows


def result_of(events: list[Any]) -> Any:
    """The decoded result of a completed run (both drivers encode results alike)."""
    close = events[-1].workflow_execution_completed_event_attributes
    return codec.decode(close.result.data)[0]


def proto(execution: Execution) -> common_pb2.WorkflowExecution:
    return common_pb2.WorkflowExecution(workflow_id=execution.workflow_id, run_id=execution.run_id)


def only_folder(out: Path) -> Path:
    [folder] = out.iterdir()
    return folder


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("scenario", list(CASES))
async def test_scenario_completes_every_workflow_with_valid_histories(
    server: Server, client: Client, scenario: str, driver: DriverName
) -> None:
    result = await run_scenario(config_for(server, scenario, driver))
    workflows = CASES[scenario]["workflows"]
    assert_all_completed(result, workflows)
    assert {k: result.counts[k] for k in EXPECTED_COUNTS[scenario]} == EXPECTED_COUNTS[scenario]
    assert result.histories_checked == CHECKED[scenario]
    assert result.latency_ms["workflow start→close"].count == workflows
    assert sum(b.count for b in result.throughput["workflows closed"]) == workflows

    # Read every history again, independently of the runner, and check it.
    values = []
    for execution in result.executions:
        events = await checked_history(client, proto(execution))
        types = event_types(events)
        assert types[-1] == "WorkflowExecutionCompleted"
        value = result_of(events)
        values.append(value)
        if scenario == "w1":
            assert types.count("ActivityTaskCompleted") == 1
            assert value.startswith("m")
        elif scenario == "w2":
            [timer] = [e for e in events if e.HasField("timer_started_event_attributes")]
            seconds = timer.timer_started_event_attributes.start_to_fire_timeout.seconds
            assert 1 <= seconds <= 2
            assert value == seconds
            assert types.count("TimerFired") == 1
        elif scenario == "w3":
            assert value == types.count("WorkflowExecutionSignaled")
        elif scenario == "w4":
            assert types.count("ActivityTaskCompleted") == 10
            assert value == 10
        else:
            assert types.count("ChildWorkflowExecutionCompleted") == 5
            assert value == 5
    if scenario == "w3":
        assert sorted(values) == [3, 3, 4]  # 10 signals over 3 workflows


async def test_w1_warmup_runs_are_not_counted(server: Server, client: Client) -> None:
    result = await run_scenario(config_for(server, "w1", "protocol", warmup=3))
    assert_all_completed(result, 5)
    assert result.counts["decision tasks"] == 2 * (5 + 3)  # warm-up did run, uncounted


async def test_cli_runs_a_scenario_and_writes_its_results(
    server: Server, client: Client, tmp_path: Path
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "load", "w4",
        "--target", server.address, "--domain", DOMAIN, "--driver", "protocol",
        "--activities", "5", "--pollers", "2", "--no-progress", "--out", str(tmp_path / "out"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    stdout = out.decode()
    assert stdout.startswith("W4 protocol: 1 workflows, 1 completed, 0 failed, 0 errors")
    assert "| activities completed | 5 |" in stdout
    folder = only_folder(tmp_path / "out")
    assert folder.name.startswith("w4-protocol-")
    data = json.loads((folder / "result.json").read_text())
    assert data["workflows"] == {"started": 1, "completed": 1, "failed": 0}
    assert data["counts"]["activities completed"] == 5
    assert data["histories"] == {"checked": 1, "violations": []}
    assert (folder / "result.md").read_text().startswith("### W4 fan-out: driver `protocol`")
