#!/usr/bin/env bash
# Prints the version of the tree (make's VERSION): git describe, and for a
# tree with uncommitted changes the hash of those changes after "-dirty-",
# so that every dirty state builds images of its own tag and make lab-up
# rolls the pods onto them (one tag for every dirty state kept the pods on
# the first build).
set -uo pipefail
v=$(git describe --tags --always --dirty 2>/dev/null) || { echo v0.0.0-dev; exit 0; }
if [[ $v == *-dirty ]]; then
  h=$({ git diff HEAD; git ls-files -z --others --exclude-standard | xargs -0 -r sha256sum; } | sha256sum | cut -c1-8)
  v=$v-$h
fi
echo "$v"
