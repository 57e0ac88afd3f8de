#!/usr/bin/env bash
# Builds the container images with docker or podman:
#
#   scripts/build_images.sh [serving|serving-gpu|components|all]...   (default: serving)
#
#   serving       $IMAGE_PREFIX/serving:$TAG and :latest — tfx-model-server with TF Serving's
#                 ports/env/args, non-root, no tfx/beam, on the current stack (Python 3.12,
#                 tensorflow-cpu 2.21), with gs:// and s3:// stores; under 1 GB
#   serving-full  $IMAGE_PREFIX/serving:$TAG-full and :latest-full — the same plus TF Text's ops,
#                 the Python 3.10 metadata worker for --metadata_connection (docs/stacks.md) and
#                 precompiled bytecode (starts about 4 s sooner)
#   serving-gpu   $IMAGE_PREFIX/serving:$TAG-gpu and :latest-gpu — the full image on a CUDA base
#                 with tensorflow[and-cuda] (runs on an NVIDIA host; see docs/containers.md)
#   components    $IMAGE_PREFIX/components:$TAG and :latest — tfx 1.16 + this package (Python
#                 3.10), for KubeflowV2DagRunner's default_image
#
# Environment:
#   CONTAINER_ENGINE   docker or podman (default: whichever answers, podman first)
#   IMAGE_PREFIX       default tfx-serving-suite (e.g. registry.example.com/ml to push later)
#   TAG                default: the package version (serving/version.py)
#   BASE_IMAGE         the serving image's base, default: docker.io/library/python:3.12-slim-bookworm,
#                      or the local stand-in scripts/ensure_podman.sh builds where no registry is
#                      reachable
#   TFX_BASE_IMAGE     the components image's base and the serving image's metadata-worker
#                      Python, default: docker.io/library/python:3.10-slim-bookworm or the stand-in
#   GPU_BASE_IMAGE     default: docker.io/nvidia/cuda:12.9.1-base-ubuntu24.04
#   BUILD_CA_BUNDLE    podman only: CA bundle mounted into the build for pip/uv (default: $PIP_CERT,
#                      $SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt); "none" to skip
#   BUILD_UV_CACHE     podman only: host uv cache mounted into the build so wheels are not
#                      downloaded again (default: $UV_CACHE_DIR or ~/.cache/uv when it exists);
#                      "none" to skip
#   PRUNE=1            remove dangling images afterwards (old layers of earlier builds)
# Extra build flags can follow "--", e.g. scripts/build_images.sh serving -- --no-cache
set -euo pipefail
cd "$(dirname "$0")/.."

STAND_IN_REPOSITORY="localhost/tfx-serving-suite/python"
IMAGE_PREFIX="${IMAGE_PREFIX:-tfx-serving-suite}"
TAG="${TAG:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' serving/version.py)}"
GPU_BASE_IMAGE="${GPU_BASE_IMAGE:-docker.io/nvidia/cuda:12.9.1-base-ubuntu24.04}"

targets=()
extra=()
while (($#)); do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    serving | serving-full | serving-gpu | components) targets+=("$1") ;;
    all) targets+=(serving serving-full components) ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "build_images.sh: unknown target $1 (serving, serving-full, serving-gpu, components, all)" >&2; exit 2 ;;
  esac
  shift
done
((${#targets[@]})) || targets=(serving)

engine_works() { command -v "$1" >/dev/null 2>&1 && "$1" info >/dev/null 2>&1; }
ENGINE="${CONTAINER_ENGINE:-}"
if [[ -z "$ENGINE" ]]; then
  for candidate in podman docker; do
    if engine_works "$candidate"; then ENGINE="$candidate"; break; fi
  done
fi
if [[ -z "$ENGINE" ]]; then
  echo "build_images.sh: no working container engine (docker or podman). On Debian, as root:" >&2
  echo "  scripts/ensure_podman.sh" >&2
  exit 1
fi

python_base() {  # python_base MAJOR.MINOR: the local stand-in when it exists, else Docker Hub's
  local stand_in="$STAND_IN_REPOSITORY:$1-slim-bookworm"
  if "$ENGINE" image inspect "$stand_in" >/dev/null 2>&1; then
    echo "$stand_in"
  else
    echo "docker.io/library/python:$1-slim-bookworm"
  fi
}
BASE_IMAGE="${BASE_IMAGE:-$(python_base 3.12)}"
TFX_BASE_IMAGE="${TFX_BASE_IMAGE:-$(python_base 3.10)}"

# Labels at build time rather than ARG-based LABELs: podman reuses a cached LABEL step even when
# the ARG it expands changed.
common=(--label "org.opencontainers.image.version=$TAG")
if revision="$(git rev-parse --verify -q HEAD 2>/dev/null)"; then
  common+=(--label "org.opencontainers.image.revision=$revision")
fi
if [[ "$ENGINE" == podman ]]; then
  # Docker's image format: OCI images cannot carry HEALTHCHECK.
  common+=(--format docker)
  ca="${BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}"
  if [[ "$ca" != none && -f "$ca" ]]; then
    common+=(--volume "$(readlink -f "$ca"):/host-ca.crt:ro" --build-arg PIP_CERT=/host-ca.crt)
  fi
  uv_cache="${BUILD_UV_CACHE:-${UV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/uv}}"
  if [[ "$uv_cache" != none && -d "$uv_cache" ]]; then
    common+=(--volume "$(readlink -f "$uv_cache"):/host-uv-cache" \
      --build-arg UV_CACHE_DIR=/host-uv-cache)
  fi
fi

build() {  # build REPOSITORY TAG-SUFFIX CONTAINERFILE BASE-IMAGE BUILD-ARGS...
  local ref="$IMAGE_PREFIX/$1:$TAG$2" latest="$IMAGE_PREFIX/$1:latest$2" file="$3" base="$4"
  local old new started size
  shift 4
  old="$("$ENGINE" image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
  started=$SECONDS
  echo "build_images.sh: $ENGINE build $ref (base $base)" >&2
  "$ENGINE" build -f "$file" -t "$ref" -t "$latest" --build-arg "BASE_IMAGE=$base" \
    "${common[@]}" "$@" "${extra[@]}" .
  new="$("$ENGINE" image inspect --format '{{.Id}}' "$ref")"
  if [[ -n "$old" && "$old" != "$new" ]]; then
    "$ENGINE" image rm "$old" >/dev/null 2>&1 || true  # the previous build of this tag
  fi
  size="$("$ENGINE" image inspect --format '{{.Size}}' "$ref")"
  echo "build_images.sh: built $ref (also $latest) in $((SECONDS - started)) s;" \
    "$((size / 1000000)) MB uncompressed" >&2
}

full=(--build-arg WITH_TF_TEXT=1 --build-arg WITH_METADATA_WORKER=1 --build-arg WITH_BYTECODE=1)
for target in "${targets[@]}"; do
  case "$target" in
    serving)
      build serving "" deploy/container/Containerfile.serving "$BASE_IMAGE" \
        --build-arg "TFX_BASE_IMAGE=$TFX_BASE_IMAGE" ;;
    serving-full)
      build serving -full deploy/container/Containerfile.serving "$BASE_IMAGE" \
        --build-arg "TFX_BASE_IMAGE=$TFX_BASE_IMAGE" "${full[@]}" ;;
    serving-gpu)
      build serving -gpu deploy/container/Containerfile.serving "$GPU_BASE_IMAGE" \
        --build-arg "TFX_BASE_IMAGE=$TFX_BASE_IMAGE" --build-arg TF_EXTRAS=and-cuda "${full[@]}" ;;
    components) build components "" deploy/container/Containerfile.components "$TFX_BASE_IMAGE" ;;
  esac
done
if [[ "${PRUNE:-0}" == 1 ]]; then
  "$ENGINE" image prune -f >/dev/null
fi
