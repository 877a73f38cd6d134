#!/usr/bin/env bash
# test.sh PKG...: the tests of `make test` (and of each run of `make flake`).
# Three runs, in two build configurations:
#   - the packages of go.work whose tests need client-go (the controllers,
#     the simulated clusters, the chart and API tests): the static build
#     (CGO_ENABLED=0 -trimpath) that make lint, the binaries and the lab
#     compile too, so a cold machine compiles client-go, controller-runtime
#     and the Kubernetes API types once instead of a second time with -race
#     (about 5 min of a cold run). The price: no race detector for these
#     packages here; `make test-race` (TEST_RACE=all) runs them with it.
#     The packages without tests are compiled here too.
#   - the other packages of go.work (the data plane: bridge, wireguard,
#     netapply, mesh, probe, the verifier...): go test -race, whose
#     dependencies are small;
#   - cmd/kubelinkctl, its own module outside go.work: static (the
#     configuration its build, vet and staticcheck share).
# The first runs in front; the other two, one after the other, beside it
# (so up to four test binaries run at once on 2 cores; if timer-bound tests
# start to flake under that, the -race run gets -p 1):
# lib/clusterlab alone takes most of the time, mostly waiting on its
# clusters' timers. Their output is kept in a file and printed after the
# first run, so the two never interleave. Exit status: non-zero when any
# run failed.
# TEST_TIMEOUT: go test's per-package limit (default 30m).
# TEST_RACE: auto (the split above, default) or all (every package of
# go.work with -race, as CI did before: the race detector everywhere).
set -uo pipefail
(($#)) || { echo "test.sh: no packages" >&2; exit 2; }
root=$(cd "$(dirname "$0")/../.." && pwd)
timeout=${TEST_TIMEOUT:-30m}
static=() race=()
case ${TEST_RACE:-auto} in
all) race=("$@") ;;
auto)
  # go list -test prints each package and, for each package with tests,
  # its test binary "<pkg>.test" with every package it links (Deps); the
  # test variants of packages (ForTest set) are left out. A package without
  # tests goes to the static run, which compiles it (as go test does) at
  # no cost after make lint. Should the listing fail (a test file that
  # does not parse), every package runs with -race, as before the split,
  # so that go test names the package that failed and runs the others.
  if lst=$(go list -test -f '{{if not .ForTest}}{{.ImportPath}}{{range .Deps}} {{.}}{{end}}{{end}}' "$@"); then
    declare -A tested=()
    pkgs=()
    while read -r bin deps; do
      [[ -n $bin ]] || continue
      if [[ $bin != *.test ]]; then pkgs+=("$bin"); continue; fi
      tested[${bin%.test}]=1
      if [[ " $deps" == *" k8s.io/client-go/"* ]]; then static+=("${bin%.test}"); else race+=("${bin%.test}"); fi
    done <<<"$lst"
    for p in "${pkgs[@]}"; do
      [[ -n ${tested[$p]:-} ]] || static+=("$p")
    done
  else
    echo "test.sh: go list of the packages failed (above); every package runs with -race" >&2
    race=("$@")
  fi
  ;;
*) echo "test.sh: TEST_RACE=$TEST_RACE: must be auto or all" >&2; exit 2 ;;
esac

side=$(mktemp)
spid=""
# Interrupted: the runs beside stop too (their process group: go test and
# its test binaries, which may hold network namespaces), and what they
# printed so far is shown.
cleanup() {
  if [[ -n $spid ]]; then
    kill -TERM -- "-$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    cat "$side"
  fi
  rm -f "$side"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

static_go() { CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath" go test -count=1 -timeout "$timeout" "$@"; }

set -m # the runs beside get a process group of their own (cleanup)
(
  rc=0
  if ((${#static[@]})) && ((${#race[@]})); then
    echo "--- with -race: the packages whose tests do not need client-go"
    go test -race -count=1 -timeout "$timeout" "${race[@]}" || rc=1
  fi
  echo "--- cmd/kubelinkctl (its own module)"
  (cd "$root/cmd/kubelinkctl" && GOWORK=off static_go ./...) || rc=1
  exit $rc
) >"$side" 2>&1 &
spid=$!
set +m

if ((${#static[@]})); then
  echo "--- static build: the packages whose tests need client-go, and those without tests (make test-race: with -race)"
  static_go "${static[@]}"
else
  echo "--- with -race: every package${TEST_RACE:+ (TEST_RACE=$TEST_RACE)}"
  go test -race -count=1 -timeout "$timeout" "${race[@]}"
fi
rc=$?
wait "$spid"
src=$?
spid=""
cat "$side"
((rc == 0 && src == 0))
