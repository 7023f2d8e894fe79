"""Benchmark harness for Cadenza: load scenarios W1..W5, two drivers, a Temporal peer.

`python -m load <scenario>` (load.cli) builds a RunConfig (load.config) and hands it to the
runner (load.runner), which runs one scenario (load.scenarios: echo, timers, signals,
fan-out, children) through one driver (load.drivers: the official client, or raw gRPC
pollers) against a server, then checks and analyzes the histories. Results are reduced by
load.stats and written by load.report (JSON, Markdown, PNG). load.peer runs W1 on a
Temporal dev server for comparison. docs/benchmarks.md has the figures and commands.
"""
