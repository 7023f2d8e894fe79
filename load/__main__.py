"""`python -m load w1 --target 127.0.0.1:7833 --workflows 1000 --concurrency 50`."""

from __future__ import annotations

import argparse
import asyncio

from load.w1 import run_w1


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m load")
    sub = p.add_subparsers(dest="scenario", required=True)
    w1 = sub.add_parser("w1", help="echo: start, one activity, complete")
    w1.add_argument("--target", default="127.0.0.1:7833")
    w1.add_argument("--workflows", type=int, default=1000)
    w1.add_argument("--concurrency", type=int, default=50)
    w1.add_argument("--domain", default="default")
    args = p.parse_args()
    result = asyncio.run(run_w1(args.target, args.workflows, args.concurrency, args.domain))
    print(result.summary())


if __name__ == "__main__":
    main()
