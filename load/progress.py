"""Progress display on stderr while a run goes: a rich bar, a plain ticker, or nothing.

rich comes with the optional `load` extra. Without it the harness still runs and prints
a throttled "label n/total" line instead, so the core harness needs only the base install.
Each scenario phase asks for a counter (`board.counter("workflows", n)`) and advances it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.progress import Progress

Advance = Callable[[int], None]


class ProgressBoard(Protocol):
    def counter(self, label: str, total: int) -> Advance:
        """A new line on the board; call the result with how many units just finished."""
        ...


class _Silent:
    def counter(self, label: str, total: int) -> Advance:
        return lambda n: None


class _Plain:
    """One stderr line per counter at most every `every` seconds, and one when it is full."""

    def __init__(self, every: float = 2.0) -> None:
        self._every = every

    def counter(self, label: str, total: int) -> Advance:
        done = 0
        last = time.monotonic()

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if done >= total or now - last >= self._every:
                last = now
                print(f"  {label}: {done}/{total}", file=sys.stderr, flush=True)

        return advance


class _Rich:
    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def counter(self, label: str, total: int) -> Advance:
        task = self._progress.add_task(label, total=total)
        return lambda n: self._progress.advance(task, n)


@contextmanager
def progress_board(enabled: bool) -> Iterator[ProgressBoard]:
    """The best display available: rich if installed, else plain lines; or none at all."""
    if not enabled:
        yield _Silent()
        return
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:
        yield _Plain()
        return
    bar = Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with bar:
        yield _Rich(bar)
