"""`load/cpu_ab.sh`: two commits, interleaved runs, a real CPU figure for each run.

The script reads the harness's summary line and /proc; a change to either must break this
test rather than leave the tool printing zeros or nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def worktrees() -> list[str]:
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return listed.stdout.splitlines()


def cpu_ab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "load/cpu_ab.sh", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_compares_two_commits_with_a_cpu_figure_per_run() -> None:
    before = worktrees()
    done = cpu_ab("HEAD", "HEAD", "1", "30")
    assert done.returncode == 0, done.stderr
    row = re.search(r"^\| 1 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|$", done.stdout, re.M)
    assert row, done.stdout
    cpu_a, cpu_b, rate_a, rate_b = (float(x) for x in row.groups())
    # A server that answered 30 workflows used CPU; a zero means it measured another process.
    assert cpu_a > 0
    assert cpu_b > 0
    assert rate_a > 0
    assert rate_b > 0
    assert "mean server CPU per workflow" in done.stdout
    assert worktrees() == before, "the script left a worktree behind"


def test_refuses_an_unknown_commit() -> None:
    done = cpu_ab("HEAD", "no-such-rev-xyz", "1", "30")
    assert done.returncode != 0
    assert "no-such-rev-xyz" in done.stderr
