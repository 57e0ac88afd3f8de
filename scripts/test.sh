#!/usr/bin/env bash
# The project's test command: lint, then every test (unit and integration).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not integration" -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
