#!/usr/bin/env bash
# The main job end to end on embedded defaults (see scripts/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
