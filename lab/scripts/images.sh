#!/usr/bin/env bash
# Builds one container image per kubelink binary, plus the kubelink CoreDNS
# and the lab's toolbox, with the running docker and no registry (legacy
# builder); the daemon's configuration is left alone.
#   kubelink/{broker,router,bridge}:TAG  static binary on kubelink-lab/debian-net (iptables, nft, ip)
#   kubelink/{meshdns,certwatch,mcs,verifier}:TAG  static binary alone, user 65532 (verifier: the agent of kubelinkctl verify)
#   kubelink/coredns:TAG                 CoreDNS v1.14.0 + plugin kubelinkglobal, user 65532
#   kubelink-lab/toolbox:TAG             busybox (wget, nslookup, httpd) for the lab's echo and client pods
#   kubelink-lab/cni:TAG                 the lab's CNI agent (lab/cni)
# TAG is the version (git describe); never "latest".
# Usage: images.sh TAG
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TAG=${1:?usage: images.sh TAG}
[[ $TAG != latest ]] || die "images are never tagged latest"
$DOCKER info >/dev/null 2>&1 || die "docker is not running: start it (make lab-up starts one itself), then run make images again"
BASE=$("$ROOT/lab/scripts/node-image.sh" --print-debian-net)
"$ROOT/lab/scripts/node-image.sh" --debian-net-only
have_image "$BASE" || die "$BASE missing"

W=$(mktemp -d /var/tmp/kubelink-images.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/:/sbin/nologin\n' >"$W/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$W/etc/group"
echo 'hosts: files dns' >"$W/etc/nsswitch.conf"
install -m 0644 /etc/ssl/certs/ca-certificates.crt -D "$W/etc/ssl/certs/ca-certificates.crt"

build() { # image dockerfile binary-path [build-args...]
  local img=$1 df=$2 bin=$3; shift 3
  install -m 0755 "$bin" "$W/$(basename "$bin")"
  DOCKER_BUILDKIT=0 $DOCKER build -q -f "$ROOT/deploy/images/$df" --build-arg "BINARY=$(basename "$bin")" "$@" \
    -t "$img" "$W" >/dev/null
  rm -f "$W/$(basename "$bin")"
  log "built $img"
}
for b in broker router bridge; do
  build "kubelink/$b:$TAG" Dockerfile.net "$ROOT/bin/kubelink-$b" --build-arg "BASE=$BASE"
done
for b in meshdns certwatch mcs verifier; do
  build "kubelink/$b:$TAG" Dockerfile.static "$ROOT/bin/kubelink-$b"
done
build "kubelink/coredns:$TAG" Dockerfile.static "$CACHE/bin/coredns-v1.14.0/coredns"
# busybox applets (wget, nslookup, httpd) on PATH for `kubectl exec … wget`.
printf 'FROM %s\nRUN mkdir -p /opt/busybox && busybox --install -s /opt/busybox\nENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/busybox\nENTRYPOINT []\nCMD ["sleep","infinity"]\n' "$BASE" |
  DOCKER_BUILDKIT=0 $DOCKER build -q -t "kubelink-lab/toolbox:$TAG" - >/dev/null
log "built kubelink-lab/toolbox:$TAG"
# The lab's CNI agent: debian-net (ip, iptables) + kubectl + lab/cni/lab-cni.sh.
install -m 0755 "$CACHE/bin/$K8S_VERSION/kubectl" "$W/kubectl"
install -m 0755 "$ROOT/lab/cni/lab-cni.sh" "$W/lab-cni.sh"
printf 'FROM %s\nCOPY kubectl lab-cni.sh /usr/local/bin/\nENTRYPOINT ["/usr/local/bin/lab-cni.sh"]\n' "$BASE" >"$W/Dockerfile.cni"
DOCKER_BUILDKIT=0 $DOCKER build -q -f "$W/Dockerfile.cni" -t "kubelink-lab/cni:$TAG" "$W" >/dev/null
rm -f "$W/kubectl" "$W/lab-cni.sh" "$W/Dockerfile.cni"
log "built kubelink-lab/cni:$TAG"
