#!/usr/bin/env bash
# make lab-build: everything make lab-up builds that needs no docker daemon,
# built (or found cached) now: the Debian packages of the lab, kind, the
# Kubernetes and CoreDNS binaries of the node image, the registry's binary
# and the Debian trees of the images (debootstrap). It starts no daemon and
# touches no network namespace or firewall, so it may run beside other
# work (docs/testing.md says why CI does not run it beside make test).
# Idempotent; each part is cached and locked as make lab-up caches and
# locks it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
start=$(date +%s)
"$ROOT/lab/scripts/deps.sh" lab-build
# The trees first: they wait on the network and the disk, the rest on the
# CPU. Their own process group (setsid), so that stopping lab-build stops
# debootstrap too, not just the script that runs it. A new session is a
# new scheduling group too (autogroup): it gets this one's CPU weight, or
# at .ci/run's idle priority the trees would take an equal share from the
# tests.
ag_nice=$(sed -n 's/.* nice //p' /proc/self/autogroup 2>/dev/null || true)
setsid bash -c '[[ -z $1 ]] || echo "$1" 2>/dev/null >/proc/self/autogroup || true
  exec "$0" --trees-only' "$ROOT/lab/scripts/node-image.sh" "$ag_nice" &
trees=$!
trap '[[ -z $trees ]] || { kill -- "-$trees" 2>/dev/null; wait "$trees"; } || true' EXIT
trap 'exit 143' INT TERM
"$ROOT/lab/scripts/kind-bin.sh"
"$ROOT/lab/scripts/registry.sh" build
"$ROOT/lab/scripts/k8s-bins.sh" kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubeadm kubectl etcd
"$ROOT/lab/scripts/coredns-bin.sh"
wait "$trees" || { trees=""; die "the Debian trees of the node image failed"; }
trees=""
log "lab built in $(( $(date +%s) - start ))s (make lab-up finds it cached)"
