#!/usr/bin/env bash
# Builds CoreDNS with the plugins kubelink and a cluster DNS use (see
# lab/tools/coredns/main.go) plus kubelink's kubelinkglobal
# (lib/globaldns) and kubelinkgate (lib/linkgate) plugins from Go modules (lab/tools/coredns, no prebuilt
# downloads) and caches it outside the checkout. Used by the mesh DNS tests,
# the mesh-global DNS test and the lab.
#
#   lab/scripts/coredns-bin.sh
#
# Output: ${KUBELINK_CACHE:-~/.cache/kubelink}/bin/coredns-v1.14.0/coredns
#
# The path stays what the tests derive from meshdns.CoreDNSVersion; the
# cache is keyed by a stamp file next to the binary (coredns.stamp): a
# sha256 over the sources that go into the build (lab/tools/coredns's
# main.go, go.mod and go.sum, lib/globaldns, lib/globaldns/apis/coredns and lib/linkgate Go sources,
# lib/go.mod and lib/go.sum). Re-running with a matching stamp does nothing;
# a binary without a stamp (the earlier stock build) or with another stamp
# is rebuilt.
set -euo pipefail

COREDNS_VERSION=v1.14.0
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${KUBELINK_CACHE:-$HOME/.cache/kubelink}
OUT=$CACHE/bin/coredns-$COREDNS_VERSION
BIN=$OUT/coredns
STAMP=$OUT/coredns.stamp

stamp() {
  cd "$ROOT"
  {
    echo "coredns $COREDNS_VERSION kubelinkglobal kubelinkgate"
    ls lab/tools/coredns/main.go lab/tools/coredns/go.mod lab/tools/coredns/go.sum \
      lib/go.mod lib/go.sum lib/globaldns/*.go lib/globaldns/apis/coredns/*/*.go lib/linkgate/*.go 2>/dev/null \
      | grep -v '_test\.go$' | LC_ALL=C sort | while read -r f; do
        echo "$f $(sha256sum < "$f" | cut -d' ' -f1)"
      done
  } | sha256sum | cut -d' ' -f1
}

want=$(stamp)
if [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
  echo "cached $BIN (stamp $want)"
  exit 0
fi
mkdir -p "$OUT"
start=$(date +%s)
# Per-process temporary names: two concurrent builds never write the same
# file, and whichever finishes renames its complete binary into place.
tmp=$BIN.tmp.$$
tmpstamp=$STAMP.tmp.$$
trap 'rm -f "$tmp" "$tmpstamp"' EXIT
(cd "$ROOT/lab/tools/coredns" && GOWORK=off CGO_ENABLED=0 go build -trimpath \
  -ldflags "-s -w" \
  -o "$tmp" .)
for p in kubelinkglobal kubelinkgate; do
  "$tmp" -plugins | grep -E "^[[:space:]]*(dns\.)?$p\$" >/dev/null || { echo "built CoreDNS lacks the $p plugin" >&2; exit 1; }
done
echo "$want" > "$tmpstamp"
mv "$tmp" "$BIN"   # atomic: a killed build never leaves a half binary
mv "$tmpstamp" "$STAMP"
echo "built $BIN in $(( $(date +%s) - start ))s (stamp $want)"
