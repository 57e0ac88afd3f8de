#!/usr/bin/env bash
# The main job end to end on embedded defaults (see scripts/demo.py): the pipeline on the TFX
# 1.16 stack (.venv), the server on the current serving stack (.venv-serving; docs/stacks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh tfx serving
TFX_SERVING_SERVER_PYTHON="$PWD/.venv-serving/bin/python" exec .venv/bin/python scripts/demo.py "$@"
