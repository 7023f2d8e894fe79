"""The `cadenza` command: `cadenza dev` (embedded, one process) and `cadenza serve`.

cadenza dev [--port 7833] [--db ./cadenza.db] [--shards 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from engine.config import EngineConfig
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
    serve.add_argument("--config", required=True, help="YAML config file")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--roles", default="frontend,history,matching,transfer,timer")
    return p


async def _run_dev(args: argparse.Namespace) -> int:
    from engine.server import Server

    config = EngineConfig.load(
        None,
        persistence_url=f"sqlite:///{args.db}",
        port=args.port,
        host=args.host,
        num_shards=args.shards,
    )
    server = Server(config, bootstrap_domain=args.domain)
    await server.start()
    print(
        f"cadenza dev: serving uber.cadence.api.v1 on {server.address} (db {args.db}, "
        f"{config.num_shards} shards, domain {args.domain!r})",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(json=args.command == "serve")
    if args.command == "dev":
        return asyncio.run(_run_dev(args))
    print(
        "cadenza serve: the distributed backends are not built yet (see issue 3)", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
