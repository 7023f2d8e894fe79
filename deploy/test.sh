#!/usr/bin/env bash
# Install everything, start the real services (Kafka, Cassandra, Redis on loopback, via
# deploy/local-cluster), and run every check: formatting, lint, types, the whole test suite
# (embedded backends and the real ones, then the end-to-end suite once more in distributed
# mode). The services are stopped again at the end unless
# CADENZA_KEEP_CLUSTER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install.sh ".[dev,distributed,load]"
. .venv/bin/activate
echo "== ruff format --check"; ruff format --check engine workers load tests
echo "== ruff check"; ruff check engine workers load tests
echo "== mypy (strict)"; mypy
echo "== local cluster"
if [ "${CADENZA_KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'deploy/local-cluster down || true' EXIT
fi
deploy/local-cluster up
if [ $# -gt 0 ]; then
  # A selection of tests (CADENZA_E2E_BACKENDS=distributed picks the e2e backends).
  echo "== pytest $*"; python -m pytest -q -p no:cacheprovider "$@"; exit
fi
echo "== pytest: every test; the end-to-end suite on the embedded backends"
python -m pytest -q -p no:cacheprovider
echo "== pytest: the end-to-end suite again, in distributed mode (Cassandra, Kafka, Redis)"
CADENZA_E2E_BACKENDS=distributed python -m pytest -q -p no:cacheprovider tests/e2e
