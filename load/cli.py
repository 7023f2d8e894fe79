"""Command line: `python -m load <w1..w5> [options]`, one command per scenario.

    python -m load w1 --target 127.0.0.1:7833 --workflows 1000 --concurrency 50
    python -m load w2 --driver protocol --workflows 200
    python -m load w1 --workflows 300 --peer temporal   # same W1 on a Temporal dev server too

Prints a Markdown summary on stdout, draws progress on stderr, and writes JSON, Markdown
and PNG results under --out (load/out/, which git ignores). Exits 1 when a workflow did not
complete, a harness call failed or a history was invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from load.config import DRIVERS, RunConfig, ScenarioParams
from load.markdown import render_comparison, render_run
from load.report import run_folder, write_comparison, write_run
from load.result import RunResult
from load.runner import run_scenario
from load.scenarios import SCENARIOS

# (workflows, concurrency) per scenario: W4 and W5 are about one big workflow.
DEFAULTS: dict[str, tuple[int, int]] = {
    "w1": (1000, 50),
    "w2": (200, 200),
    "w3": (50, 50),
    "w4": (1, 1),
    "w5": (1, 1),
}
HELP = {
    "w1": "echo: start, one activity, complete",
    "w2": "timers: each workflow sleeps a random 1..10 s; fire lateness",
    "w3": "signals: signal throughput to running workflows",
    "w4": "fan-out: one workflow runs 100 activities at once",
    "w5": "children: one parent starts 50 children and waits for all",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m load", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS:
        workflows, concurrency = DEFAULTS[name]
        p = sub.add_parser(name, help=HELP[name], description=HELP[name])
        p.add_argument("--target", default="127.0.0.1:7833", help="server host:port")
        p.add_argument("--domain", default="default", help="registered if missing")
        p.add_argument("--workflows", type=int, default=workflows, help="workflows to start")
        p.add_argument("--concurrency", type=int, default=concurrency, help="calls in flight")
        p.add_argument("--driver", choices=DRIVERS, default="client")
        p.add_argument("--pollers", type=int, default=16, help="decision and activity pollers")
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--workflow-timeout", type=int, default=300, help="seconds")
        p.add_argument("--out", type=Path, default=Path("load/out"), help="results folder")
        p.add_argument("--no-write", action="store_true", help="write no result files")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--no-check", action="store_true", help="skip history validation")
        if name == "w1":
            p.add_argument(
                "--warmup",
                type=int,
                default=0,
                help="workflows run before the clock starts, not counted",
            )
            p.add_argument(
                "--peer",
                choices=("temporal",),
                help="also run W1 on a Temporal dev server (needs the load extra)",
            )
        if name == "w2":
            p.add_argument("--min-sleep", type=int, default=1, help="seconds")
            p.add_argument("--max-sleep", type=int, default=10, help="seconds")
        if name == "w3":
            p.add_argument("--signals", type=int, default=1000, help="signals in total")
        if name == "w4":
            p.add_argument("--activities", type=int, default=100)
        if name == "w5":
            p.add_argument("--children", type=int, default=50)
    return parser


def config_from(args: argparse.Namespace) -> RunConfig:
    defaults = ScenarioParams()
    return RunConfig(
        scenario=args.scenario,
        target=args.target,
        domain=args.domain,
        workflows=args.workflows,
        concurrency=args.concurrency,
        driver=args.driver,
        pollers=args.pollers,
        params=ScenarioParams(
            timer_min_s=getattr(args, "min_sleep", defaults.timer_min_s),
            timer_max_s=getattr(args, "max_sleep", defaults.timer_max_s),
            signals=getattr(args, "signals", defaults.signals),
            activities=getattr(args, "activities", defaults.activities),
            children=getattr(args, "children", defaults.children),
        ),
        warmup=getattr(args, "warmup", 0),
        seed=args.seed,
        workflow_timeout_s=args.workflow_timeout,
        progress=not args.no_progress,
        check_histories=not args.no_check,
        out=None if args.no_write else args.out,
    )


def summary_line(result: RunResult) -> str:
    """One line per run: counts, elapsed time, throughput, start→close latency."""
    line = (
        f"{result.scenario.upper()} {result.driver}: {result.workflows_started} workflows, "
        f"{result.workflows_completed} completed, {result.workflows_failed} failed, "
        f"{result.error_count} errors, {result.elapsed_s:.2f} s, "
        f"{result.rates['workflows']:.1f} workflows/s"
    )
    lat = result.latency_ms.get("workflow start→close")
    if lat is not None:
        line += f"; latency ms p50 {lat.p50:.0f} p99 {lat.p99:.0f} max {lat.max:.0f}"
    return line


def _report(result: RunResult, out: Path | None) -> None:
    print(summary_line(result))
    print()
    print(render_run(result))
    if out is not None:
        paths = write_run(result, run_folder(out, result))
        print(f"results: {paths[0].parent}", file=sys.stderr)


async def _main(config: RunConfig, peer: str | None) -> int:
    result = await run_scenario(config)
    _report(result, config.out)
    ok = result.ok
    if peer == "temporal":
        from load.peer.temporal import run_temporal

        peer_result = await run_temporal(config)
        _report(peer_result, config.out)
        print(render_comparison(result, peer_result))
        rate, peer_rate = result.rates["workflows"], peer_result.rates["workflows"]
        if peer_rate:
            print(f"Cadenza/Temporal throughput ratio: {rate / peer_rate:.2f}")
        if config.out is not None:
            folder = run_folder(config.out, result, "compare")
            write_comparison(result, peer_result, folder)
            print(f"comparison: {folder}", file=sys.stderr)
        ok = ok and peer_result.ok
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    peer: str | None = getattr(args, "peer", None)
    if peer and args.driver != "client":
        parser.error("--peer compares the two SDKs as users run them: use --driver client")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    config = config_from(args)
    if peer == "temporal":
        from load.peer import PeerUnavailableError, check_temporal

        try:
            check_temporal()
        except PeerUnavailableError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    try:
        code = asyncio.run(_main(config, peer))
    except ConnectionError as e:  # nothing listening at --target: say so, no traceback
        print(f"error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
