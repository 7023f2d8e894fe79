"""Start-up guards: what a process checks before it serves anything, so that a careless second
start is refused with a message naming the first instead of running beside it.

- `check_port_free`: the gRPC port is not taken. gRPC binds with SO_REUSEPORT unless told
  otherwise, which lets a second server share a port (and its connections) silently; the
  server turns that off, and this check refuses a taken port before the store is touched.
- `resolve_num_shards`: the shard count is the cluster's, recorded in the store; a process
  configured with another one is refused (existing workflows would hash to other shards).
- `NodeLeaseKeeper`: the process's node id is leased in the store (`ClusterStore`), renewed
  while it runs and released on stop; a second process with the same node id is refused.
  (An embedded database file is also locked by its `SqliteDatabase`: one process per file.)

Each refusal raises a `StartupError` whose message says what to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import socket
import time
import uuid

import structlog

from engine.errors import ConfigMismatchError, InUseError
from engine.persistence.protocols import ClusterStore, NodeLease
from engine.persistence.sqlite.lock import describe_holder

log = structlog.get_logger(__name__)

# A new cluster's shard count when none is configured.
DEFAULT_NUM_SHARDS = 4
# A node lease lasts this long without renewal: how long a crashed process's node id stays
# blocked. Renewed three times per period, so two lost renewals in a row cost nothing.
NODE_LEASE_TTL_S = 30


def port_in_use_message(host: str, port: int) -> str:
    return f"port {port} on {host} is already in use (is another cadenza running?)"


def check_port_free(host: str, port: int) -> None:
    """Raise InUseError if something listens on host:port (port 0 is always free).

    Binds a throwaway socket the way gRPC will (SO_REUSEADDR, no SO_REUSEPORT), to every
    address the host resolves to. Only "address in use" refuses: any other failure (no IPv6,
    an unknown host) is left for the real bind to report.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InUseError(port_in_use_message(host, port)) from None


async def resolve_num_shards(store: ClusterStore, configured: int | None, where: str) -> int:
    """The cluster's shard count: the recorded one (recording it first for a store made
    before counts were recorded, or `configured` / the default for a new store). `where`
    names the store in the message.

    Raises:
        ConfigMismatchError: `configured` differs from the cluster's count.
    """
    found = await store.get_num_shards()
    wanted = found or configured or DEFAULT_NUM_SHARDS
    if configured is None or configured == wanted:
        wanted = await store.record_num_shards(wanted)
    if configured is not None and configured != wanted:
        raise ConfigMismatchError(
            f"{where} has {wanted} shards, not {configured}: partitions cannot be changed yet "
            f"(see issue 11); start it with --shards {wanted} (num_shards: {wanted}) or with "
            "no shard count"
        )
    return wanted


class NodeLeaseKeeper:
    """Holds this process's node id in the store from `start()` to `stop()`.

    Renews every third of the TTL. A renewal that finds the lease gone (it expired while the
    store was unreachable) claims it again; if another process has taken it meanwhile, the
    keeper logs `node_lease_lost` and `lost` is set, for the process to stop.
    """

    def __init__(
        self, store: ClusterStore, node_id: str, address: str = "", ttl_s: int = NODE_LEASE_TTL_S
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self.lease = NodeLease(
            node_id=node_id,
            token=uuid.uuid4().hex,
            host=socket.gethostname(),
            pid=os.getpid(),
            address=address,
            since_ns=time.time_ns(),
        )
        self.lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._held = False

    async def start(self) -> None:
        """Claim the node id.

        Raises:
            InUseError: another live process holds it; the message names it.
        """
        holder = await self._store.claim_node(self.lease, self._ttl_s)
        if holder is not None:
            raise InUseError(
                f"node id {self.lease.node_id!r} is in use by another cadenza process "
                f"({describe_lease(holder)}): stop it, or give this process another "
                f"--node-id; a process that died holding it frees it within {self._ttl_s} s"
            )
        self._held = True
        self._task = asyncio.create_task(self._renew_periodically(), name="node-lease")

    async def set_address(self, address: str) -> None:
        """Record the address the process serves (known once its port is bound)."""
        self.lease = dataclasses.replace(self.lease, address=address)
        if self._held:
            await self._renew()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._held:
            self._held = False
            try:
                await self._store.release_node(self.lease)
            except Exception as exc:  # noqa: BLE001 - it expires by itself within the TTL
                log.warning(
                    "node_lease_release_failed", node_id=self.lease.node_id, error=repr(exc)
                )

    async def _renew_periodically(self) -> None:
        while self._held:
            # Real time, not the server's Clock: the TTL runs out in the store's real time
            # (Cassandra's own), whatever a test's manual clock says.
            await asyncio.sleep(self._ttl_s / 3)
            try:
                await self._renew()
            except Exception as exc:  # noqa: BLE001 - the store is down: try again next time
                log.warning("node_lease_renew_failed", node_id=self.lease.node_id, error=repr(exc))

    async def _renew(self) -> None:
        if await self._store.renew_node(self.lease, self._ttl_s):
            return
        # It expired (the store was out of reach for a TTL): ours again unless taken.
        holder = await self._store.claim_node(self.lease, self._ttl_s)
        if holder is None:
            log.info("node_lease_reclaimed", node_id=self.lease.node_id)
            return
        log.error("node_lease_lost", node_id=self.lease.node_id, holder=describe_lease(holder))
        self._held = False
        self.lost.set()


def describe_lease(lease: NodeLease) -> str:
    """The holder of a node id, in the words a refused database file uses for its holder."""
    return describe_holder(
        {
            "pid": lease.pid,
            "host": lease.host,
            "address": lease.address,
            "since": lease.since_ns / 1e9,
        }
    )
