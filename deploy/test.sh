#!/usr/bin/env bash
# Install everything and run every check: formatting, lint, types, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh ".[dev]"
. .venv/bin/activate
echo "== ruff format --check"; ruff format --check engine workers load tests
echo "== ruff check"; ruff check engine workers load tests
echo "== mypy (strict)"; mypy
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
