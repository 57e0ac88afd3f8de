#!/usr/bin/env bash
# Creates ./.venv on Python 3.10 and installs the locked dependencies plus this package.
# Re-running is cheap: nothing is reinstalled while requirements/lock.txt is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

is_python310() {
  "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

# PYTHON if set, else the newest pyenv 3.10.x, else a python3.10/python3/python on PATH that
# really is 3.10 (a pyenv shim for a version that is not selected exists but does not run).
find_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return 0; fi
  if command -v pyenv >/dev/null 2>&1; then
    local version
    version="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | sort -V | tail -1 || true)"
    if [[ -n "$version" ]] && is_python310 "$(pyenv root)/versions/$version/bin/python"; then
      echo "$(pyenv root)/versions/$version/bin/python"; return 0
    fi
  fi
  for candidate in python3.10 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && is_python310 "$candidate"; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

if [[ ! -x .venv/bin/python ]]; then
  if ! PY="$(find_python)"; then
    echo "error: Python 3.10 is required (TFX 1.16 supports Python < 3.11) and none was found." >&2
    echo "       Install it (e.g. 'pyenv install 3.10') or point PYTHON=/path/to/python3.10." >&2
    exit 1
  fi
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi

stamp=".venv/.installed-$(sha256sum requirements/lock.txt pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  echo "bootstrap: installing locked dependencies (first run takes a few minutes)"
  # uv lives beside the environment, not in it: 'uv pip sync' removes what the lock lacks.
  uv=".venv/.uv/bin/uv"
  if [[ ! -x "$uv" ]]; then
    if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
      .venv/bin/python -m ensurepip --upgrade >/dev/null  # a venv made without pip
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
      --target .venv/.uv "uv==0.13.9"
  fi
  "$uv" pip sync --python .venv/bin/python requirements/lock.txt
  "$uv" pip install --python .venv/bin/python --no-deps -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi
