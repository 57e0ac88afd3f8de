#!/usr/bin/env bash
# Installs Debian's chromium for the status page test, which drives /status in a real headless
# browser (tests/metadata/test_status_page_browser.py). Safe to call repeatedly; does nothing
# when chromium is already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure_chromium.sh: chromium is missing and installing it needs root:" >&2
  echo "  sudo apt-get install -y --no-install-recommends chromium" >&2
  exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "ensure_chromium.sh: installed $(chromium --version 2>/dev/null)"
