#!/usr/bin/env bash
# Install Cadenza (only when needed: see install.sh) and start the embedded server: every role
# in one process on SQLite.
# Extra arguments go to `cadenza dev` (e.g. --port 7833 --db ./cadenza.db).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh .
exec .venv/bin/cadenza dev "$@"
