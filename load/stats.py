"""Statistics for load results: latency percentiles and throughput over time.

Pure functions over lists of floats, so they are unit-tested without a server
(tests/unit/test_load_stats.py) and shared by every scenario and driver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile, interpolating linearly between closest ranks.

    This is numpy's default ("linear") method, so figures can be checked with numpy; it
    needs no numpy here. An empty sample has no percentile and raises ValueError.
    """
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside 0..100")
    data = sorted(values)
    rank = (len(data) - 1) * p / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return data[low] + (data[high] - data[low]) * (rank - low)


@dataclass(frozen=True)
class Summary:
    """A latency sample reduced to the figures the reports show (same unit as the input)."""

    count: int
    mean: float
    min: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean": self.mean,
            "min": self.min,
            "p50": self.p50,
            "p90": self.p90,
            "p95": self.p95,
            "p99": self.p99,
            "max": self.max,
        }


def summarize(values: Sequence[float]) -> Summary | None:
    """Count, mean, min, p50/p90/p95/p99 and max; None for an empty sample."""
    if not values:
        return None
    p50, p90, p95, p99 = (percentile(values, p) for p in PERCENTILES)
    return Summary(
        count=len(values),
        mean=math.fsum(values) / len(values),
        min=min(values),
        p50=p50,
        p90=p90,
        p95=p95,
        p99=p99,
        max=max(values),
    )


BUCKET_WIDTHS: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
MAX_BUCKETS = 60


def bucket_width(elapsed: float) -> float:
    """The narrowest round width giving at most MAX_BUCKETS buckets over `elapsed` s."""
    for width in BUCKET_WIDTHS:
        if elapsed / width <= MAX_BUCKETS:
            return width
    return elapsed / MAX_BUCKETS


@dataclass(frozen=True)
class Bucket:
    """Events in [start, start + width) seconds after the run began."""

    start: float
    count: int
    per_s: float


def throughput(
    times: Sequence[float], width: float = 1.0, end: float | None = None
) -> list[Bucket]:
    """Bucket event times (seconds since the run began) into a rate per `width` seconds.

    Buckets start at 0 and cover up to `end` (default: the last event), so an idle stretch
    shows as zero-rate buckets rather than disappearing from the plot. Times before 0
    (an event stamped just before the harness's own start mark) count in the first bucket.
    """
    if width <= 0:
        raise ValueError("bucket width must be positive")
    last = max(times, default=0.0) if end is None else end
    if not times and end is None:
        return []
    n = max(1, math.floor(last / width) + 1)
    counts = [0] * n
    for t in times:
        counts[min(n - 1, max(0, math.floor(t / width)))] += 1
    return [Bucket(start=i * width, count=c, per_s=c / width) for i, c in enumerate(counts)]
