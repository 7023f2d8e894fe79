"""The `cadenza` command.

cadenza dev    [--port 7833] [--db ./cadenza.db] [--shards 4] [--domain default]
    every role in one process on the embedded backends (SQLite, in-process log, memory)
cadenza serve  --config FILE [--port P] [--roles frontend,history,...] [--domain NAME]
    the chosen roles against the services the config names (Cassandra, Kafka, Redis)
cadenza schema apply --config FILE
    create or upgrade the store's schema (idempotent)
cadenza --version

Exit codes: 0 after a clean stop; 1 when the server cannot start (the port, the database file
or the node id is taken, the shard count differs from the cluster's, a backend is out of
reach); 2 for bad flags or settings. Every refusal is one line on stderr per problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from importlib import metadata

from engine.config import ALL_ROLES, ConfigError, EngineConfig
from engine.errors import PersistenceError, StartupError
from engine.observability import configure_logging

# The flag that sets each setting, so a bad value is reported by the name the user typed.
FLAGS = {
    "port": "--port",
    "host": "--host",
    "num_shards": "--shards",
    "persistence_url": "--db",
    "roles": "--roles",
    "node_id": "--node-id",
}


def package_version() -> str:
    try:
        return metadata.version("cadenza")
    except metadata.PackageNotFoundError:
        return "unknown (not installed: run deploy/install.sh)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cadenza", description="Cadence-compatible workflow server")
    p.add_argument("--version", action="version", version=f"cadenza {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run every role in one process on embedded backends")
    dev.add_argument("--port", type=int, default=7833, help="gRPC port (default 7833)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dev.add_argument("--db", default="./cadenza.db", help="SQLite file (default ./cadenza.db)")
    dev.add_argument(
        "--shards",
        type=int,
        default=None,
        help="history shards of a new database (default 4); an existing one keeps its own",
    )
    dev.add_argument(
        "--domain", default="default", help="register this domain at start if missing ('' for none)"
    )
    serve = sub.add_parser("serve", help="run chosen roles against the configured services")
    serve.add_argument("--config", required=True, help="YAML config file (see deploy/config/)")
    serve.add_argument("--port", type=int, default=None, help="gRPC port (overrides the config)")
    serve.add_argument("--host", default=None, help="address to listen on (overrides the config)")
    serve.add_argument(
        "--roles",
        default=None,
        help=f"comma-separated subset of {','.join(sorted(ALL_ROLES))} (default: all)",
    )
    serve.add_argument("--node-id", default=None, help="this process's id (default host:pid)")
    serve.add_argument(
        "--domain", default="", help="register this domain at start if missing (default none)"
    )
    schema = sub.add_parser("schema", help="manage the store's schema")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    apply = schema_sub.add_parser("apply", help="create or upgrade the schema (idempotent)")
    apply.add_argument("--config", required=True, help="YAML config file (see deploy/config/)")
    return p


async def _serve_until_signalled(config: EngineConfig, domain: str, banner: str) -> int:
    from engine.server import Server

    server = Server(config, bootstrap_domain=domain)
    try:
        await server.start()
    except (StartupError, PersistenceError) as exc:
        # start() has stopped whatever it had started.
        print(f"cadenza: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    config = server.config
    where = server.address if "frontend" in config.roles else "no gRPC API (no frontend role)"
    print(
        banner.format(
            address=where,
            roles=",".join(sorted(config.roles)),
            shards=config.num_shards,
            node=server.node_id,
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    lost = server.node_lease.lost if server.node_lease is not None else asyncio.Event()
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    await server.stop()
    if lost.is_set():
        print(
            f"cadenza: stopped: node id {server.node_id!r} was taken over by another process "
            "while this one could not reach the store",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


async def _run_dev(config: EngineConfig, args: argparse.Namespace) -> int:
    banner = (
        f"cadenza dev: serving uber.cadence.api.v1 on {{address}} (db {args.db}, "
        f"{{shards}} shards, domain {args.domain!r})"
    )
    return await _serve_until_signalled(config, args.domain, banner)


async def _run_serve(config: EngineConfig, args: argparse.Namespace) -> int:
    banner = (
        f"cadenza serve: roles {{roles}} on {{address}} (node {{node}}, "
        f"{{shards}} shards, store {config.persistence_url}, "
        f"queues {config.queues_url}, matching {config.matching_url})"
    )
    return await _serve_until_signalled(config, args.domain, banner)


async def _schema_apply(config: EngineConfig) -> int:
    url = config.persistence_url
    if url.startswith("cassandra://"):
        # Imported here: the cassandra driver is loaded only for a cassandra:// store.
        from engine.persistence.cassandra.schema import apply_schema

        version = await apply_schema(url)
        print(f"cadenza schema apply: {url} is at schema version {version}", flush=True)
        return 0
    # The SQLite store creates its tables when it opens; opening it is applying it.
    from engine.persistence.factory import open_store

    store = open_store(url)
    await store.start()
    await store.stop()
    print(f"cadenza schema apply: {url} is ready", flush=True)
    return 0


def _load(args: argparse.Namespace) -> EngineConfig:
    if args.command == "dev":
        return EngineConfig.load(
            None,
            flags=FLAGS,
            persistence_url=f"sqlite:///{args.db}",
            port=args.port,
            host=args.host,
            num_shards=args.shards,
        )
    return EngineConfig.load(
        args.config,
        flags=FLAGS,
        port=getattr(args, "port", None),
        host=getattr(args, "host", None),
        roles=getattr(args, "roles", None),
        node_id=getattr(args, "node_id", None),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"cadenza: {problem}", file=sys.stderr)
        return 2
    configure_logging(json=args.command == "serve")
    try:
        if args.command == "dev":
            return asyncio.run(_run_dev(config, args))
        if args.command == "serve":
            return asyncio.run(_run_serve(config, args))
        return asyncio.run(_schema_apply(config))
    except (StartupError, PersistenceError, ValueError) as exc:
        # ValueError: a URL no backend takes (engine.backends.BackendUrlError).
        print(f"cadenza: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
