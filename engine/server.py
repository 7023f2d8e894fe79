"""The composition root: builds every role of one process from an EngineConfig.

`cadenza dev` runs it with the embedded backends (SQLite, in-process log, memory matching);
`cadenza serve` with the distributed ones, running the roles its config names. Engine code
below this module only sees protocols.

Start-up refuses, before serving anything (`engine.startup`): a taken port, a database file
another process has open, a node id another process holds, and a shard count other than the
cluster's. Each raises a `StartupError` naming the other party; what was started is stopped.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol

import grpc
import structlog

from engine.clock import Clock, SystemClock
from engine.config import EngineConfig
from engine.errors import StartupError
from engine.frontend.context import FrontendContext
from engine.frontend.domain import DomainHandler
from engine.frontend.meta import MetaHandler
from engine.frontend.services import add_services
from engine.frontend.validation import SYSTEM_SEARCH_ATTRIBUTES
from engine.frontend.visibility import VisibilityHandler
from engine.frontend.worker import WorkerHandler
from engine.frontend.workflow import WorkflowHandler
from engine.history.engine import ShardEngine
from engine.history.handlers import dispatch
from engine.history.reader import RunReader
from engine.matching.factory import open_matcher
from engine.matching.protocols import TaskMatcher
from engine.persistence.factory import open_store, sqlite_path
from engine.queues.factory import channel_topics, open_node_channel, open_task_log
from engine.routing.bus import CommandBus
from engine.routing.topics import COMMAND_TOPIC, TIMER_TOPIC, TRANSFER_TOPIC
from engine.routing.watch import RunWatcher
from engine.shards.context import ShardContext
from engine.shards.controller import ShardController
from engine.startup import (
    NodeLeaseKeeper,
    check_port_free,
    resolve_num_shards,
)
from engine.timer.processor import TimerProcessor
from engine.transfer.executor import TransferExecutor
from engine.transfer.processor import TransferProcessor
from engine.transfer.recovery import BacklogRecovery
from engine.visibility.query import SEARCH_ATTRIBUTE_TYPES

log = structlog.get_logger(__name__)

MAX_MESSAGE = 8 * 1024 * 1024


class _Started(Protocol):
    """A part the server started and stops: a backend, the node lease or channel, a role."""

    async def stop(self) -> None: ...


class _Role(_Started, Protocol):
    """A role's component, started without arguments once the backends run."""

    async def start(self) -> None: ...


class Server:
    """All roles of one process; `async with Server(config)` or start()/stop()."""

    def __init__(
        self, config: EngineConfig, clock: Clock | None = None, bootstrap_domain: str = ""
    ) -> None:
        self.config = config
        # Registered (if missing) before the API listens, so no client sees it missing.
        self.bootstrap_domain = bootstrap_domain
        self.clock = clock or SystemClock()
        self.node_id = config.node_id or f"{socket.gethostname()}:{os.getpid()}"
        self.port = config.port
        self._grpc: grpc.aio.Server | None = None
        # Started parts (backends, then roles), stopped in reverse.
        self._components: list[_Started] = []
        self.node_lease: NodeLeaseKeeper | None = None

    async def start(self) -> None:
        """Start every role; on a failure, stop what was started and raise.

        Raises:
            StartupError: the port, the database file or the node id is taken, or the shard
                count differs from the cluster's (see `engine.startup`).
            PersistenceError: a backend cannot be reached or opened.
        """
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        roles = cfg.roles
        if "frontend" in roles:
            check_port_free(cfg.host, cfg.port)
        self.store = open_store(cfg.persistence_url)
        await self.store.start()
        self._components.append(self.store)
        # The address is known here unless the port is picked at bind time (0).
        listens = "frontend" in roles and cfg.port != 0
        self.node_lease = lease = NodeLeaseKeeper(
            self.store, self.node_id, address=f"{cfg.host}:{cfg.port}" if listens else ""
        )
        await lease.start()
        self._components.append(lease)
        # The shard count is the cluster's: given explicitly, it must match the store's.
        configured = cfg.num_shards if "num_shards" in cfg.model_fields_set else None
        where = cfg.persistence_url
        if where.startswith("sqlite:"):
            where = f"database {sqlite_path(where)}"
        n = await resolve_num_shards(self.store, configured, where)
        self.config = cfg = cfg.model_copy(update={"num_shards": n})
        topics = {COMMAND_TOPIC: n, TRANSFER_TOPIC: n, TIMER_TOPIC: n}
        topics.update(channel_topics(cfg.queues_url))
        self.task_log = open_task_log(cfg.queues_url, topics, store=self.store)
        await self.task_log.start()
        self._components.append(self.task_log)
        # Task lists are used by the frontend (polls) and the transfer processor (dispatch);
        # a process with the matching role alone runs the matcher's upkeep (lease sweeps).
        self.matcher: TaskMatcher | None = None
        if roles & {"frontend", "transfer", "matching"}:
            self.matcher = open_matcher(cfg.matching_url)
            await self.matcher.start()
            self._components.append(self.matcher)
        allowed = frozenset(k for k in SEARCH_ATTRIBUTE_TYPES if k not in SYSTEM_SEARCH_ATTRIBUTES)
        self.channel = open_node_channel(cfg.queues_url, self.task_log, self.node_id)
        self.bus = CommandBus(self.task_log, n, self.node_id, channel=self.channel)
        self.watcher = RunWatcher(self.channel)
        if self.channel is not None:
            await self.channel.start(self.bus.deliver, self.watcher.notify)
            self._components.append(self.channel)
        self.domains = DomainHandler(self.store, cluster_name=cfg.cluster_name)

        async def resolve_domain(name: str) -> str:
            record = await self.store.get_domain(name=name)
            return record.id if record is not None else ""

        components: list[_Role] = []
        self.shards: ShardController | None = None
        if "history" in roles:
            store, clock = self.store, self.clock

            def new_engine(shard: ShardContext, applied_offset: int) -> ShardEngine:
                return ShardEngine(shard, applied_offset, store, clock, allowed, dispatch)

            self.shards = shards = ShardController(
                self.store,
                self.task_log,
                self.bus,
                self.node_id,
                new_engine,
                watcher=self.watcher,
                max_batch=cfg.max_batch,
            )
            components.append(shards)
        # Mutable state as last written: from this process's shards, else from the store.
        runs = RunReader(self.store, n, local=self.shards)
        if "transfer" in roles:
            assert self.matcher is not None
            executor = TransferExecutor(runs, self.matcher, self.bus, resolve_domain)
            transfer = TransferProcessor(self.task_log, executor)
            components.append(transfer)
            components.append(
                BacklogRecovery(self.matcher, self.store, self.bus, transfer.workers.owned)
            )
        if "timer" in roles:
            components.append(
                TimerProcessor(self.task_log, self.store, self.clock, closed=self.shards)
            )
        for comp in components:
            await comp.start()
            self._components.append(comp)

        if self.bootstrap_domain:
            await self.domains.ensure_domain(self.bootstrap_domain)
        if "frontend" not in roles:
            log.info("server_started", node_id=self.node_id, roles=sorted(roles), shards=n)
            return
        assert self.matcher is not None
        fe = FrontendContext(
            runs=runs,
            history=self.store,
            visibility=self.store,
            bus=self.bus,
            matcher=self.matcher,
            domains=self.domains,
            watcher=self.watcher,
            clock=self.clock,
            allowed_search_attributes=allowed,
        )
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                # gRPC's default (on) lets a second server bind the same port and silently
                # share its connections: a taken port must fail the bind instead.
                ("grpc.so_reuseport", 0),
            ]
        )
        add_services(
            server,
            {
                "DomainAPI": self.domains,
                "WorkflowAPI": WorkflowHandler(fe),
                "WorkerAPI": WorkerHandler(fe),
                "VisibilityAPI": VisibilityHandler(fe),
                "MetaAPI": MetaHandler(),
            },
        )
        self._grpc = server
        try:
            self.port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
        except RuntimeError:
            # Taken since check_port_free looked (gRPC has logged its own lines already).
            check_port_free(cfg.host, cfg.port)
            raise StartupError(f"cannot listen on {cfg.host}:{cfg.port}") from None
        await server.start()
        await lease.set_address(self.address)
        log.info(
            "server_started",
            address=f"{cfg.host}:{self.port}",
            node_id=self.node_id,
            persistence=cfg.persistence_url,
            roles=sorted(roles),
            shards=n,
        )

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
            self._grpc = None
        # Everything started, in reverse: also what a start() that failed half-way had begun.
        while self._components:
            await self._components.pop().stop()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
