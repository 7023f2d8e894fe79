"""`FileLock`: one process at a time per embedded database file.

SQLite itself lets any number of processes open a file; two Cadenza processes on one file
would both apply the same shards' commands and log records (each believes it is alone, since
the in-process log keeps its group state in memory). So the first process to open a file
takes an exclusive `flock` on a sidecar file, `<database>.lock`, and holds it until it closes
the database. The kernel drops the lock when the process dies in any way (kill -9 included),
so a crashed server never blocks the next one.

The sidecar holds a JSON description of the holder (pid, host, when; its node id and address
once the server knows them), which a refused process puts in its error. The file itself is
never deleted: removing it while another process waits for it would let two processes lock
two different files of the same name.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from engine.errors import InUseError, PersistenceError


def lock_path(database: str) -> str:
    return f"{database}.lock"


class FileLock:
    """An exclusive, non-blocking `flock` on `<database>.lock` (see the module docstring).

    Blocking calls (open, flock, write): run them off the event loop.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.path = lock_path(database)
        self._fd: int | None = None
        self._holder: dict[str, Any] = {}

    def acquire(self) -> None:
        """Take the lock and describe this process in the file.

        Raises:
            InUseError: another process holds it; the message names that process.
            PersistenceError: the lock file cannot be created.
        """
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PersistenceError(
                f"sqlite {self.database}: cannot open its lock file {self.path}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise InUseError(
                f"database {self.database} is in use by another cadenza process "
                f"({describe_holder(holder)}): stop that one first, or use another file"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise PersistenceError(
                f"sqlite {self.database}: cannot lock {self.path}: {exc.strerror}"
            ) from exc
        self._fd = fd
        self._holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        self._write()

    def describe(self, **details: Any) -> None:
        """Add details (node id, address) to what a refused process is told."""
        if self._fd is None:
            return
        self._holder.update(details)
        self._write()

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            # Closing the descriptor drops the lock; the stale description stays (see above).
            os.close(fd)

    def _write(self) -> None:
        assert self._fd is not None
        data = json.dumps(self._holder).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


def _read(fd: int) -> dict[str, Any]:
    # The holder may be rewriting it this instant: an unreadable description is "unknown".
    with contextlib.suppress(OSError, ValueError):
        value = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(value, dict):
            return value
    return {}


def describe_holder(holder: dict[str, Any]) -> str:
    """`pid 123 on host h, node n, serving 127.0.0.1:7833, since 2026-01-02 03:04:05 UTC`."""
    parts = []
    if holder.get("pid"):
        parts.append(
            f"pid {holder['pid']}" + (f" on {holder['host']}" if holder.get("host") else "")
        )
    if holder.get("node_id"):
        parts.append(f"node {holder['node_id']}")
    if holder.get("address"):
        parts.append(f"serving {holder['address']}")
    if holder.get("since"):
        parts.append(f"since {format_time(float(holder['since']))}")
    return ", ".join(parts) or "no details recorded"


def format_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
