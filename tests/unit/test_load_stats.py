"""load.stats and the result writers: percentiles, throughput buckets, JSON/Markdown/PNG."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from load.markdown import comparison_ratios, render_comparison, render_run
from load.report import run_folder, write_comparison, write_run
from load.result import RunResult
from load.stats import Bucket, bucket_width, percentile, summarize, throughput

# -- percentiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0, 1.0), (25, 1.75), (50, 2.5), (90, 3.7), (100, 4.0)],
)
def test_percentile_interpolates_linearly_between_ranks(p: float, expected: float) -> None:
    # numpy.percentile([1, 2, 3, 4], p) gives the same numbers (its default "linear" method).
    assert percentile([4.0, 1.0, 3.0, 2.0], p) == pytest.approx(expected)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 0) == 7.5
    assert percentile([7.5], 99) == 7.5


def test_percentile_rejects_empty_sample_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_summarize_reports_count_mean_extremes_and_percentiles() -> None:
    s = summarize([float(v) for v in range(1, 101)])  # 1..100
    assert s is not None
    assert (s.count, s.mean, s.min, s.max) == (100, 50.5, 1.0, 100.0)
    assert (s.p50, s.p90, s.p95, s.p99) == pytest.approx((50.5, 90.1, 95.05, 99.01))


def test_summarize_empty_is_none() -> None:
    assert summarize([]) is None


# -- throughput over time ----------------------------------------------------------------------


def test_throughput_counts_events_per_bucket() -> None:
    buckets = throughput([0.1, 0.5, 1.2, 2.9], width=1.0)
    assert buckets == [Bucket(0.0, 2, 2.0), Bucket(1.0, 1, 1.0), Bucket(2.0, 1, 1.0)]


def test_throughput_rate_divides_by_bucket_width() -> None:
    buckets = throughput([0.0, 0.1, 0.2, 0.6], width=0.5)
    assert [(b.start, b.count, b.per_s) for b in buckets] == [(0.0, 3, 6.0), (0.5, 1, 2.0)]


def test_throughput_pads_idle_time_up_to_end_with_zero_buckets() -> None:
    buckets = throughput([0.5], width=1.0, end=3.5)
    assert [b.count for b in buckets] == [1, 0, 0, 0]


def test_throughput_clamps_events_outside_the_window_to_the_edge_buckets() -> None:
    # An event stamped just before the harness's start mark, one just after its end mark.
    buckets = throughput([-0.01, 1.5, 2.2], width=1.0, end=2.0)
    assert [b.count for b in buckets] == [1, 1, 1]


def test_throughput_of_nothing() -> None:
    assert throughput([], width=1.0) == []
    assert [b.count for b in throughput([], width=1.0, end=1.5)] == [0, 0]
    with pytest.raises(ValueError, match="positive"):
        throughput([1.0], width=0)


@pytest.mark.parametrize(
    ("elapsed", "width"), [(0.3, 0.1), (6.0, 0.1), (6.1, 0.2), (30.0, 0.5), (100.0, 2.0)]
)
def test_bucket_width_keeps_at_most_sixty_buckets(elapsed: float, width: float) -> None:
    assert bucket_width(elapsed) == width


# -- writers -----------------------------------------------------------------------------------


def _result(driver: str = "client", rate: float = 40.0, p50: float = 100.0) -> RunResult:
    latency = summarize([p50 / 2, p50, p50 * 1.5])
    assert latency is not None
    return RunResult(
        scenario="w1",
        title="echo",
        driver=driver,
        target="127.0.0.1:7833",
        domain="default",
        params={"workflows": 3, "concurrency": 2},
        started_at="2026-01-02T03:04:05+00:00",
        elapsed_s=0.075,
        workflows_started=3,
        workflows_completed=3,
        workflows_failed=0,
        errors=[],
        error_count=0,
        counts={"activities completed": 3},
        rates={"workflows": rate},
        latency_ms={"workflow start→close": latency},
        throughput={"workflows closed": throughput([0.01, 0.02, 0.07], width=0.05)},
        histories_checked=3,
        violations=[],
    )


def test_write_run_produces_json_and_markdown(tmp_path: Path) -> None:
    result = _result()
    folder = run_folder(tmp_path, result)
    assert folder == tmp_path / "w1-client-20260102T030405"
    paths = write_run(result, folder)
    assert [p.name for p in paths][:2] == ["result.json", "result.md"]

    data = json.loads((folder / "result.json").read_text())
    assert data["workflows"] == {"started": 3, "completed": 3, "failed": 0}
    assert data["rates_per_s"] == {"workflows": 40.0}
    assert data["latency_ms"]["workflow start→close"]["p50"] == 100.0
    assert data["latency_ms"]["workflow start→close"]["count"] == 3
    assert data["throughput_per_s"]["workflows closed"] == [
        {"t": 0.0, "count": 2, "per_s": 40.0},
        {"t": 0.05, "count": 1, "per_s": 20.0},
    ]
    assert data["histories"] == {"checked": 3, "violations": []}

    md = (folder / "result.md").read_text()
    assert md == render_run(result)
    assert "| workflows /s | 40.0 |" in md
    assert "| workflow start→close | 3 | 100 | 100 | 140 | 145 | 149 | 150 |" in md


def test_write_run_produces_pngs_with_the_load_extra(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")  # the optional `load` extra
    paths = write_run(_result(), tmp_path)
    for name in ("throughput.png", "latency.png"):
        png = tmp_path / name
        assert png in paths
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5_000  # a drawn figure, not an empty canvas


def test_write_run_without_matplotlib_still_writes_json_and_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    paths = write_run(_result(), tmp_path)
    assert [p.name for p in paths] == ["result.json", "result.md"]
    assert not (tmp_path / "throughput.png").exists()


def test_write_comparison_reports_cadenza_over_peer_ratios(tmp_path: Path) -> None:
    cadenza, peer = _result(rate=40.0, p50=100.0), _result("temporalio", rate=20.0, p50=200.0)
    assert comparison_ratios(cadenza, peer) == {
        "workflows /s": 2.0,
        "workflow start→close latency p50": 0.5,
        "workflow start→close latency p99": pytest.approx(0.5),
    }
    write_comparison(cadenza, peer, tmp_path)
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["ratio_cadenza_over_peer"]["workflows /s"] == 2.0
    assert data["peer"]["driver"] == "temporalio"
    md = (tmp_path / "compare.md").read_text()
    assert md == render_comparison(cadenza, peer)
    assert "| workflows /s | 40.0 | 20.0 | 2.00 |" in md
