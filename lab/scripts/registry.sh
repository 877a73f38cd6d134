#!/usr/bin/env bash
# The lab's container registry: the CNCF distribution registry
# (github.com/distribution/distribution/v3, built from its Go module in
# lab/tools/registry, no prebuilt download) in container kubelink-registry
# on the kind network. The host pushes to localhost:5001 (published on the
# loopback only); the kind nodes pull localhost:5001/... through containerd's
# registry host configuration, which sends them to kubelink-registry:5000,
# as kind documents for a local registry. Its storage is the docker volume
# kubelink-registry: lab-down removes the container and keeps the volume.
#
#   registry.sh build              build the binary if it is missing or stale
#   registry.sh start              build what is missing and run the registry
#   registry.sh push TAG IMAGE...  tag IMAGE:TAG as localhost:5001/IMAGE:TAG and push it
#   registry.sh configure-node N   point node container N's containerd at the registry
#   registry.sh stop [--data]      remove the container (and with --data its volume)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
REGISTRY_VERSION=v3.1.2
NAME=kubelink-registry
PORT=5001                       # on the host's loopback
ADDR=localhost:$PORT            # the name images carry, on the host and in the nodes
IMG=kubelink-lab/registry:$REGISTRY_VERSION
BIN=$CACHE/bin/registry-$REGISTRY_VERSION/registry
STAMP=$BIN.stamp

# The binary, rebuilt when lab/tools/registry's main.go, go.mod or go.sum change.
build_binary() {
  local want tmp
  want=$(cat "$ROOT/lab/tools/registry/main.go" "$ROOT/lab/tools/registry/go.mod" "$ROOT/lab/tools/registry/go.sum" | sha256sum | cut -d' ' -f1)
  if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then return; fi
  log "building the distribution registry $REGISTRY_VERSION from its Go module"
  mkdir -p "$(dirname "$BIN")"
  tmp=$BIN.tmp.$$
  (cd "$ROOT/lab/tools/registry" && GOWORK=off CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
    -o "$tmp" .)
  mv "$tmp" "$BIN"
  echo "$want" >"$STAMP"
  $DOCKER rmi -f "$IMG" >/dev/null 2>&1 || true   # the image holds the old binary
  rm -f "$CACHE/images/$(echo "$IMG" | tr '/:' '__').tar"
}

# The image: the static binary and its configuration, non-root, with its
# storage directory owned by that user (a new named volume copies it).
build_image() {
  local img=$1 w
  w=$(mktemp -d /var/tmp/kubelink-registry.XXXXXX)
  mkdir -p "$w/etc/distribution" "$w/var/lib/registry"
  install -m 0755 "$BIN" "$w/registry"
  cat >"$w/etc/distribution/config.yml" <<'C'
version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: /var/lib/registry}
  delete: {enabled: true}
http:
  addr: :5000
  headers: {X-Content-Type-Options: [nosniff]}
C
  printf 'FROM scratch\nCOPY etc/ /etc/\nCOPY --chown=65532:65532 var/ /var/\nCOPY registry /usr/local/bin/registry\nUSER 65532:65532\nEXPOSE 5000\nENTRYPOINT ["/usr/local/bin/registry"]\nCMD ["serve", "/etc/distribution/config.yml"]\n' >"$w/Dockerfile"
  DOCKER_BUILDKIT=0 $DOCKER build -q -t "$img" "$w" >/dev/null
  rm -rf "$w"
}

start() {
  build_binary
  cached_image "$IMG" build_image
  # kind creates its network with the first cluster; the registry may come first.
  $DOCKER network inspect kind >/dev/null 2>&1 || $DOCKER network create kind >/dev/null
  # Running, and from the image of the current binary (not only its name).
  if [[ $($DOCKER inspect -f '{{.State.Running}} {{.Image}}' "$NAME" 2>/dev/null) != "true $($DOCKER image inspect -f '{{.Id}}' "$IMG")" ]]; then
    $DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
    $DOCKER run -d --name "$NAME" --restart unless-stopped --network kind -p "127.0.0.1:$PORT:5000" \
      -v kubelink-registry:/var/lib/registry "$IMG" >/dev/null
    log "registry $NAME started ($ADDR on the host, $NAME:5000 on the kind network)"
  fi
  local i
  for i in $(seq 1 50); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADDR/v2/") == 200 ]] && return 0
    sleep 0.2
  done
  $DOCKER logs --tail 20 "$NAME" >&2 || true
  die "registry $NAME does not answer on http://$ADDR/v2/"
}

push() {
  local tag=$1 img; shift
  [[ $tag != latest ]] || die "images are never tagged latest"
  for img in "$@"; do
    have_image "$img:$tag" || die "image $img:$tag is missing: run make images"
    $DOCKER tag "$img:$tag" "$ADDR/$img:$tag"
    $DOCKER push -q "$ADDR/$img:$tag" >/dev/null || die "pushing $ADDR/$img:$tag failed"
    $DOCKER rmi "$ADDR/$img:$tag" >/dev/null   # the untagged name stays
  done
  log "pushed $# images to $ADDR (tag $tag)"
}

# containerd in a kind node reads per-registry hosts from config_path
# (set by the lab's kind config); this sends localhost:5001 to the registry.
configure_node() {
  local node=$1
  $DOCKER exec -i "$node" sh -c "mkdir -p /etc/containerd/certs.d/$ADDR && cat >/etc/containerd/certs.d/$ADDR/hosts.toml" <<H
[host."http://$NAME:5000"]
  capabilities = ["pull", "resolve"]
H
}

stop() {
  $DOCKER rm -f "$NAME" >/dev/null 2>&1 || true
  if [[ ${1:-} == --data ]]; then $DOCKER volume rm -f kubelink-registry >/dev/null 2>&1 || true; fi
}

case ${1:-} in
  build) build_binary ;;
  start) start ;;
  push) shift; push "$@" ;;
  configure-node) configure_node "${2:?node}" ;;
  stop) stop "${2:-}" ;;
  *) die "usage: registry.sh build | start | push TAG IMAGE... | configure-node NODE | stop [--data]" ;;
esac
