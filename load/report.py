"""Writers: a run's JSON, Markdown and PNG files, and the Cadenza/Temporal comparison.

Each run gets its own folder under the output directory (load/out/ by default, which git
ignores), named after the scenario, the driver and the start time, so runs never overwrite
each other.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from load.markdown import comparison_ratios, render_comparison, render_run
from load.plots import PlotsUnavailableError, plot_latency, plot_throughput
from load.result import RunResult

log = logging.getLogger(__name__)


def run_folder(out: Path, result: RunResult, label: str | None = None) -> Path:
    """out/<scenario>-<driver or label>-<UTC start, YYYYMMDDTHHMMSS>."""
    stamp = re.sub(r"[^0-9T]", "", result.started_at)[:15]
    return out / f"{result.scenario}-{label or result.driver}-{stamp}"


def write_run(result: RunResult, folder: Path) -> list[Path]:
    """result.json, result.md and (with matplotlib) throughput.png and latency.png."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "result.json", folder / "result.md"]
    written[0].write_text(json.dumps(result.to_json(), indent=2) + "\n")
    written[1].write_text(render_run(result))
    try:
        for name, plot in (("throughput.png", plot_throughput), ("latency.png", plot_latency)):
            plot(result, folder / name)
            written.append(folder / name)
    except PlotsUnavailableError as e:
        # JSON and Markdown carry every figure; the plots are a convenience.
        log.warning("plots_skipped: %s", e)
    return written


def write_comparison(cadenza: RunResult, peer: RunResult, folder: Path) -> list[Path]:
    """compare.json (both runs and the Cadenza/peer ratios) and compare.md."""
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "cadenza": cadenza.to_json(),
        "peer": peer.to_json(),
        "ratio_cadenza_over_peer": {
            k: round(v, 3) for k, v in comparison_ratios(cadenza, peer).items()
        },
    }
    paths = [folder / "compare.json", folder / "compare.md"]
    paths[0].write_text(json.dumps(data, indent=2) + "\n")
    paths[1].write_text(render_comparison(cadenza, peer))
    return paths
