"""`deploy/install.sh` (run by `deploy/dev.sh` on every start): quiet when it installs, and
a no-op when nothing changed, so a server starts in a second or two instead of reinstalling."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def install(**env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        ["bash", "deploy/install.sh", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    return done, time.monotonic() - began


def test_install_is_quiet_and_skipped_when_nothing_changed() -> None:
    # A real install (forced): setuptools' multi-line editable-install warning used to be
    # printed here, at the top of every `deploy/dev.sh` server log.
    forced, _ = install(CADENZA_REINSTALL="1")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == ""
    assert "Editable installation" not in forced.stderr
    assert "Warning" not in forced.stderr
    # Nothing changed since: no pip at all.
    again, took = install()
    assert again.returncode == 0, again.stderr
    assert (again.stdout, again.stderr) == ("", "")
    assert took < 2, f"install.sh took {took:.1f} s with nothing to install"
