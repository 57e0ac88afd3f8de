#!/usr/bin/env bash
# Installs what benchmarks/run.py needs, idempotently:
#   - load generators from Debian: wrk (HTTP/1.1) and h2load (nghttp2-client; gRPC over h2c);
#   - one virtualenv per peer under benchmarks/work/ (gitignored), so no peer touches the
#     project's .venv: "tools" (Flask for the naive baseline, matplotlib for the plot),
#     "pytriton" (nvidia-pytriton 0.7.0, whose wheel carries Triton's C++ server) and
#     "mlserver" (MLServer 1.6.1; uvloop<0.22 or its inference workers die at start).
# TensorFlow is not downloaded again for each peer: after a venv's own packages are installed,
# a .pth file appends the project venv's site-packages (tensorflow 2.16.2), so every server
# runs the very same TF build. Peers are pinned to numpy<2 and protobuf<5, which that TF needs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
WORK="$HERE/work"
PROJECT_PY="${PROJECT_PY:-$ROOT/.venv/bin/python}"
BASE_PY="$("$PROJECT_PY" -c 'import sys; print(sys._base_executable)')"
PROJECT_SITE="$("$PROJECT_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$WORK"

if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nghttp2-client
fi

make_venv() {  # name, packages...
  local name="$1"; shift
  local venv="$WORK/venv-$name"
  if [ -f "$venv/.installed" ]; then return; fi
  rm -rf "$venv"
  "$BASE_PY" -m venv "$venv"
  "$venv/bin/pip" install -q "numpy<2" "protobuf<5" "$@"
  local site
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$PROJECT_SITE" > "$site/zz_project_venv.pth"
  touch "$venv/.installed"
  echo "installed $name: $*"
}

make_venv tools "flask==3.1.*" "matplotlib==3.*"
make_venv pytriton "nvidia-pytriton==0.7.0" "tritonclient[all]==2.51.0"
make_venv mlserver "mlserver==1.6.1" "uvloop<0.22"
echo "benchmark tools ready in $WORK"
