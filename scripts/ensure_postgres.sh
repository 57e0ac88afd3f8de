#!/usr/bin/env bash
# Installs PostgreSQL server binaries (Debian package) for the metadata integration tests, which
# create their own private cluster (initdb in a temp dir, own port and socket) and never touch a
# system one. Safe to call repeatedly; does nothing when initdb/pg_ctl are already installed.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure_postgres.sh: PostgreSQL is missing and installing it needs root:" >&2
  echo "  sudo apt-get install -y --no-install-recommends postgresql" >&2
  exit 1
fi
apt-get update -qq
# Debian's policy-rc.d may block the service start in containers; the tests start their own.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
echo "ensure_postgres.sh: installed $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
