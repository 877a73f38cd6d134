#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries used by tests and the lab from Go
# modules (no downloads of prebuilt binaries) and caches them outside the
# checkout. Re-running with a warm cache does nothing.
#
#   lab/scripts/k8s-bins.sh [component...]     (default: kube-apiserver etcd kubectl)
#
# Output: ${KUBELINK_CACHE:-~/.cache/kubelink}/bin/v1.34.4/<component>
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.5
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}
OUT=$CACHE/bin/$K8S_VERSION
COMPONENTS=${*:-kube-apiserver etcd kubectl}
mkdir -p "$OUT"

# The binaries are cached by Kubernetes version, and rebuilt when what they
# are built from changes: each <component>.stamp holds a hash of the two
# build modules (go.mod, go.sum, etcd's main.go), the Go version and RECIPE
# (bump it when the build flags below change). Checked and written under
# the component's lock, and a binary is only ever replaced (mv), never
# removed, so a test that starts it meanwhile gets one or the other.
# node-image.sh names the stamps in the node image's tag.
RECIPE=1
STAMP=$({ cat "$ROOT"/lab/tools/k8s/go.{mod,sum} "$ROOT"/lab/tools/etcd/go.{mod,sum} "$ROOT"/lab/tools/etcd/*.go
  go env GOVERSION; echo "recipe $RECIPE"; } | sha256sum | cut -c1-12)
current() { [[ -x $OUT/$1 && $(cat "$OUT/$1.stamp" 2>/dev/null) == "$STAMP" ]]; }

ldflags() {
  local ld="-s -w" date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=34"
    ld+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
    ld+=" -X $pkg.buildDate=$date"
  done
  echo "$ld"
}

for c in $COMPONENTS; do
  if current "$c"; then
    echo "cached $OUT/$c"
    continue
  fi
  # One build per component at a time: `make test` and `make lab-up` run
  # side by side would otherwise build the same binary twice into one
  # temporary file (and the second mv fails).
  exec {lock}>"$OUT/.$c.lock"
  flock "$lock"
  if current "$c"; then
    echo "cached $OUT/$c (built meanwhile)"
    exec {lock}>&-
    continue
  fi
  [[ ! -e $OUT/$c ]] || echo "$c: the build modules changed (stamp $STAMP): rebuilding"
  start=$(date +%s)
  case $c in
    etcd)
      (cd "$ROOT/lab/tools/etcd" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
        -ldflags "-s -w" -o "$OUT/$c.tmp" .) ;;
    kube-*|kubectl|kubelet|kubeadm)
      (cd "$ROOT/lab/tools/k8s" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
        -tags selinux,notest,grpcnotrace -ldflags "$(ldflags)" \
        -o "$OUT/$c.tmp" "k8s.io/kubernetes/cmd/$c") ;;
    *) echo "unknown component $c" >&2; exit 2 ;;
  esac
  mv "$OUT/$c.tmp" "$OUT/$c"   # atomic: a killed build never leaves a half binary
  echo "$STAMP" >"$OUT/$c.stamp"
  echo "built $OUT/$c in $(( $(date +%s) - start ))s"
  exec {lock}>&-
done
