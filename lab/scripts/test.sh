#!/usr/bin/env bash
# test.sh PKG...: the tests of `make test` (and of each run of `make flake`).
#   - the packages of go.work (PKGS): go test -race;
#   - cmd/kubelinkctl, its own module outside go.work: static build (the
#     configuration its build, vet and staticcheck share), no -race.
# The two run side by side. lib/clusterlab alone takes most of the lib run,
# mostly waiting on its clusters' timers, so one core sat idle while the
# CLI's tests waited for their turn after it; alongside, they finish within
# the lib run. The CLI's output is kept in a file and printed after the lib
# run, so the two never interleave. Exit status: non-zero when either failed.
# TEST_TIMEOUT: go test's per-package limit (default 30m).
set -uo pipefail
(($#)) || { echo "test.sh: no packages" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
timeout=${TEST_TIMEOUT:-30m}
klog=$(mktemp)
kpid=""
cleanup() {
  [[ -z $kpid ]] || kill -- "$kpid" 2>/dev/null
  rm -f "$klog"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

(
  cd "$root/cmd/kubelinkctl" &&
    GOWORK=off CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" \
      go test -count=1 -timeout "$timeout" ./...
) >"$klog" 2>&1 &
kpid=$!

go test -race -count=1 -timeout "$timeout" "$@"
rc=$?
wait "$kpid"
krc=$?
kpid=""
echo "--- cmd/kubelinkctl (its own module, run alongside the packages above)"
cat "$klog"
((rc == 0 && krc == 0))
