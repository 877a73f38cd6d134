#!/usr/bin/env bash
# Builds kind (its version in lib.sh) from its Go module into the cache,
# once; host-prep.sh and lab-build.sh call it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
if [[ ! -x $KIND ]]; then
  mkdir -p "$CACHE/tools"
  b=$(mktemp -d "$CACHE/tools/kind-build.XXXXXX")
  GOWORK=off GOBIN="$b" go install "sigs.k8s.io/kind@$KIND_VERSION"
  mv "$b/kind" "$KIND"   # atomic: a stopped build leaves no half binary
  rmdir "$b"
fi
echo "host-prep: kind $KIND_VERSION at $KIND"
