"""`RedisTaskMatcher`: the distributed `TaskMatcher`, task lists held in Redis (redis-py asyncio).

Matching processes share task lists through one Redis; any process may add to a list and any
may poll it. Per task list (domain_id, name, type) under `<prefix>:tl:<list>`:

    :backlog          LIST  queued items, head first: pending query offers, then tasks (FIFO)
    :ttl              ZSET  task id -> expiry (ns) for tasks added with a TTL
    :pollers          HASH  poller identity -> last access (ns), for DescribeTaskList
    :inflight:<poll>  LIST  the item one running `poll` took and has not acknowledged yet
    :query:<id>       STR   a query offer: `+payload` while it can be taken, `-` once taken
    :reply:<id>       LIST  pushed once by the poller that takes the offer: wakes the offerer
and one `<prefix>:leases` ZSET (in-flight key -> lease deadline, ns) shared by all lists.

An item is `T` + task id + expiry + payload, or `Q` + query id. Tasks go to the tail; offers go
in front of every task, behind older offers, so decision pollers take queries first (FIFO).

Poll. A poll first runs TAKE (a script: record the poller, renew its lease, move the first live
item into the poll's in-flight list, dropping expired tasks), then blocks with BLMOVE from the
backlog into the in-flight list, re-issued in slices of `block_slice_seconds` until the
deadline. Redis serves blocked clients in arrival order, which is sync match to the
longest-waiting poller. An item reaching a poll is settled before `poll` returns: a task is
acknowledged (the in-flight list is deleted) and returned; an expired task is dropped; a query
is claimed atomically (its payload swapped for the "taken" mark), which pushes the offerer's
reply.

Why the ack happens inside `poll`: the protocol has no completion call and the frontend's next
step (RecordStarted through the shard log) is itself durable and deduplicated, so "the frontend
has the task" is exactly "`poll` returned it". What the in-flight list protects is the gap
between Redis handing out the item and this process having it: a process that dies there (or
whose connection drops) leaves the item in its in-flight list, under a lease; the sweeper of
any matcher on the same prefix puts it back at the head of the backlog once the lease
(`block_slice_seconds + lease_seconds` after the poll's last renewal) has passed. Tasks are at
least once, so a poller that was only slow may see its task handed out again: harmless.

Cancellation. Each poll runs its Redis commands on one connection whose server-side client id
it knows. A cancelled poll kills that client (CLIENT KILL ID) before moving its in-flight items
back to the head of the backlog, so a BLMOVE the server had not yet noticed was abandoned
cannot move an item in after the give-back. Without permission to kill clients the item is
still recovered, by the lease.

Queries are never stored beyond their offer: `offer_query` inserts the offer and waits on its
reply list; at the deadline WITHDRAW deletes the offer, and whichever of CLAIM and WITHDRAW runs
first decides whether the query was taken (an offer that never made it into Redis was not).

Time: TTLs, poller access times and leases use the injected `Clock` (engine time; across
processes it is the wall clock, so leases assume clocks agree to well under `lease_seconds`);
poll and offer timeouts are long-poll deadlines on the event loop's clock.

Scope: one Redis server (or a primary with replicas). Scripts touch `:leases`, which spans all
lists, together with one list's keys, so Redis Cluster is not supported. Each waiting poll holds
one connection of the pool (`max_connections`). Redis errors surface as `PersistenceError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar, cast

import structlog
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, RedisError, ResponseError

from engine.clock import Clock, SystemClock
from engine.errors import PersistenceError
from engine.matching.protocols import PolledTask, PollerInfo, TaskType

__all__ = ["RedisTaskMatcher"]

_T = TypeVar("_T")
# What a command or script takes as an argument; its reply is whatever the script returns.
ScriptArg: TypeAlias = str | int | float | bytes

log = structlog.get_logger(__name__)

_NS: Final = 1_000_000_000
# Below this a BLMOVE/BLPOP is not worth issuing (and a 0 timeout would block forever).
_MIN_BLOCK_S: Final = 0.001
# How long a query payload and its reply list outlive the offer's own timeout (GC only).
_OFFER_GRACE_S: Final = 5.0
# How much longer than a block slice a socket read may take before the connection is dead.
_SOCKET_MARGIN_S: Final = 5.0
# Expired leases reclaimed per sweeper query.
_SWEEP_BATCH: Final = 256
_INFLIGHT: Final = ":inflight:"
_POLL_ID_LEN: Final = 32
_TASK_ID_LEN: Final = 16
_EXPIRY_LEN: Final = 20
_TASK_HEADER: Final = 1 + _TASK_ID_LEN + _EXPIRY_LEN

# --- Lua ------------------------------------------------------------------------------------

_LUA_LIB = """
local function is_query(e) return string.byte(e, 1) == 81 end  -- 'Q'

-- Offers queue ahead of every task and behind older offers, so the queued offers are always
-- a prefix of the backlog; insert `e` right after that prefix.
local function insert_before_tasks(key, e)
  local i = 0
  while true do
    local chunk = redis.call('LRANGE', key, i, i + 31)
    for _, x in ipairs(chunk) do
      if not is_query(x) then
        redis.call('LINSERT', key, 'BEFORE', x, e)
        return
      end
    end
    if #chunk < 32 then
      redis.call('RPUSH', key, e)
      return
    end
    i = i + 32
  end
end

-- An item that was first in line goes back to the head of its kind.
local function give_back(key, e)
  if is_query(e) then
    redis.call('LPUSH', key, e)
  else
    insert_before_tasks(key, e)
  end
end

local function touch(pollers, identity, now, px)
  if identity ~= '' then
    redis.call('HSET', pollers, identity, now)
    redis.call('PEXPIRE', pollers, px)
  end
end
"""

# KEYS backlog inflight leases pollers ttl; ARGV now lease_deadline identity pollers_px.
_TAKE = """
touch(KEYS[4], ARGV[3], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], KEYS[2])
local now = tonumber(ARGV[1])
-- Bounded so a long run of expired tasks cannot stall Redis; the poll just goes round again.
for _ = 1, 1000 do
  local e = redis.call('LPOP', KEYS[1])
  if not e then return false end
  local live = true
  if not is_query(e) then
    local exp = tonumber(string.sub(e, 18, 37))
    if exp ~= 0 and exp <= now then
      live = false
      redis.call('ZREM', KEYS[5], string.sub(e, 2, 17))
    end
  end
  if live then
    redis.call('RPUSH', KEYS[2], e)
    return e
  end
end
return false
"""

# KEYS inflight leases pollers ttl; ARGV task_id now identity pollers_px. Acknowledges a task
# (or drops an expired one, or ends a poll that got nothing).
_ACK = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[4], ARGV[1]) end
touch(KEYS[3], ARGV[3], ARGV[2], ARGV[4])
return 1
"""

# KEYS inflight leases pollers offer reply; ARGV reply_px now identity pollers_px.
_CLAIM = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
touch(KEYS[3], ARGV[3], ARGV[2], ARGV[4])
local offer = redis.call('GET', KEYS[4])
if not offer or string.sub(offer, 1, 1) ~= '+' then return false end
redis.call('SET', KEYS[4], '-', 'KEEPTTL')
redis.call('RPUSH', KEYS[5], '1')
redis.call('PEXPIRE', KEYS[5], ARGV[1])
return string.sub(offer, 2)
"""

# KEYS inflight backlog leases; ARGV held now drop_lease. Moves a poll's in-flight items back
# to the head of the backlog. `now` set: only if the lease has expired (the sweeper). `held`:
# the item the poll had received, re-queued if its acknowledgement already ran.
_GIVE_BACK = """
if ARGV[2] ~= '' then
  local s = redis.call('ZSCORE', KEYS[3], KEYS[1])
  if not s then return -1 end
  if tonumber(s) > tonumber(ARGV[2]) then return -1 end
end
local n = 0
while true do
  local e = redis.call('RPOP', KEYS[1])
  if not e then break end
  give_back(KEYS[2], e)
  n = n + 1
end
if n == 0 and ARGV[1] ~= '' then
  give_back(KEYS[2], ARGV[1])
  n = 1
end
if ARGV[3] == '1' then redis.call('ZREM', KEYS[3], KEYS[1]) end
return n
"""

# KEYS backlog offer; ARGV item payload offer_px.
_OFFER = """
redis.call('SET', KEYS[2], '+' .. ARGV[2], 'PX', ARGV[3])
insert_before_tasks(KEYS[1], ARGV[1])
return 1
"""

# KEYS backlog offer reply; ARGV item. 1 if the offer had been taken, else 0 (now withdrawn,
# or it never reached Redis: its insert was cut short by a cancellation).
_WITHDRAW = """
local offer = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[2], KEYS[3])
if offer == '-' then return 1 end
if offer then redis.call('LREM', KEYS[1], 1, ARGV[1]) end
return 0
"""

# KEYS backlog ttl; ARGV now. Queued tasks that are still live: the list minus the offers in
# front of it minus the expired tasks still in it.
_BACKLOG = """
local n = redis.call('LLEN', KEYS[1])
local offers = 0
while offers < n do
  local chunk = redis.call('LRANGE', KEYS[1], offers, offers + 31)
  local tasks_seen = false
  for _, x in ipairs(chunk) do
    if is_query(x) then offers = offers + 1 else tasks_seen = true break end
  end
  if tasks_seen or #chunk < 32 then break end
end
local expired = redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
return math.max(0, n - offers - expired)
"""


@dataclass(frozen=True, slots=True)
class _Script:
    source: str
    sha: str

    @classmethod
    def of(cls, body: str) -> _Script:
        source = _LUA_LIB + body
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


_S_TAKE = _Script.of(_TAKE)
_S_ACK = _Script.of(_ACK)
_S_CLAIM = _Script.of(_CLAIM)
_S_GIVE_BACK = _Script.of(_GIVE_BACK)
_S_OFFER = _Script.of(_OFFER)
_S_WITHDRAW = _Script.of(_WITHDRAW)
_S_BACKLOG = _Script.of(_BACKLOG)


@dataclass(frozen=True, slots=True)
class _Keys:
    """Key names of one task list. Components are length-prefixed: ids may contain ':'."""

    base: str

    @classmethod
    def of(cls, prefix: str, domain_id: str, name: str, task_type: TaskType) -> _Keys:
        return cls(f"{prefix}:tl:{len(domain_id)}:{domain_id}:{int(task_type)}:{len(name)}:{name}")

    @classmethod
    def of_inflight(cls, inflight: str) -> _Keys:
        return cls(inflight[: -(len(_INFLIGHT) + _POLL_ID_LEN)])

    @property
    def backlog(self) -> str:
        return self.base + ":backlog"

    @property
    def ttl(self) -> str:
        return self.base + ":ttl"

    @property
    def pollers(self) -> str:
        return self.base + ":pollers"

    def inflight(self, poll_id: str) -> str:
        return self.base + _INFLIGHT + poll_id

    def offer(self, query_id: str) -> str:
        return self.base + ":query:" + query_id

    def reply(self, query_id: str) -> str:
        return self.base + ":reply:" + query_id


class RedisTaskMatcher:
    """A `TaskMatcher` on Redis (see the module doc for the data layout and guarantees).

    Args:
        url: `redis://[user:password@]host:port/db` (also `rediss://`, `unix://`).
        clock: time source for task TTLs, poller access times and leases.
        key_prefix: prefix of every key; matchers sharing a prefix share task lists.
        lease_seconds: how long an item handed to a poll that never settles it (its process
            died) stays in flight, beyond the current block slice, before it is handed out again.
        poller_ttl_seconds: how long a poller stays listed by `pollers()` after its last poll.
        block_slice_seconds: longest single BLMOVE/BLPOP; leases are renewed once per slice.
        sweep_interval_seconds: how often (clock time) expired leases are looked for.
        max_connections: connection pool size; every waiting poll holds one connection.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        key_prefix: str = "cadenza",
        lease_seconds: float = 10.0,
        poller_ttl_seconds: float = 300.0,
        block_slice_seconds: float = 2.0,
        sweep_interval_seconds: float = 1.0,
        max_connections: int = 4096,
    ) -> None:
        if block_slice_seconds < 0.01 or lease_seconds <= 0 or sweep_interval_seconds <= 0:
            raise ValueError("slice, lease and sweep interval must be positive")
        self._url = url
        self._clock: Clock = clock or SystemClock()
        self._prefix = key_prefix
        self._leases = f"{key_prefix}:leases"
        self._lease_ns = int((lease_seconds + block_slice_seconds) * _NS)
        self._poller_ttl_ns = int(poller_ttl_seconds * _NS)
        self._pollers_px = str(max(1, int(poller_ttl_seconds * 1000)))
        self._slice = block_slice_seconds
        self._sweep_interval = sweep_interval_seconds
        self._max_connections = max_connections
        self._pool: ConnectionPool | None = None
        self._redis: Redis | None = None
        self._stopping = False
        # Running polls and offers (stop() cancels them), clean-ups of cancelled ones, sweeper.
        self._ops: set[asyncio.Task[Any]] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Server-side client id per pooled connection; forgotten when the connection reconnects.
        self._client_ids: dict[AbstractConnection, int] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (failing with `PersistenceError` if Redis cannot be reached) and start the
        lease sweeper. A stopped matcher can be started again."""
        if self._redis is not None:
            return
        # redis-py's default socket timeout (5 s) would cut a long BLMOVE short; the URL may
        # still set its own (`?socket_timeout=`), checked below.
        pool = ConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            socket_timeout=self._slice + _SOCKET_MARGIN_S,
        )
        socket_timeout = pool.connection_kwargs.get("socket_timeout")
        if socket_timeout is not None and float(socket_timeout) <= self._slice:
            await pool.disconnect()
            raise ValueError(
                f"socket_timeout {socket_timeout} must exceed block_slice_seconds {self._slice}"
            )
        client = Redis(connection_pool=pool)
        try:
            await client.ping()
        except RedisError as e:
            await client.aclose()
            await pool.disconnect()
            where = self._where(pool)
            raise PersistenceError(f"cannot reach Redis for matching ({where}): {e}") from e
        self._pool, self._redis = pool, client
        self._sweeper = asyncio.create_task(self._sweep_loop())

    async def stop(self) -> None:
        """Release every waiting poll (with None) and withdraw every pending query offer.

        Items held by a released poll go back to the head of the backlog; backlogs stay in
        Redis and are served again by any matcher on the same prefix.
        """
        if self._redis is None or self._pool is None:
            return
        self._stopping = True
        try:
            ops = list(self._ops)
            for op in ops:
                op.cancel()
            await asyncio.gather(*ops, return_exceptions=True)
            if self._sweeper is not None:
                self._sweeper.cancel()
                await asyncio.gather(self._sweeper, return_exceptions=True)
                self._sweeper = None
            await asyncio.gather(*self._cleanups, return_exceptions=True)
            await self._redis.aclose()
            await self._pool.disconnect()
        finally:
            self._redis = self._pool = None
            self._client_ids.clear()
            self._stopping = False

    async def __aenter__(self) -> RedisTaskMatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- TaskMatcher --------------------------------------------------------------------------

    async def add_task(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        payload: bytes,
        ttl_seconds: float | None = None,
    ) -> None:
        redis = self._client()
        keys = _Keys.of(self._prefix, domain_id, task_list, task_type)
        task_id = os.urandom(_TASK_ID_LEN // 2).hex().encode()
        expires = 0 if ttl_seconds is None else self._clock.now_ns() + int(ttl_seconds * _NS)
        item = b"T" + task_id + b"%020d" % max(0, expires) + payload
        with _translated():
            if ttl_seconds is None:
                await redis.rpush(keys.backlog, item)
                return
            # One transaction: were the task acknowledged before its TTL entry was written, the
            # entry would stay behind and backlog() would undercount for good.
            pipe = redis.pipeline(transaction=True)
            pipe.zadd(keys.ttl, {task_id: expires})
            pipe.rpush(keys.backlog, item)
            await pipe.execute()

    async def poll(
        self,
        domain_id: str,
        task_list: str,
        task_type: TaskType,
        timeout_seconds: float,
        identity: str = "",
    ) -> PolledTask | None:
        self._client()
        if self._stopping:
            return None
        keys = _Keys.of(self._prefix, domain_id, task_list, task_type)
        return await self._run(self._poll(keys, timeout_seconds, identity), None)

    async def offer_query(
        self, domain_id: str, task_list: str, payload: bytes, timeout_seconds: float
    ) -> bool:
        self._client()
        if self._stopping:
            return False
        keys = _Keys.of(self._prefix, domain_id, task_list, TaskType.DECISION)
        return await self._run(self._offer(keys, payload, timeout_seconds), False)

    async def pollers(
        self, domain_id: str, task_list: str, task_type: TaskType
    ) -> list[PollerInfo]:
        redis = self._client()
        keys = _Keys.of(self._prefix, domain_id, task_list, task_type)
        with _translated():
            seen = cast(dict[bytes, bytes], await redis.hgetall(keys.pollers))
            horizon = self._clock.now_ns() - self._poller_ttl_ns
            infos = [PollerInfo(i.decode(), int(t)) for i, t in seen.items()]
            stale = [p.identity for p in infos if p.last_access_ns < horizon]
            if stale:
                await redis.hdel(keys.pollers, *stale)
        return sorted(
            (p for p in infos if p.last_access_ns >= horizon),
            key=lambda p: p.last_access_ns,
            reverse=True,
        )

    async def backlog(self, domain_id: str, task_list: str, task_type: TaskType) -> int:
        keys = _Keys.of(self._prefix, domain_id, task_list, task_type)
        with _translated():
            count = await self._eval(_S_BACKLOG, [keys.backlog, keys.ttl], [self._clock.now_ns()])
        return int(count)

    async def backlog_epoch(self) -> str:
        """The epoch key, created when missing: an empty Redis (restarted without its data,
        or flushed) gets a new one."""
        redis = self._client()
        key = f"{self._prefix}:epoch"
        with _translated():
            await redis.set(key, uuid.uuid4().hex, nx=True)
            value = await redis.get(key)
        return value.decode() if isinstance(value, bytes) else str(value)

    async def sweep(self) -> int:
        """Put the items of expired leases back at the head of their backlogs (the sweeper
        runs this every `sweep_interval_seconds`); returns how many items were put back."""
        redis = self._client()
        now = self._clock.now_ns()
        returned = 0
        with _translated():
            expired = cast(
                list[bytes],
                await redis.zrangebyscore(self._leases, "-inf", now, start=0, num=_SWEEP_BATCH),
            )
            for member in expired:
                inflight = member.decode()
                keys = _Keys.of_inflight(inflight)
                n = int(
                    await self._eval(
                        _S_GIVE_BACK, [inflight, keys.backlog, self._leases], [b"", now, "1"]
                    )
                )
                if n > 0:
                    log.warning("matching_lease_expired", task_list=keys.base, items=n)
                    returned += n
        return returned

    # --- poll ---------------------------------------------------------------------------------

    async def _poll(self, keys: _Keys, timeout: float, identity: str) -> PolledTask | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        inflight = keys.inflight(os.urandom(_POLL_ID_LEN // 2).hex())
        pool = self._connection_pool()
        with _translated():
            # get_connection is untyped in redis-py.
            conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        client_id: int | None = None
        # The item BLMOVE/TAKE handed to this poll, until it is settled.
        held: bytes | None = None
        try:
            client_id = await self._client_id(conn)
            while True:
                now = self._clock.now_ns()
                take_keys = [keys.backlog, inflight, self._leases, keys.pollers, keys.ttl]
                take_args: list[ScriptArg] = [now, now + self._lease_ns, identity, self._pollers_px]
                item = await self._eval_on(conn, _S_TAKE, take_keys, take_args)
                if item is None:
                    remaining = deadline - loop.time()
                    if remaining < _MIN_BLOCK_S:
                        await self._eval_on(
                            conn,
                            _S_ACK,
                            [inflight, self._leases, keys.pollers, keys.ttl],
                            ["", self._clock.now_ns(), identity, self._pollers_px],
                        )
                        return None
                    block = f"{max(_MIN_BLOCK_S, min(remaining, self._slice)):.3f}"
                    item = await _call_on(
                        conn, "BLMOVE", keys.backlog, inflight, "LEFT", "RIGHT", block
                    )
                    if item is None:
                        continue
                held = item
                polled = await self._settle(conn, keys, inflight, item, identity)
                held = None
                if polled is not None:
                    return polled
        except asyncio.CancelledError:
            await self._abandon(conn, client_id, keys, inflight, held)
            raise
        except RedisError as e:
            await self._abandon(conn, client_id, keys, inflight, held)
            raise PersistenceError(f"redis matcher: {e}") from e
        finally:
            await pool.release(conn)

    async def _settle(
        self, conn: AbstractConnection, keys: _Keys, inflight: str, item: bytes, identity: str
    ) -> PolledTask | None:
        """Acknowledge, drop or claim the item in the poll's in-flight list; None if stale."""
        now = self._clock.now_ns()
        if item[:1] == b"Q":
            query_id = item[1:].decode()
            payload = await self._eval_on(
                conn,
                _S_CLAIM,
                [inflight, self._leases, keys.pollers, keys.offer(query_id), keys.reply(query_id)],
                [int(_OFFER_GRACE_S * 1000), now, identity, self._pollers_px],
            )
            return None if payload is None else PolledTask(payload, is_query=True)
        task_id = item[1 : 1 + _TASK_ID_LEN]
        expires = int(item[1 + _TASK_ID_LEN : _TASK_HEADER])
        await self._eval_on(
            conn,
            _S_ACK,
            [inflight, self._leases, keys.pollers, keys.ttl],
            [task_id, now, identity, self._pollers_px],
        )
        if expires and now >= expires:
            return None
        return PolledTask(item[_TASK_HEADER:])

    async def _abandon(
        self,
        conn: AbstractConnection,
        client_id: int | None,
        keys: _Keys,
        inflight: str,
        held: bytes | None,
    ) -> None:
        """Undo a poll that will not return its item: kill its server-side client so nothing
        it sent can still run, then put its in-flight items back at the head of the backlog."""
        await conn.disconnect(nowait=True)
        redis = self._client()

        async def give_back() -> None:
            drop_lease = "0"
            try:
                if client_id is not None:
                    with contextlib.suppress(ResponseError):  # no permission: the lease covers
                        await redis.client_kill_filter(_id=str(client_id))
                        drop_lease = "1"
                else:
                    drop_lease = "1"  # nothing that could move an item was sent
                await self._eval(
                    _S_GIVE_BACK,
                    [inflight, keys.backlog, self._leases],
                    [held or b"", "", drop_lease],
                )
            except RedisError as e:
                log.warning("matching_give_back_failed", task_list=keys.base, error=str(e))

        # Shielded: a second cancellation must not cut the give-back short; stop() awaits it.
        task = asyncio.create_task(give_back())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)

    # --- queries ------------------------------------------------------------------------------

    async def _offer(self, keys: _Keys, payload: bytes, timeout: float) -> bool:
        redis = self._client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        query_id = os.urandom(16).hex()
        item = b"Q" + query_id.encode()
        offer, reply = keys.offer(query_id), keys.reply(query_id)
        withdraw_keys = [keys.backlog, offer, reply]
        px = int((max(0.0, timeout) + _OFFER_GRACE_S) * 1000)
        try:
            with _translated():
                await self._eval(_S_OFFER, [keys.backlog, offer], [item, payload, px])
                _raise_if_cancelled()
                while (remaining := deadline - loop.time()) >= _MIN_BLOCK_S:
                    block = round(min(remaining, self._slice), 3)
                    taken = await redis.blpop([reply], timeout=block) is not None
                    _raise_if_cancelled()
                    if taken:
                        return True
                return bool(await self._eval(_S_WITHDRAW, withdraw_keys, [item]))
        except asyncio.CancelledError:
            task = asyncio.create_task(self._eval(_S_WITHDRAW, withdraw_keys, [item]))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            await asyncio.shield(task)
            raise

    # --- helpers ------------------------------------------------------------------------------

    async def _run(self, coro: Coroutine[Any, Any, _T], released: _T) -> _T:
        """Run a poll or offer as our own task, so that stop() can cancel it without touching
        the caller's task; the caller's own cancellation still reaches it through the await.

        Returns `released` when stop() cancelled it (the caller is not being cancelled).
        """
        caller = asyncio.current_task()
        task = asyncio.create_task(coro)
        self._ops.add(task)
        task.add_done_callback(self._ops.discard)
        try:
            return await task
        except asyncio.CancelledError:
            if caller is not None and caller.cancelling():
                raise
            return released

    def _client(self) -> Redis:
        if self._redis is None:
            raise PersistenceError("the Redis matcher is not started")
        return self._redis

    def _connection_pool(self) -> ConnectionPool:
        if self._pool is None:
            raise PersistenceError("the Redis matcher is not started")
        return self._pool

    @staticmethod
    def _where(pool: ConnectionPool) -> str:
        kw = pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
        return f"{where} db {kw.get('db', 0)}"

    async def _client_id(self, conn: AbstractConnection) -> int:
        client_id = self._client_ids.get(conn)
        if client_id is None:
            # Untyped in redis-py; it keeps a weak reference to the bound method.
            conn.register_connect_callback(self._forget_client_id)  # type: ignore[no-untyped-call]
            client_id = int(await _call_on(conn, "CLIENT", "ID"))
            self._client_ids[conn] = client_id
        return client_id

    def _forget_client_id(self, conn: AbstractConnection) -> None:
        # A (re)connected socket is a new server-side client.
        self._client_ids.pop(conn, None)

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[ScriptArg]) -> Any:
        redis = self._client()
        try:
            return await redis.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis lost its script cache (restart, SCRIPT FLUSH); EVAL caches it again.
            return await redis.eval(script.source, len(keys), *keys, *args)

    @staticmethod
    async def _eval_on(
        conn: AbstractConnection, script: _Script, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> Any:
        try:
            return await _call_on(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await _call_on(conn, "EVAL", script.source, len(keys), *keys, *args)

    async def _sweep_loop(self) -> None:
        while True:
            await self._clock.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except PersistenceError as e:
                log.warning("matching_sweep_failed", error=str(e))
            _raise_if_cancelled()  # stop() must not wait on a cancellation redis-py dropped


async def _call_on(conn: AbstractConnection, *args: ScriptArg) -> Any:
    """One command on a connection the caller holds; its reply."""
    await conn.send_command(*args)
    _raise_if_cancelled()
    reply = await conn.read_response()
    _raise_if_cancelled()
    return reply


def _raise_if_cancelled() -> None:
    """Deliver a cancellation redis-py swallowed.

    redis-py writes under `asyncio.wait_for`, which on Python 3.11 drops a cancellation that
    lands as the write completes: the task was asked to stop but carries on. Polls and offers
    must honour cancellation (it decides whether items are given back) and stop() must not
    wait on a sweeper that ignored it, so they check for a requested cancellation after each
    Redis call.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except RedisError as e:
        raise PersistenceError(f"redis matcher: {e}") from e
