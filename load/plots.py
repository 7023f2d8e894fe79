"""PNG plots of a run: throughput over time and latency percentiles.

matplotlib comes with the optional `load` extra. It is imported here only, with the
non-interactive Agg backend, so a headless machine renders files and no window opens.
"""

from __future__ import annotations

from pathlib import Path

from load.result import RunResult
from load.stats import PERCENTILES


class PlotsUnavailableError(RuntimeError):
    """matplotlib is missing: the `load` extra is not installed."""


def _use_agg() -> None:
    try:
        import matplotlib
    except ImportError as e:
        raise PlotsUnavailableError("PNG plots need matplotlib: pip install -e '.[load]'") from e
    matplotlib.use("Agg")  # headless: render to files, never open a window


def plot_throughput(result: RunResult, path: Path) -> None:
    """One stair line per event kind: events per second over the run's elapsed time."""
    _use_agg()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, buckets in result.throughput.items():
        if not buckets:
            continue
        width = buckets[1].start - buckets[0].start if len(buckets) > 1 else 1.0
        edges = [b.start for b in buckets] + [buckets[-1].start + width]
        ax.stairs([b.per_s for b in buckets], edges, label=name, linewidth=1.5)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("per second")
    ax.set_title(f"{result.scenario.upper()} {result.title} ({result.driver}): throughput")
    ax.grid(alpha=0.3)
    if result.throughput:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(result: RunResult, path: Path) -> None:
    """p50/p90/p95/p99/max bars of each latency series, one panel (own scale) per series."""
    _use_agg()
    import matplotlib.pyplot as plt

    labels = [f"p{p}" for p in PERCENTILES] + ["max"]
    series = list(result.latency_ms.items())
    fig, axes = plt.subplots(
        1, max(1, len(series)), figsize=(4 * max(1, len(series)), 4), dpi=100, squeeze=False
    )
    for ax, (name, s) in zip(axes[0], series, strict=False):
        values = [s.p50, s.p90, s.p95, s.p99, s.max]
        bars = ax.bar(labels, values, color="tab:blue")
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("milliseconds")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{result.scenario.upper()} {result.title} ({result.driver}): latency")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
