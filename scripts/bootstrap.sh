#!/usr/bin/env bash
# Creates the project's Python environments and installs their locked dependencies plus this
# package (editable). Re-running is cheap: nothing is reinstalled while the lock is unchanged.
#
#   scripts/bootstrap.sh [tfx|serving]...      (default: tfx)
#
#   tfx      .venv          Python 3.10, requirements/lock.txt: the TFX 1.16 stack (pipelines,
#                           components, the server, every dev tool). TFX 1.16 needs Python < 3.11.
#   serving  .venv-serving  Python 3.12, requirements/serving-current-dev.txt: the current
#                           serving-only stack (TensorFlow 2.21 CPU, protobuf 5+, numpy 2) plus
#                           the test tools; what the serving image ships. docs/stacks.md says why.
#
# Interpreters: PYTHON (3.10) and SERVING_PYTHON (3.12) if set, else the newest pyenv 3.10.x /
# 3.12.x, else a python3.10 / python3.12 on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="0.13.9"

is_python() {  # is_python INTERPRETER MAJOR.MINOR
  "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" \
    >/dev/null 2>&1
}

# $1 (an explicit interpreter) if set, else the newest pyenv X.Y.z, else pythonX.Y on PATH (a
# pyenv shim for a version that is not selected exists but does not run, hence the checks).
find_python() {  # find_python MAJOR.MINOR EXPLICIT
  local want="$1" explicit="$2" version
  if [[ -n "$explicit" ]]; then echo "$explicit"; return 0; fi
  if command -v pyenv >/dev/null 2>&1; then
    version="$(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}(\.[0-9]+)?$" \
      | sort -V | tail -1 || true)"
    if [[ -n "$version" ]] && is_python "$(pyenv root)/versions/$version/bin/python" "$want"; then
      echo "$(pyenv root)/versions/$version/bin/python"; return 0
    fi
  fi
  for candidate in "python$want" python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && is_python "$candidate" "$want"; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

bootstrap() {  # bootstrap VENV MAJOR.MINOR EXPLICIT-PYTHON LOCK WHY
  local venv="$1" want="$2" explicit="$3" lock="$4" why="$5" py stamp uv
  if [[ ! -x "$venv/bin/python" ]]; then
    if ! py="$(find_python "$want" "$explicit")"; then
      echo "error: Python $want is required for $venv ($why) and none was found." >&2
      echo "       Install it (e.g. 'pyenv install $want') or point the variable at it" \
        "(PYTHON for 3.10, SERVING_PYTHON for 3.12)." >&2
      exit 1
    fi
    echo "bootstrap: creating $venv with $py"
    "$py" -m venv "$venv"
  fi
  stamp="$venv/.installed-$(sha256sum "$lock" pyproject.toml | sha256sum | cut -c1-16)"
  if [[ -f "$stamp" ]]; then return 0; fi
  echo "bootstrap: installing $lock into $venv (first run takes a few minutes)"
  # uv lives beside the environment, not in it: 'uv pip sync' removes what the lock lacks.
  uv="$venv/.uv/bin/uv"
  if [[ ! -x "$uv" ]]; then
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
      "$venv/bin/python" -m ensurepip --upgrade >/dev/null  # a venv made without pip
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      --target "$venv/.uv" "uv==$UV_VERSION"
  fi
  "$uv" pip sync --python "$venv/bin/python" "$lock"
  "$uv" pip install --python "$venv/bin/python" --no-deps -e .
  rm -f "$venv"/.installed-*
  touch "$stamp"
}

stacks=("$@")
((${#stacks[@]})) || stacks=(tfx)
for stack in "${stacks[@]}"; do
  case "$stack" in
    tfx) bootstrap .venv 3.10 "${PYTHON:-}" requirements/lock.txt "TFX 1.16 supports Python < 3.11" ;;
    serving)
      bootstrap .venv-serving 3.12 "${SERVING_PYTHON:-}" requirements/serving-current-dev.txt \
        "the current serving stack: TensorFlow 2.21 on Python 3.12" ;;
    *) echo "bootstrap.sh: unknown stack $stack (tfx, serving)" >&2; exit 2 ;;
  esac
done
