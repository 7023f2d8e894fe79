"""The shard loop's cap on the bytes of one group commit."""

from __future__ import annotations

from engine.queues.protocols import Record
from engine.shards.controller import _within_bytes


def _records(*sizes: int) -> list[Record]:
    return [Record("c", 0, i, b"x" * n) for i, n in enumerate(sizes)]


def test_a_batch_is_cut_before_the_record_that_would_pass_the_cap() -> None:
    records = _records(400, 400, 400, 400)
    assert [r.offset for r in _within_bytes(records, 1000)] == [0, 1]


def test_everything_fits_when_under_the_cap() -> None:
    records = _records(10, 20, 30)
    assert _within_bytes(records, 60) == records


def test_a_record_larger_than_the_cap_still_goes_alone() -> None:
    records = _records(5000, 10)
    assert [r.offset for r in _within_bytes(records, 1000)] == [0]
    assert _within_bytes([], 1000) == []
