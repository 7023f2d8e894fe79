"""The `cadenza` command.

cadenza dev    [--port 7833] [--db ./cadenza.db] [--shards 4] [--domain default]
    every role in one process on the embedded backends (SQLite, in-process log, memory)
cadenza serve  --config FILE [--port P] [--roles frontend,history,...] [--domain NAME]
    the chosen roles against the services the config names (Cassandra, Kafka, Redis)
cadenza schema apply --config FILE
    create or upgrade the store's schema (idempotent)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from typing import Any

from pydantic import ValidationError

from engine.config import ALL_ROLES, EngineConfig
from engine.errors import PersistenceError
from engine.observability import configure_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cadenza", description="Cadence-compatible workflow server")
    sub = p.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="run every role in one process on embedded backends")
    dev.add_argument("--port", type=int, default=7833, help="gRPC port (default 7833)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dev.add_argument("--db", default="./cadenza.db", help="SQLite file (default ./cadenza.db)")
    dev.add_argument("--shards", type=int, default=None, help="history shards (default 4)")
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
    except PersistenceError as exc:
        print(f"cadenza: cannot start: {exc}", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            await server.stop()
        return 1
    where = server.address if "frontend" in config.roles else "no gRPC API (no frontend role)"
    print(banner.format(address=where, roles=",".join(sorted(config.roles))), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


async def _run_dev(args: argparse.Namespace) -> int:
    config = EngineConfig.load(
        None,
        persistence_url=f"sqlite:///{args.db}",
        port=args.port,
        host=args.host,
        num_shards=args.shards,
    )
    banner = (
        f"cadenza dev: serving uber.cadence.api.v1 on {{address}} (db {args.db}, "
        f"{config.num_shards} shards, domain {args.domain!r})"
    )
    return await _serve_until_signalled(config, args.domain, banner)


async def _run_serve(config: EngineConfig, args: argparse.Namespace) -> int:
    banner = (
        f"cadenza serve: roles {{roles}} on {{address}} (node {config.node_id or 'host:pid'}, "
        f"{config.num_shards} shards, store {config.persistence_url}, "
        f"queues {config.queues_url}, matching {config.matching_url})"
    )
    return await _serve_until_signalled(config, args.domain, banner)


async def _schema_apply(config: EngineConfig) -> int:
    url = config.persistence_url
    if url.startswith("cassandra://"):
        module: Any = importlib.import_module("engine.persistence.cassandra.schema")
        version = await module.apply_schema(url)
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
    return EngineConfig.load(
        args.config,
        port=getattr(args, "port", None),
        host=getattr(args, "host", None),
        roles=getattr(args, "roles", None),
        node_id=getattr(args, "node_id", None),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(json=args.command == "serve")
    if args.command == "dev":
        return asyncio.run(_run_dev(args))
    try:
        config = _load(args)
    except (OSError, ValidationError, ValueError) as exc:
        print(f"cadenza: bad config {args.config!r}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return asyncio.run(_run_serve(config, args))
        return asyncio.run(_schema_apply(config))
    except (PersistenceError, ValueError) as exc:
        print(f"cadenza: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
