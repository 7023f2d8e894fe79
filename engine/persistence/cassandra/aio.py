"""The one bridge between cassandra-driver and asyncio, plus the connection URL.

cassandra-driver runs its I/O on its own reactor thread (libev when available) and reports a
result by calling back on that thread. `CqlSession` turns each `ResponseFuture` into an
asyncio future with `loop.call_soon_threadsafe`, so no coroutine ever blocks on the driver and
no driver thread ever touches the event loop's objects directly. Paged reads go through the
same bridge (`CqlSession.pages`). Blocking driver calls that have no async form (connect,
prepare, shutdown) run in a worker thread.

Consistency: LOCAL_QUORUM reads and writes, LOCAL_SERIAL for conditional writes (and for the
few reads that must see a Paxos round in flight). Every driver exception is translated here
into the engine's `PersistenceError` tree; nothing above this module sees a driver type except
the opaque prepared statements of `cql.py`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import parse_qs

from cassandra import (
    ConsistencyLevel,
    OperationTimedOut,
    RequestValidationException,
    WriteTimeout,
    WriteType,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
from cassandra.query import (
    BatchStatement,
    BatchType,
    SimpleStatement,
    dict_factory,
    tuple_factory,
)

from engine.errors import PersistenceError

Row: TypeAlias = tuple[Any, ...]
# A prepared statement of cassandra-driver (untyped); only cql.py creates them.
Prepared: TypeAlias = Any

DEFAULT_PORT = 9042
REQUEST_TIMEOUT_S = 10.0
_NAMED = "cadenza-named-rows"
# Statements of one execute_all in flight at once (one write's history rows, say).
_CONCURRENCY = 256
_KEYSPACE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")


class CassandraRequestError(PersistenceError):
    """Cassandra rejected the request itself (invalid CQL, missing table, oversized
    mutation): retrying the same request cannot succeed."""

    retryable = False


@dataclass(frozen=True, slots=True)
class CassandraUrl:
    """A parsed `cassandra://host1[,host2...][:port]/keyspace[?local_dc=dc1&replication_factor=3]`.

    A port given on any host applies to all of them (the driver takes one native port).
    `replication_factor` is used only when `apply_schema` creates the keyspace.
    """

    hosts: tuple[str, ...]
    port: int
    keyspace: str
    local_dc: str | None = None
    replication_factor: int = 1

    @classmethod
    def parse(cls, url: str) -> CassandraUrl:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "cassandra":
            raise ValueError(f"invalid cassandra url {url!r}: expected cassandra://host/keyspace")
        rest, _, query = rest.partition("?")
        netloc, _, keyspace = rest.partition("/")
        keyspace = keyspace.strip("/")
        # CQL folds unquoted identifiers to lower case; so do we, to name the same keyspace.
        keyspace = keyspace.lower()
        if not _KEYSPACE.fullmatch(keyspace):
            raise ValueError(
                f"invalid cassandra url {url!r}: the path must name a keyspace "
                "(a letter, then up to 47 letters, digits or underscores)"
            )
        hosts: list[str] = []
        ports: set[int] = set()
        for entry in netloc.split(","):
            host, colon, port = entry.strip().rpartition(":") if ":" in entry else (entry, "", "")
            host = host.strip()
            if not host:
                raise ValueError(f"invalid cassandra url {url!r}: empty host")
            if colon:
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise ValueError(f"invalid cassandra url {url!r}: bad port {port!r}")
                ports.add(int(port))
            hosts.append(host)
        if len(ports) > 1:
            raise ValueError(f"invalid cassandra url {url!r}: all hosts must use one port")
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=False).items()}
        unknown = set(params) - {"local_dc", "replication_factor"}
        if unknown:
            raise ValueError(f"invalid cassandra url {url!r}: unknown options {sorted(unknown)}")
        rf = params.get("replication_factor", "1")
        if not rf.isdigit() or int(rf) < 1:
            raise ValueError(f"invalid cassandra url {url!r}: bad replication_factor {rf!r}")
        return cls(
            hosts=tuple(hosts),
            port=ports.pop() if ports else DEFAULT_PORT,
            keyspace=keyspace,
            local_dc=params.get("local_dc"),
            replication_factor=int(rf),
        )

    @property
    def address(self) -> str:
        return ",".join(f"{h}:{self.port}" for h in self.hosts)


def translate(exc: BaseException, what: str) -> PersistenceError:
    """`exc` (raised by or reported from the driver) as a `PersistenceError`."""
    if isinstance(exc, PersistenceError):
        return exc
    name = type(exc).__name__
    err: PersistenceError
    if isinstance(exc, RequestValidationException):
        err = CassandraRequestError(f"cassandra rejected {what}: {name}: {exc}")
    elif isinstance(exc, WriteTimeout) and exc.write_type == WriteType.CAS:
        # Paxos may still commit the proposal: the caller must treat the outcome as unknown.
        err = PersistenceError(f"cassandra {what}: conditional write timed out, outcome unknown")
    elif isinstance(exc, OperationTimedOut):
        err = PersistenceError(
            f"cassandra {what}: no answer in time (a write may still have been applied): {exc}"
        )
    else:
        err = PersistenceError(f"cassandra {what}: {name}: {exc}")
    err.__cause__ = exc
    return err


def _describe(statement: Any) -> str:
    if isinstance(statement, BatchStatement):
        return "a conditional batch"
    prepared = getattr(statement, "prepared_statement", statement)
    text = " ".join(str(getattr(prepared, "query_string", statement)).split())
    return repr(text if len(text) <= 80 else text[:77] + "...")


class _Waiter:
    """Hands a ResponseFuture's pages (or its error) to the asyncio loop: THE bridge.

    The driver calls `on_rows`/`on_error` on its reactor thread (or at once, on the loop's
    thread, when the result is already in); they only schedule the future's completion with
    `call_soon_threadsafe`. The driver keeps callbacks across pages, so a request registers
    one waiter and re-arms it before fetching each further page.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[list[Any]] = loop.create_future()

    def arm(self) -> asyncio.Future[list[Any]]:
        self.future = self._loop.create_future()
        return self.future

    def on_rows(self, rows: Any) -> None:
        self._post(self._resolve, list(rows) if rows is not None else [])

    def on_error(self, exc: BaseException) -> None:
        self._post(self._fail, exc)

    def _post(self, fn: Callable[[Any], None], arg: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting for this answer any more

    def _resolve(self, rows: list[Any]) -> None:
        if not self.future.done():  # the awaiting task may have been cancelled
            self.future.set_result(rows)

    def _fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class _Request:
    """One statement in flight: its first page, then (on demand) the next ones."""

    def __init__(self, session: Any, statement: Any, profile: str, what: str) -> None:
        self._session = session
        self._statement = statement
        self._profile = profile
        self.what = what
        self._response: Any = None
        self._waiter: _Waiter | None = None

    @property
    def has_more_pages(self) -> bool:
        return self._response is not None and bool(self._response.has_more_pages)

    async def page(self) -> list[Any]:
        """The first page on the first call, the next page on each later call."""
        try:
            if self._waiter is None:
                self._waiter = _Waiter(asyncio.get_running_loop())
                self._response = self._session.execute_async(
                    self._statement, execution_profile=self._profile
                )
                self._response.add_callbacks(self._waiter.on_rows, self._waiter.on_error)
                future = self._waiter.future
            else:
                future = self._waiter.arm()
                self._response.start_fetching_next_page()
            return await future
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc, self.what) from exc


class PageIterator:
    """`async for page in session.pages(...)`: each page is a list of rows, fetched only
    when the previous one was consumed (stopping early never reads the rest)."""

    def __init__(self, request: _Request) -> None:
        self._request = request
        self._started = False

    def __aiter__(self) -> PageIterator:
        return self

    async def __anext__(self) -> list[Row]:
        if self._started and not self._request.has_more_pages:
            raise StopAsyncIteration
        self._started = True
        return await self._request.page()


class CqlSession:
    """A connected driver `Cluster` + `Session`, driven from asyncio.

    Defaults: LOCAL_QUORUM for reads and writes, LOCAL_SERIAL for the Paxos phase of
    conditional writes, rows as tuples, token-aware routing.
    """

    def __init__(self, cluster: Any, session: Any) -> None:
        self._cluster = cluster
        self._session = session

    @classmethod
    async def connect(cls, url: CassandraUrl, *, admin: bool = False) -> CqlSession:
        """Connect to the cluster (no keyspace bound: statements name their keyspace).

        `admin` sessions (schema changes, truncation) skip the driver's schema model, which
        only token-aware routing needs: connecting is cheaper on a cluster with many
        keyspaces.
        """

        def profile(row_factory: Any) -> Any:
            # One policy object per profile: the driver initialises each with the cluster.
            local = DCAwareRoundRobinPolicy(local_dc=url.local_dc) if url.local_dc else None
            return ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(local or DCAwareRoundRobinPolicy()),
                consistency_level=ConsistencyLevel.LOCAL_QUORUM,
                serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
                request_timeout=REQUEST_TIMEOUT_S,
                row_factory=row_factory,
            )

        cluster = Cluster(
            contact_points=list(url.hosts),
            port=url.port,
            # Rows by column name serve the result of a failed conditional batch, whose
            # columns depend on which rows Cassandra sends back.
            execution_profiles={
                EXEC_PROFILE_DEFAULT: profile(tuple_factory),
                _NAMED: profile(dict_factory),
            },
            connect_timeout=5,
            # Native protocol v5 (Cassandra 4.0 and later, the line Java 17 needs): saves the
            # driver's two downgrade round trips and warnings on every connect.
            protocol_version=5,
            schema_metadata_enabled=not admin,
        )
        try:
            session = await asyncio.to_thread(cluster.connect)
        except Exception as exc:
            await asyncio.to_thread(cluster.shutdown)
            raise PersistenceError(
                f"cannot connect to Cassandra at {url.address}: {type(exc).__name__}: {exc}"
            ) from exc
        return cls(cluster, session)

    async def close(self) -> None:
        # shutdown() joins the driver's threads: keep that off the loop.
        await asyncio.to_thread(self._cluster.shutdown)

    async def prepare(self, cql: str) -> Prepared:
        try:
            return await asyncio.to_thread(self._session.prepare, cql)
        except Exception as exc:
            raise translate(exc, f"prepare {_describe(cql)}") from exc

    def _request(
        self,
        statement: Any,
        params: Sequence[Any],
        *,
        serial: bool = False,
        named: bool = False,
        fetch_size: int | None = None,
    ) -> _Request:
        bound = _bind(statement, params)
        if serial:
            bound.consistency_level = ConsistencyLevel.LOCAL_SERIAL
        if fetch_size is not None:
            bound.fetch_size = fetch_size
        profile = _NAMED if named else EXEC_PROFILE_DEFAULT
        return _Request(self._session, bound, profile, _describe(statement))

    async def execute(
        self, statement: Any, params: Sequence[Any] = (), *, serial: bool = False
    ) -> list[Row]:
        """Run one statement (prepared + params, a batch, or CQL text); return its first
        page of rows. `serial` reads at LOCAL_SERIAL (sees in-flight Paxos writes)."""
        return await self._request(statement, params, serial=serial).page()

    async def execute_named(
        self, statement: Any, params: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        """Like `execute`, with each row as a dict by column name."""
        return await self._request(statement, params, named=True).page()

    async def execute_all(self, calls: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        """Run independent statements concurrently (at most `_CONCURRENCY` in flight); raise
        the first failure once all have ended."""
        for start in range(0, len(calls), _CONCURRENCY):
            chunk = calls[start : start + _CONCURRENCY]
            results = await asyncio.gather(
                *(self.execute(stmt, params) for stmt, params in chunk), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def conditional(self, statement: Any, params: Sequence[Any] = ()) -> bool:
        """Run a lightweight transaction; return whether Cassandra applied it."""
        rows = await self.execute(statement, params)
        if not rows:
            raise PersistenceError(f"cassandra {_describe(statement)}: no LWT result row")
        return bool(rows[0][0])

    def pages(self, statement: Any, params: Sequence[Any] = (), *, fetch_size: int) -> PageIterator:
        return PageIterator(self._request(statement, params, fetch_size=fetch_size))

    async def fetch_all(
        self, statement: Any, params: Sequence[Any] = (), *, fetch_size: int = 1000
    ) -> list[Row]:
        rows: list[Row] = []
        async for page in self.pages(statement, params, fetch_size=fetch_size):
            rows.extend(page)
        return rows


def _bind(statement: Any, params: Sequence[Any]) -> Any:
    if isinstance(statement, str):
        # Administrative CQL (schema statements) only: data always goes through prepared ones.
        if params:
            raise ValueError("CQL text takes no parameters here: prepare the statement")
        return SimpleStatement(statement)
    if isinstance(statement, BatchStatement):
        return statement
    return statement.bind(list(params))


def logged_batch() -> Any:
    """A LOGGED batch; one holding conditions must stay inside one partition."""
    return BatchStatement(batch_type=BatchType.LOGGED)


def unlogged_batch() -> Any:
    """An UNLOGGED batch: atomic and isolated when all its rows share one partition."""
    return BatchStatement(batch_type=BatchType.UNLOGGED)


def batch_add(batch: Any, statement: Prepared, params: Sequence[Any]) -> None:
    batch.add(statement, list(params))
