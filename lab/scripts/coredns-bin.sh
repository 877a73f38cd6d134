#!/usr/bin/env bash
# Builds CoreDNS with its standard plugins from Go modules (lab/tools/coredns,
# no prebuilt downloads) and caches it outside the checkout. Re-running with a
# warm cache does nothing. Used by the mesh DNS tests and the lab.
#
#   lab/scripts/coredns-bin.sh
#
# Output: ${KUBELINK_CACHE:-~/.cache/kubelink}/bin/coredns-v1.12.1/coredns
set -euo pipefail

COREDNS_VERSION=v1.12.1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}
OUT=$CACHE/bin/coredns-$COREDNS_VERSION
BIN=$OUT/coredns

if [[ -x $BIN ]]; then
  echo "cached $BIN"
  exit 0
fi
mkdir -p "$OUT"
start=$(date +%s)
# A per-process temporary name: two concurrent builds never write the same
# file, and whichever finishes renames its complete binary into place.
tmp=$BIN.tmp.$$
trap 'rm -f "$tmp"' EXIT
(cd "$ROOT/lab/tools/coredns" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w" \
  -o "$tmp" .)
mv "$tmp" "$BIN"   # atomic: a killed build never leaves a half binary
echo "built $BIN in $(( $(date +%s) - start ))s"
