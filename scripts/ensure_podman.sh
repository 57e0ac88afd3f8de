#!/usr/bin/env bash
# Makes a working rootful podman for the container tests (tests/deploy/test_container_image.py)
# and the base image they build on. Safe to call repeatedly; a second run takes about a second.
#
#  1. Installs Debian's podman, runc and debootstrap when podman is missing (root only).
#  2. Writes /etc/containers/containers.conf when podman cannot start a container, typically
#     because the sandbox forbids raising rlimits (runc: "error setting rlimit type 7"):
#     default_ulimits = [] keeps the host's limits, plus cgroupfs and runc, which work without
#     systemd. An existing containers.conf is never overwritten.
#  3. Provides the base images, stand-ins for Docker Hub's python:3.10-slim-bookworm (the TFX
#     stack: the components image and the serving image's metadata worker) and
#     python:3.12-slim-bookworm (the current serving stack: the serving image), for machines that
#     reach Debian and PyPI but no image registry: localhost/tfx-serving-suite/python:3.10-slim-bookworm
#     and :3.12-slim-bookworm. Each is `debootstrap --variant=minbase bookworm` plus this host's
#     CPython of that version (pyenv builds on Debian bookworm link against the same libraries)
#     in /usr/local, as in the official images. The rootfs tarballs are cached in
#     ~/.cache/tfx-serving-suite/ keyed by a hash of this recipe, so a machine that lost its
#     podman storage re-imports them in seconds.
#
# Environment: PYTHON (a CPython 3.10 to copy; default: newest pyenv 3.10.x), SERVING_PYTHON
# (a CPython 3.12; default: newest pyenv 3.12.x), TFX_DEBIAN_MIRROR (default
# http://deb.debian.org/debian), TFX_DEBIAN_SECURITY_MIRROR, TFX_SERVING_CACHE_DIR.
set -euo pipefail

BASE_IMAGE_REPOSITORY="localhost/tfx-serving-suite/python"
# Python minor version -> the variable that may name the interpreter to copy.
declare -A PYTHON_VARIABLE=([3.10]=PYTHON [3.12]=SERVING_PYTHON)
MIRROR="${TFX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${TFX_DEBIAN_SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}"
CACHE_DIR="${TFX_SERVING_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tfx-serving-suite}"
# Runtime libraries CPython's extension modules link against (ldd lib-dynload/*.so), plus what
# python:3.x-slim-bookworm adds to debian:bookworm-slim (ca-certificates, netbase, tzdata).
PACKAGES="ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,\
libreadline8,libncursesw6,libtinfo6,zlib1g,libexpat1,libuuid1,libtirpc3,libcrypt1"

log() { echo "ensure_podman.sh: $*" >&2; }

install_hint() {
  cat >&2 <<'EOF'
  sudo apt-get update && sudo apt-get install -y --no-install-recommends podman runc debootstrap
  sudo scripts/ensure_podman.sh     # containers.conf for sandboxes + the local base image
EOF
}

# --- 1. podman ---------------------------------------------------------------------------------
if [[ "$(id -u)" != 0 ]]; then
  # Only rootful podman is set up here (rootless needs subuid ranges and more); a user whose
  # podman works and has the base images has nothing to do.
  if command -v podman >/dev/null 2>&1 \
    && podman image exists "$BASE_IMAGE_REPOSITORY:3.10-slim-bookworm" 2>/dev/null \
    && podman image exists "$BASE_IMAGE_REPOSITORY:3.12-slim-bookworm" 2>/dev/null; then
    exit 0
  fi
  log "podman or the base images $BASE_IMAGE_REPOSITORY:3.1x-slim-bookworm are missing, and"
  log "setting them up needs root:"
  install_hint
  exit 1
fi
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
  || ! command -v debootstrap >/dev/null 2>&1; then
  log "installing podman, runc and debootstrap (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc debootstrap >/dev/null
fi

# --- 2. containers.conf ------------------------------------------------------------------------
CONF=/etc/containers/containers.conf
write_conf() {
  if [[ -e "$CONF" && -z "${CONTAINERS_CONF:-}" ]]; then
    if grep -q "tfx-serving-suite" "$CONF"; then return 0; fi
    log "podman cannot start containers here and $CONF exists; add to its [containers] table:"
    log '  default_ulimits = []'
    exit 1
  fi
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<'EOF'
# Written by tfx-serving-suite scripts/ensure_podman.sh for sandboxes where runc may not raise
# rlimits ("error setting rlimit type 7: operation not permitted") and systemd is not running.
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
EOF
  log "wrote $CONF (default_ulimits = [], cgroupfs, runc)"
}

# --- 3. base images ----------------------------------------------------------------------------
is_python() {  # is_python INTERPRETER MAJOR.MINOR
  "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" \
    >/dev/null 2>&1
}
find_python() {  # find_python MAJOR.MINOR: $PYTHON / $SERVING_PYTHON, else the newest pyenv X.Y.z
  local minor="$1" explicit="${!PYTHON_VARIABLE[$1]:-}" root="${PYENV_ROOT:-$HOME/.pyenv}" version
  if [[ -n "$explicit" ]]; then echo "$explicit"; return 0; fi
  if [[ -d "$root/versions" ]]; then
    version="$(find "$root/versions" -mindepth 1 -maxdepth 1 -name "$minor.*" -printf '%f\n' \
      | grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -1 || true)"
    if [[ -n "$version" ]] && is_python "$root/versions/$version/bin/python$minor" "$minor"; then
      echo "$root/versions/$version/bin/python$minor"; return 0
    fi
  fi
  return 1
}

image_recipe() {
  podman image inspect --format '{{index .Config.Labels "io.tfx-serving-suite.base-recipe"}}' \
    "$BASE_IMAGE" 2>/dev/null || true
}

smoke_test() {
  podman run --rm --network none "$BASE_IMAGE" python3 -c \
    'import ssl, ctypes, sqlite3, uuid, lzma, bz2, zlib, hashlib, decimal, readline, venv' 2>&1
}

build_rootfs() {
  local work rootfs started
  started=$SECONDS
  work="$(mktemp -d "${TMPDIR:-/var/tmp}/tfx-base-rootfs.XXXXXX")"
  rootfs="$work/rootfs"
  # shellcheck disable=SC2064
  trap "umount -R '$rootfs/proc' '$rootfs/sys' 2>/dev/null || true; rm -rf '$work'" EXIT
  log "debootstrap --variant=minbase bookworm from $MIRROR (about a minute)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$rootfs" "$MIRROR" \
    >"$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    exit 1
  fi
  log "copying CPython $PYVERSION from $PREFIX to /usr/local"
  local lib="lib/python$MINOR" site="lib/python$MINOR/site-packages"
  mkdir -p "$rootfs/usr/local/$site"
  # The standard library and headers; no test suites, static library, tkinter/test modules
  # (python:3.x-slim drops the tests too) and no site-packages (copied selectively below).
  tar -C "$PREFIX" -cf - \
    --exclude="$site" \
    --exclude="$lib/test" --exclude="$lib/*/test" \
    --exclude="$lib/*/tests" --exclude="$lib/idlelib/idle_test" \
    --exclude="$lib/config-$MINOR-*/*.a" \
    --exclude="$lib/lib-dynload/_test*" \
    --exclude="$lib/lib-dynload/_tkinter*" \
    --exclude="$lib/lib-dynload/xxlimited*" \
    --exclude="bin/python$MINOR-gdb.py" \
    bin include lib share | tar -C "$rootfs/usr/local" -xf -
  # Only pip (and setuptools where this Python has it; 3.12 does not bundle it) from
  # site-packages, as in the official image: nothing installed on this host, and no .pth files.
  local keep=() pattern entry
  for pattern in pip 'pip-*.dist-info' setuptools 'setuptools-*.dist-info' pkg_resources \
    _distutils_hack distutils-precedence.pth; do
    for entry in "$PREFIX/$site"/$pattern; do
      if [[ -e "$entry" ]]; then keep+=("${entry##*/}"); fi
    done
  done
  tar -C "$PREFIX/$site" -cf - "${keep[@]}" | tar -C "$rootfs/usr/local/$site" -xf -
  # Scripts point at the pyenv prefix; the interpreter itself finds its prefix at run time.
  grep -rlI "^#!$PREFIX/bin/" "$rootfs/usr/local/bin" | while read -r script; do
    sed -i "1s|^#!$PREFIX/bin/|#!/usr/local/bin/|" "$script"
  done
  # No bytecode, as in the official images (they delete *.pyc after building).
  find "$rootfs/usr/local" -depth -name __pycache__ -type d -exec rm -rf {} +
  chroot "$rootfs" /sbin/ldconfig
  # Slim it like debian:bookworm-slim: no apt lists or cached .debs, docs, man pages, locales.
  rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/* \
    "${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/usr/share/info/* \
    "${rootfs:?}"/var/log/* "${rootfs:?}"/tmp/* "${rootfs:?}"/dev/* "${rootfs:?}"/etc/hostname
  find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # apt keeps no package caches, as in debian:bookworm-slim (its docker-clean).
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  # The engine provides /etc/resolv.conf; apt sources as in debian:bookworm-slim.
  rm -f "$rootfs/etc/resolv.conf" "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  mkdir -p "$CACHE_DIR"
  rm -f "$CACHE_DIR"/python-"$MINOR".*-bookworm-rootfs-*.tar  # older recipes of this version
  tar -C "$rootfs" --numeric-owner -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
  rm -rf "$work"
  trap - EXIT
  log "rootfs built in $((SECONDS - started)) s: $TARBALL ($(du -h "$TARBALL" | cut -f1))"
}

import_tarball() {
  podman import --quiet \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "ENV PYTHON_VERSION=$PYVERSION" \
    --change 'CMD ["python3"]' \
    --change "LABEL io.tfx-serving-suite.base-recipe=$RECIPE" \
    --change "LABEL org.opencontainers.image.description=Stand-in for python:$MINOR-slim-bookworm" \
    --message "debootstrap bookworm minbase + CPython $PYVERSION" \
    "$TARBALL" "$BASE_IMAGE" >/dev/null
}

for MINOR in 3.10 3.12; do
  BASE_IMAGE="$BASE_IMAGE_REPOSITORY:$MINOR-slim-bookworm"
  if ! PY="$(find_python "$MINOR")"; then
    if podman image exists "$BASE_IMAGE"; then continue; fi
    log "no CPython $MINOR to put in $BASE_IMAGE (set ${PYTHON_VARIABLE[$MINOR]}=/path/to/"
    log "python$MINOR, built on Debian bookworm), or build the images on Docker Hub's"
    log "python:$MINOR-slim-bookworm."
    exit 1
  fi
  PREFIX="$(cd "$(dirname "$PY")/.." && pwd)"
  PYVERSION="$("$PY" -c 'import platform; print(platform.python_version())')"
  # The recipe: build_rootfs and import_tarball as bash sees them (comments do not count), their
  # inputs and the interpreter copied.
  RECIPE="$( (declare -f build_rootfs import_tarball
    echo "$PACKAGES $MIRROR $SECURITY_MIRROR $PREFIX $PYVERSION") | sha256sum | cut -c1-16)"
  TARBALL="$CACHE_DIR/python-$PYVERSION-bookworm-rootfs-$RECIPE.tar"
  if [[ "$(image_recipe)" != "$RECIPE" ]]; then
    if [[ ! -f "$TARBALL" ]]; then
      build_rootfs
    fi
    log "importing $TARBALL as $BASE_IMAGE"
    old_id="$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE" 2>/dev/null || true)"
    import_tarball
    if [[ -n "$old_id" ]]; then
      podman image rm "$old_id" >/dev/null 2>&1 || true  # an older recipe's image, now untagged
    fi
  fi
done

for MINOR in 3.10 3.12; do
  BASE_IMAGE="$BASE_IMAGE_REPOSITORY:$MINOR-slim-bookworm"
  if ! out="$(smoke_test)"; then
    # Typically "error setting rlimit type 7: operation not permitted" in a sandbox.
    log "podman cannot start a container of $BASE_IMAGE:"
    echo "$out" >&2
    write_conf
    out="$(smoke_test)" || { log "podman still cannot run containers:"; echo "$out" >&2; exit 1; }
  fi
done
