"""One SQLite file driven from one dedicated thread: the embedded mode's database handle.

`SqliteDatabase` owns the connection and the single worker thread every statement runs on, so
the asyncio loop never blocks on disk and no two statements ever race on the connection. Each
`read`/`write` call is one transaction. Both `SqliteStore` (state of record) and
`InProcessTaskLog` (the partitioned log) share one handle when they share a file, which also
serialises their writers: SQLite admits one writer at a time anyway, and one thread avoids
SQLITE_BUSY between them.

Durability: WAL journal with synchronous=NORMAL. A committed transaction survives the process
being killed (-9); only an OS crash or power loss can drop the last few commits.

One process per file: opening a file takes its `FileLock` (`<file>.lock`) before anything
touches the database, so a second server, or `cadenza schema apply`, on a file in use is
refused with the holder named, rather than running beside it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any, Concatenate, ParamSpec, TypeVar

import structlog

from engine.errors import PersistenceError
from engine.persistence.sqlite.lock import FileLock

log = structlog.get_logger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# Bump with every schema change that existing files need migrating for.
# 3: `cluster` (the recorded shard count) and `node_leases`.
SCHEMA_VERSION = 3


def load_schema() -> str:
    """The DDL of every embedded-mode table (store and log), safe to apply repeatedly."""
    return resources.files("engine.persistence.sqlite").joinpath("schema.sql").read_text("utf-8")


class _Worker:
    """One thread that runs submitted calls in order and hands their results back to the loop.

    Lighter than `run_in_executor` (no concurrent.futures.Future, lock and chained callbacks
    per call), and it wakes the loop once per drained run of calls rather than once per call:
    on the hot path every command, shard write and history read is one of these hops.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        fut: asyncio.Future[T] = self._loop.create_future()
        self._calls.put((fn, fut))
        return fut

    def shutdown(self) -> None:
        """Stop after the calls already submitted; joins the thread (call off the loop)."""
        self._calls.put(None)
        self._thread.join()

    def _serve(self) -> None:
        done: list[tuple[asyncio.Future[Any], bool, Any]] = []
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, fut = item
            try:
                done.append((fut, True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting caller
                done.append((fut, False, exc))
            if self._calls.empty() or len(done) >= 64:
                batch, done = done, []
                try:
                    self._loop.call_soon_threadsafe(_settle, batch)
                except RuntimeError:
                    return  # the loop closed: nobody waits any more


def _settle(batch: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in batch:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class SqliteDatabase:
    """A reference-counted handle on one SQLite file, with all work on one thread.

    `open()`/`close()` may be called by several owners (the store and the log); the file is
    opened by the first and closed by the last. Work submitted through `read`/`write` runs in
    submission order on the worker thread.

    A caller cancelled while its transaction runs does not stop the transaction: it may still
    commit. Callers treat a cancelled write as "outcome unknown", as with any remote database.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._executor: _Worker | None = None
        # Touched only on the worker thread (check_same_thread stays on to prove it).
        self._conn: sqlite3.Connection | None = None
        # Reads run on a second thread with their own connection: in WAL mode they see the
        # last committed state without queueing behind writes (the hot path reads run state
        # and history while shards write). An in-memory database has one connection only.
        self._reader: _Worker | None = None
        self._reader_conn: sqlite3.Connection | None = None
        self._users = 0
        self._lifecycle = asyncio.Lock()
        self.lock: FileLock | None = None if _in_memory(path) else FileLock(path)

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self) -> None:
        """Open the file (first caller) and apply the schema; later callers share it."""
        async with self._lifecycle:
            if self._users == 0:
                executor = _Worker("cadenza-sqlite")
                try:
                    await executor.submit(self._connect)
                except BaseException:
                    await asyncio.to_thread(executor.shutdown)
                    raise
                self._executor = executor
                if not _in_memory(self.path):
                    reader = _Worker("cadenza-sqlr")
                    await reader.submit(self._connect_reader)
                    self._reader = reader
            self._users += 1

    async def close(self) -> None:
        """Release one `open()`; the last release closes the connection and the thread."""
        async with self._lifecycle:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0:
                return
            executor = self._executor
            assert executor is not None
            self._executor = None
            reader, self._reader = self._reader, None
            if reader is not None:
                await reader.submit(self._disconnect_reader)
                await asyncio.to_thread(reader.shutdown)
            try:
                await executor.submit(self._disconnect)
            finally:
                # Joining the (now idle) worker off the loop keeps stop() non-blocking.
                await asyncio.to_thread(executor.shutdown)

    async def read(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(conn, ...)` in a deferred (read) transaction on the reader thread: it sees
        every transaction committed before it starts."""
        reader = self._reader
        if reader is None:
            return await self._submit("BEGIN", fn, *args, **kwargs)

        def run() -> T:
            return self._transaction(
                "BEGIN", lambda conn: fn(conn, *args, **kwargs), self._reader_conn
            )

        return await reader.submit(run)

    async def write(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run `fn(conn, ...)` in one write transaction; any exception rolls all of it back.

        BEGIN IMMEDIATE takes the write lock up front, so a check made inside `fn` (fencing,
        conditions) still holds when its writes commit, even against another process.
        """
        return await self._submit("BEGIN IMMEDIATE", fn, *args, **kwargs)

    async def _submit(
        self,
        begin: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        executor = self._executor
        if executor is None:
            raise PersistenceError(f"sqlite database {self.path!r} is not open")

        def run() -> T:
            return self._transaction(begin, lambda conn: fn(conn, *args, **kwargs))

        return await executor.submit(run)

    # --- worker thread only -------------------------------------------------------------

    def _transaction(
        self,
        begin: str,
        body: Callable[[sqlite3.Connection], T],
        conn: sqlite3.Connection | None = None,
    ) -> T:
        conn = conn or self._conn
        if conn is None:
            raise PersistenceError(f"sqlite database {self.path!r} is not open")
        try:
            conn.execute(begin)
            result = body(conn)
            conn.execute("COMMIT")
            return result
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("sqlite_rollback_failed", path=self.path)
            if isinstance(exc, sqlite3.Error):
                # Driver errors never leak past the adapter (style guide section 3).
                raise PersistenceError(f"sqlite {self.path}: {exc}") from exc
            raise

    def _connect(self) -> None:
        if self.lock is not None:
            self.lock.acquire()
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, one per call.
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=512)
        except sqlite3.Error as exc:
            self._unlock()
            raise PersistenceError(f"sqlite {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode: commits survive a killed process; only an OS crash can lose
            # the tail. FULL would fsync every commit and cap the group-commit rate.
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise PersistenceError(
                    f"sqlite {self.path}: schema version {version} is newer than this "
                    f"build's {SCHEMA_VERSION}"
                )
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + load_schema()
                + f"\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
            )
        except BaseException as exc:
            conn.close()
            self._unlock()
            if isinstance(exc, sqlite3.Error):
                raise PersistenceError(f"sqlite {self.path}: {exc}") from exc
            raise
        self._conn = conn

    def _connect_reader(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=512)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        except sqlite3.Error as exc:
            raise PersistenceError(f"sqlite {self.path}: {exc}") from exc
        self._reader_conn = conn

    def _disconnect_reader(self) -> None:
        conn, self._reader_conn = self._reader_conn, None
        if conn is not None:
            conn.close()

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._unlock()

    def _unlock(self) -> None:
        if self.lock is not None:
            self.lock.release()


def _in_memory(path: str) -> bool:
    return path == ":memory:" or path.startswith("file::memory:")
