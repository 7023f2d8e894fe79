"""The README's quickstart works as written: `cadenza dev`, then the Python snippet."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        assert proc.poll() is None, "cadenza dev exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("cadenza dev did not listen in time")


@pytest.mark.embedded_only  # runs `cadenza dev` (SQLite) itself
def test_readme_quickstart_runs_against_cadenza_dev(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no python quickstart"
    port = _free_port()
    script = tmp_path / "hello.py"
    script.write_text(blocks[0].replace("127.0.0.1:7833", f"127.0.0.1:{port}"))
    server = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "dev", "--port", str(port),
         "--db", str(tmp_path / "cadenza.db")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port, server)
        out = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert out.stdout.decode().strip() == '"Hello, Cadenza!"'
    finally:
        server.terminate()
        server.wait(timeout=10)
