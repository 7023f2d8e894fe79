#!/usr/bin/env bash
# The measurements in docs/benchmarks.md: each one against a fresh `cadenza dev` on a fresh
# SQLite file, then the W1 comparison with a Temporal dev server (which the harness starts
# and stops itself). Results land in load/out/ (git-ignored); stdout is what the doc quotes.
#
#   bash load/bench.sh            # everything
#   bash load/bench.sh w2 w3      # only the named measurements (w1..w5, compare, ceiling)
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-7899}
WORK=$(mktemp -d)
SERVER_PID=""
trap 'if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT

# fresh <name>: start `cadenza dev` on a new db file; return once it serves.
fresh() {
  local db="$WORK/$1.db"
  .venv/bin/cadenza dev --port "$PORT" --db "$db" >"$WORK/$1.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 150); do
    grep -q "serving uber.cadence.api.v1" "$WORK/$1.log" && return 0
    sleep 0.1
  done
  echo "cadenza dev did not start; log:" >&2; cat "$WORK/$1.log" >&2; exit 1
}

stop() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true  # its exit status after SIGTERM is not a failure
  SERVER_PID=""
}

# measure <name> <python -m load arguments...>
measure() {
  local name=$1; shift
  fresh "$name"
  echo "\$ python -m load $* --target 127.0.0.1:$PORT"
  .venv/bin/python -m load "$@" --target "127.0.0.1:$PORT"
  stop
}

SELECTED=" $* "
selected() { [ "$SELECTED" = "  " ] || [[ "$SELECTED" == *" $1 "* ]]; }

for driver in client protocol; do
  if selected w1; then measure "w1-$driver" w1 --workflows 1000 --concurrency 50 --driver "$driver"; fi
  if selected w2; then measure "w2-$driver" w2 --workflows 200 --driver "$driver"; fi
  if selected w3; then measure "w3-$driver" w3 --workflows 50 --signals 1000 --driver "$driver"; fi
  if selected w4; then measure "w4-$driver" w4 --activities 100 --driver "$driver"; fi
  if selected w5; then measure "w5-$driver" w5 --children 50 --driver "$driver"; fi
done
if selected compare; then
  measure compare w1 --workflows 300 --concurrency 50 --warmup 30 --peer temporal
fi
if selected ceiling; then
  # No engine: what the gRPC transport alone allows on this machine (see load/ceiling.py).
  for procs in "1 1" "2 1" "1 2" "2 2"; do
    read -r servers clients <<<"$procs"
    echo "\$ python -m load.ceiling --seconds 10 --servers $servers --clients $clients --concurrency 100"
    .venv/bin/python -m load.ceiling --seconds 10 --servers "$servers" --clients "$clients" --concurrency 100
  done
fi
