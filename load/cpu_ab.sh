#!/usr/bin/env bash
# Compare the server CPU per W1 workflow of two commits, in interleaved runs.
#
#   bash load/cpu_ab.sh REV_A REV_B [PAIRS] [WORKFLOWS]      # defaults: 3 pairs, 1500 workflows
#
# On a shared or throttled machine, throughput swings from one run to the next; CPU time per
# workflow swings less, and interleaving A and B puts both under the same conditions. Each run
# starts `cadenza dev` from a git worktree of its commit on a fresh SQLite file, drives W1 with
# this checkout's protocol driver (100 in flight), and reads the server's CPU time from
# /proc/<pid>/stat around the run. The engine code comes from the worktree; the venv (and its
# installed dependencies) is this checkout's.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
  sed -n '2,4p' "$0" >&2
  exit 2
fi
REV_A=$1 REV_B=$2 PAIRS=${3:-3} WORKFLOWS=${4:-1500}
PY=$PWD/.venv/bin/python
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  git worktree remove --force "$WORK/a" 2>/dev/null || true
  git worktree remove --force "$WORK/b" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
git worktree add --quiet --detach "$WORK/a" "$REV_A"
git worktree add --quiet --detach "$WORK/b" "$REV_B"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# A port nobody listens on, fresh for every run: a run never waits for the previous server to
# let its port go (a taken port makes `cadenza dev` refuse to start).
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# run <tree>: one measured run, in this shell (the EXIT trap must see SERVER_PID); sets RESULT
# to "<ms per workflow> <workflows/s>".
run() {
  local tree=$1 log="$WORK/server-$RANDOM.log" port
  port=$(free_port)
  rm -f "$WORK/m.db" "$WORK/m.db-wal" "$WORK/m.db-shm" "$WORK/m.db.lock"
  (cd "$tree" && PYTHONPATH="$tree" exec "$PY" -m engine.cli dev --port "$port" --db "$WORK/m.db") \
    >"$log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 150); do grep -q "serving" "$log" && break; sleep 0.1; done
  grep -q "serving" "$log" || { echo "cadenza dev did not start:" >&2; cat "$log" >&2; exit 1; }
  local before after line hz
  hz=$(getconf CLK_TCK)
  before=$(cpu_ticks "$SERVER_PID")
  line=$("$PY" -m load w1 --target "127.0.0.1:$port" --workflows "$WORKFLOWS" --concurrency 100 \
    --driver protocol --no-progress --no-check --no-write) || true
  line=${line%%$'\n'*}  # the summary line; the Markdown table follows it
  after=$(cpu_ticks "$SERVER_PID")
  kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  case $line in
    *" $WORKFLOWS completed, 0 failed, 0 errors"*) ;;
    *) echo "run failed: $line" >&2; exit 1 ;;
  esac
  local rate=${line##*errors, }
  rate=${rate#* s, }
  RESULT=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$WORKFLOWS" -v r="${rate%% *}" \
    'BEGIN { printf "%.2f %s\n", 1000 * t / hz / n, r }')
}

echo "A = $(git rev-parse --short "$REV_A"), B = $(git rev-parse --short "$REV_B"); $PAIRS pairs of $WORKFLOWS W1 workflows"
echo "| pair | A ms/workflow | B ms/workflow | A workflows/s | B workflows/s |"
echo "|---|---|---|---|---|"
sum_a=0 sum_b=0
for pair in $(seq "$PAIRS"); do
  run "$WORK/a"
  read -r a ra <<<"$RESULT"
  run "$WORK/b"
  read -r b rb <<<"$RESULT"
  echo "| $pair | $a | $b | $ra | $rb |"
  sum_a=$(awk -v s="$sum_a" -v x="$a" 'BEGIN { print s + x }')
  sum_b=$(awk -v s="$sum_b" -v x="$b" 'BEGIN { print s + x }')
done
awk -v a="$sum_a" -v b="$sum_b" -v n="$PAIRS" \
  'BEGIN { printf "mean server CPU per workflow: A %.2f ms, B %.2f ms (B/A %.2f)\n", a / n, b / n, b / a }'
