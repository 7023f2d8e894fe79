#!/usr/bin/env bash
# Install Cadenza into ./.venv (Python 3.11+). Extra pip arguments select extras, e.g. ".[dev]".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "${1:-.}"
