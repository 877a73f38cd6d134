#!/usr/bin/env bash
# make lab-down: deletes the lab's kind clusters and what they leave behind
# (node containers and their volumes, the registry container, the kind
# docker network), then checks that nothing is left. Cached images and
# binaries stay in ~/.cache/kubelink, the registry's data in volume
# kubelink-registry.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if ! $DOCKER info >/dev/null 2>&1; then
  log "docker is not running: nothing to remove"; exit 0
fi
# The volumes of the lab's node containers, to check they went with them.
vols=""
for id in $($DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-a) \
          $($DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-b) \
          $($DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-c); do
  vols+=" $($DOCKER inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' "$id")"
done
for name in lab-a lab-b lab-c; do
  if [[ -x $KIND ]] && "$KIND" get clusters 2>/dev/null | grep -x "$name" >/dev/null; then
    log "deleting cluster $name"
    "$KIND" delete cluster --name "$name" >/dev/null 2>&1
  fi
  # Containers of a half-created cluster kind no longer knows about.
  ids=$($DOCKER ps -aq --filter "label=io.x-k8s.kind.cluster=$name")
  [[ -z $ids ]] || $DOCKER rm -f -v $ids >/dev/null
done
$DOCKER rm -f -v kubelink-node-build >/dev/null 2>&1 || true
# The lab's registry; its volume kubelink-registry stays, as a cache.
"$ROOT/lab/scripts/registry.sh" stop
# The kind network, once no container uses it any more.
if $DOCKER network inspect kind >/dev/null 2>&1 && [[ -z $($DOCKER network inspect kind -f '{{range .Containers}}x{{end}}') ]]; then
  $DOCKER network rm kind >/dev/null
fi
for v in $vols; do $DOCKER volume rm -f "$v" >/dev/null 2>&1 || true; done
rm -rf "$LAB_DIR/a" "$LAB_DIR/b" "$LAB_DIR/c" "$LAB_DIR/mode" "$LAB_DIR"/join-*.log
left=$($DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-a; $DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-b; $DOCKER ps -aq --filter label=io.x-k8s.kind.cluster=lab-c; $DOCKER ps -aq --filter name='^kubelink-registry$')
nets=$($DOCKER network ls -q --filter name='^kind$')
leftvols=""
for v in $vols; do $DOCKER volume inspect "$v" >/dev/null 2>&1 && leftvols+=" $v"; done
if [[ -n $left || -n $nets || -n $leftvols ]]; then
  die "left behind: containers [$left] networks [$nets] volumes [$leftvols]"
fi
log "lab removed: no kind containers, networks or volumes left"
