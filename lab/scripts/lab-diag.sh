#!/usr/bin/env bash
# Prints the state of the lab for a failed CI run: nodes, pods, links, events
# and the last lines of every kubelink container's log.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
trap - ERR
for c in a b c; do
  kc=$LAB_DIR/$c/kubeconfig
  [[ -s $kc || $c == c ]] || { echo "=== lab-$c: no kubeconfig"; continue; }
  [[ -s $kc ]] || continue  # a lab of two clusters
  k() { "$KUBECTL" --kubeconfig "$kc" "$@"; }
  echo "=== lab-$c"
  k get nodes -o wide
  k get pods -A -o wide
  k get kubelinks.kubelink.mandelsoft.org -o wide
  k get kubelinks.kubelink.mandelsoft.org -o yaml | grep -A12 '^  status:'
  k get events -A --sort-by=.lastTimestamp | tail -30
  for p in $(k -n kubelink get pods -o name); do
    for ctr in $(k -n kubelink get "$p" -o jsonpath='{.spec.containers[*].name}'); do
      echo "--- $p/$ctr"; k -n kubelink logs "$p" -c "$ctr" --tail=40
    done
  done
done
