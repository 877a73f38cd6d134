#!/usr/bin/env bash
# Prepares this machine for the kind lab, idempotently:
#   - docker.io, debootstrap, jq and openssl from apt (lab/scripts/deps.sh lab);
#   - the runc-capfilter wrapper (lab/tools/runc-capfilter) as docker's default
#     runtime, so privileged kind nodes start on a VM without CAP_SYS_RESOURCE;
#   - dockerd started when it is not running (there is no systemd here);
#   - kind v0.30.0 built from its Go module into the cache.
# A dockerd that already runs with the wrapper is left alone (restarting it
# would kill running kind nodes).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}
WRAPPER=/usr/local/sbin/runc-capfilter
[[ $(id -u) == 0 ]] || { echo "host-prep: the lab needs root (docker, kind, network namespaces)" >&2; exit 1; }

"$ROOT/lab/scripts/deps.sh" lab

# The wrapper: rebuilt when its source changes.
stamp=$(cat "$ROOT"/lab/tools/runc-capfilter/{go.mod,main.go} | sha256sum | cut -c1-16)
if [[ ! -x $WRAPPER || $(cat "$CACHE/tools/runc-capfilter.stamp" 2>/dev/null) != "$stamp" ]]; then
  mkdir -p "$CACHE/tools"
  (cd "$ROOT/lab/tools/runc-capfilter" && GOWORK=off CGO_ENABLED=0 go build -trimpath -o "$WRAPPER.tmp" .)
  mv "$WRAPPER.tmp" "$WRAPPER"
  echo "$stamp" > "$CACHE/tools/runc-capfilter.stamp"
fi

# dockerd.
DOCKER=/usr/bin/docker
# (captured first: `docker info | grep -q` fails under pipefail when grep
# quits before docker has written everything)
runtime() { local info; info=$($DOCKER info 2>/dev/null) || return 0; grep -o 'Default Runtime: [a-z0-9-]*' <<<"$info" || true; }
if [[ $(runtime) == "Default Runtime: capfilter" ]]; then
  echo "host-prep: dockerd runs with the capfilter runtime"
elif $DOCKER info >/dev/null 2>&1; then
  if [[ -n $($DOCKER ps -q) ]]; then
    echo "host-prep: dockerd runs without the capfilter runtime and has containers; stop it and re-run" >&2
    exit 1
  fi
  echo "host-prep: restarting the idle dockerd with the capfilter runtime"
  pkill -x dockerd; for _ in $(seq 1 50); do pgrep -x dockerd >/dev/null || break; sleep 0.2; done
fi
if ! $DOCKER info >/dev/null 2>&1; then
  command -v containerd >/dev/null || { echo "host-prep: containerd missing (docker.io should bring it)" >&2; exit 1; }
  nohup /usr/sbin/dockerd --add-runtime "capfilter=$WRAPPER" --default-runtime capfilter \
    >"${DOCKERD_LOG:-/var/log/kubelink-dockerd.log}" 2>&1 &
  for _ in $(seq 1 120); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.5; done
  [[ $(runtime) == "Default Runtime: capfilter" ]] || {
    echo "host-prep: dockerd did not come up; see ${DOCKERD_LOG:-/var/log/kubelink-dockerd.log}" >&2; exit 1; }
  echo "host-prep: dockerd started"
fi

"$ROOT/lab/scripts/kind-bin.sh"
