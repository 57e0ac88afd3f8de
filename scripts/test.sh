#!/usr/bin/env bash
# The project's test command: lint, then every test (unit and integration).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not integration" -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The metadata tests start a private MariaDB server and a private PostgreSQL cluster; install
# their Debian packages when we can (root). Without them those tests skip with instructions
# (and fail under CI).
# Likewise podman (and its base image) for the container image tests; without a working
# container engine they skip with instructions (and fail under CI).
if [[ "$(id -u)" == 0 ]]; then
  scripts/ensure_mariadb.sh
  scripts/ensure_postgres.sh
  # A failure here (e.g. no Debian mirror) must not stop the other tests; the container tests
  # report it themselves.
  scripts/ensure_podman.sh || echo "test.sh: scripts/ensure_podman.sh failed" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
