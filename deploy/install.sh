#!/usr/bin/env bash
# Install Cadenza into ./.venv (Python 3.11+). The argument selects extras, e.g. ".[dev]"
# (default "."). Installs only when needed: a stamp in the venv records each installed
# selection together with a hash of pyproject.toml, so a start with nothing changed skips
# pip entirely, and any change to pyproject.toml (dependencies, extras, entry points)
# installs again. CADENZA_REINSTALL=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SPEC=${1:-.}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
key=$({ cat pyproject.toml; printf '\n%s\n' "$SPEC"; .venv/bin/python -V; } | sha256sum | cut -c1-16)
stamp=.venv/.cadenza-installed-$key
if [ "${CADENZA_REINSTALL:-0}" != 1 ] && [ -f "$stamp" ] && [ -x .venv/bin/cadenza ]; then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e "$SPEC"
touch "$stamp"
