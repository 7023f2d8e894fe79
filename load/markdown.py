"""Markdown rendering of run results and of a Cadenza/Temporal comparison.

Plain pipe tables, so they paste into docs/benchmarks.md and render on any forge.
"""

from __future__ import annotations

from collections.abc import Sequence

from load.result import RunResult

LATENCY_COLUMNS: tuple[str, ...] = ("count", "mean", "p50", "p90", "p95", "p99", "max")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def render_run(result: RunResult) -> str:
    """Summary, rates, counts and latency percentiles of one run."""
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    lines = [
        f"### {result.scenario.upper()} {result.title}: driver `{result.driver}`",
        "",
        f"{params}; target {result.target}; started {result.started_at}; "
        f"load average {result.load_average:.2f}",
        "",
    ]
    rows = [
        ["elapsed (s)", f"{result.elapsed_s:.2f}"],
        ["harness CPU (s)", f"{result.harness_cpu_s:.2f}"],
        ["workflows started", str(result.workflows_started)],
        ["workflows completed", str(result.workflows_completed)],
        ["workflows failed", str(result.workflows_failed)],
        ["harness errors", str(result.error_count)],
    ]
    rows += [[f"{name} /s", _num(rate)] for name, rate in result.rates.items()]
    rows += [[name, str(count)] for name, count in result.counts.items()]
    if result.histories_checked:
        checked = f"{result.histories_checked} ({len(result.violations)} invalid)"
        rows.append(["histories checked", checked])
    lines += _table(["metric", "value"], rows)
    if result.latency_ms:
        lines.append("")
        lat_rows = [
            [
                name,
                *(_num(s.as_dict()[c]) if c != "count" else str(s.count) for c in LATENCY_COLUMNS),
            ]
            for name, s in result.latency_ms.items()
        ]
        lines += _table(["latency (ms)", *LATENCY_COLUMNS], lat_rows)
    return "\n".join(lines) + "\n"


def render_comparison(cadenza: RunResult, peer: RunResult) -> str:
    """Cadenza against a peer server on the same scenario, with Cadenza/peer ratios."""
    rows: list[list[str]] = []
    for name in (n for n in cadenza.rates if n in peer.rates):
        a, b = cadenza.rates[name], peer.rates[name]
        rows.append([f"{name} /s", _num(a), _num(b), _ratio(a, b)])
    for name in (n for n in cadenza.latency_ms if n in peer.latency_ms):
        sa, sb = cadenza.latency_ms[name].as_dict(), peer.latency_ms[name].as_dict()
        rows += [
            [f"{name} latency {p} (ms)", _num(sa[p]), _num(sb[p]), _ratio(sa[p], sb[p])]
            for p in ("p50", "p99")
        ]
    header = [
        "metric",
        f"Cadenza ({cadenza.driver})",
        f"Temporal ({peer.driver})",
        "Cadenza/Temporal",
    ]
    title = f"### {cadenza.scenario.upper()} {cadenza.title}: Cadenza vs Temporal"
    return "\n".join([title, "", *_table(header, rows)]) + "\n"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def comparison_ratios(cadenza: RunResult, peer: RunResult) -> dict[str, float]:
    """Cadenza/peer for each shared rate and latency p50/p99 (JSON form of the table)."""
    out: dict[str, float] = {}
    for name in (n for n in cadenza.rates if n in peer.rates):
        if peer.rates[name]:
            out[f"{name} /s"] = cadenza.rates[name] / peer.rates[name]
    for name in (n for n in cadenza.latency_ms if n in peer.latency_ms):
        for p in ("p50", "p99"):
            b = peer.latency_ms[name].as_dict()[p]
            if b:
                out[f"{name} latency {p}"] = cadenza.latency_ms[name].as_dict()[p] / b
    return out
