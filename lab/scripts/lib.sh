# Shared helpers of the lab scripts (sourced, not executed).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}
K8S_VERSION=v1.34.4
KIND_VERSION=v0.30.0
DOCKER=${DOCKER:-/usr/bin/docker}
KIND=${KIND:-$CACHE/tools/kind-$KIND_VERSION}
KUBECTL=${KUBECTL:-$CACHE/bin/$K8S_VERSION/kubectl}
LAB_DIR=${LAB_DIR:-$CACHE/lab}
export PATH=/usr/bin:$PATH   # kind runs `docker`: the one from docker.io, which matches the daemon

log() { printf '%s lab: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The Debian mirror apt already uses on this machine.
debian_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb) +[^ ]+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        /etc/apt/sources.list.d/*.list 2>/dev/null | grep -v security | head -1 | awk '{print $NF}' || true)
  echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

have_image() { $DOCKER image inspect "$1" >/dev/null 2>&1; }

# cached_image IMAGE BUILD-FUNCTION: makes IMAGE available, from docker, else
# from its tar under $CACHE/images, else by running the build function and
# saving the result there.
cached_image() {
  local img=$1 build=$2 tar
  tar=$CACHE/images/$(echo "$img" | tr '/:' '__').tar
  if have_image "$img"; then return 0; fi
  if [[ -s $tar ]]; then
    log "loading $img from $tar"
    $DOCKER load -q -i "$tar" >/dev/null && have_image "$img" && return 0
  fi
  log "building $img"
  "$build" "$img"
  mkdir -p "$CACHE/images"
  $DOCKER save -o "$tar.tmp" "$img" && mv "$tar.tmp" "$tar"
}

# import_rootfs DIR IMAGE [--change ...]: a docker image from a directory tree.
import_rootfs() {
  local dir=$1 img=$2; shift 2
  tar --numeric-owner -C "$dir" -c . | $DOCKER import "$@" - "$img" >/dev/null
}

# A failing command names itself instead of ending the script silently.
set -E
trap 'log "FAILED (exit $?): ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
