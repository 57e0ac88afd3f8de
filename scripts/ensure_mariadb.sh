#!/usr/bin/env bash
# Installs MariaDB server binaries (Debian packages) for the metadata integration tests, which
# start their own private mariadbd (own datadir, socket and port) and never touch a system one.
# Safe to call repeatedly; does nothing when mariadbd is already installed.
set -euo pipefail

if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure_mariadb.sh: mariadbd is missing and installing it needs root:" >&2
  echo "  sudo apt-get install -y --no-install-recommends mariadb-server mariadb-client" >&2
  exit 1
fi
apt-get update -qq
# Debian's policy-rc.d may block the service start in containers; the tests start mariadbd.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  mariadb-server mariadb-client >/dev/null
echo "ensure_mariadb.sh: installed $(/usr/sbin/mariadbd --version)"
