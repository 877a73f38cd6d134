#!/usr/bin/env bash
# flake.sh N PKG...: runs make test's tests (test.sh: PKG..., the data
# plane with -race, and cmd/kubelinkctl's module; TEST_RACE=all: -race
# everywhere) N times and lists every test that
# failed at least once, with how often and its first failure line. Exit status 1 when any run
# failed. Logs stay in $FLAKE_DIR (default ~/.cache/kubelink/flake).
set -uo pipefail
n=${1:?usage: flake.sh N PKG...}; shift
(($#)) || { echo "flake.sh: no packages" >&2; exit 2; }
dir=${FLAKE_DIR:-${KUBELINK_CACHE:-$HOME/.cache/kubelink}/flake}
rm -rf "$dir"; mkdir -p "$dir"
start=$(date +%s); failed_runs=0
for ((i = 1; i <= n; i++)); do
  s=$(date +%s)
  "$(dirname "$0")/test.sh" "$@" >"$dir/run-$i.log" 2>&1
  rc=$?
  ((rc == 0)) || failed_runs=$((failed_runs + 1))
  echo "flake: run $i/$n exit $rc in $(( $(date +%s) - s ))s (log $dir/run-$i.log)"
done
# A failing test prints "--- FAIL: Name (time)" and then its messages,
# indented; the first message line is the one that says why. Build or
# package-level failures show as "FAIL pkg [build failed]" / "panic:".
for ((i = 1; i <= n; i++)); do
  awk -v run="$i" '
    # a parent whose next line is a failing subtest is left out: the subtest names the failure
    /^[[:space:]]*--- FAIL: / { pending=$3; next }
    pending != "" { msg=$0; gsub(/^[[:space:]]+/, "", msg); print pending "\t" run "\t" msg; pending=""; next }
    /^FAIL[[:space:]].*\[(build failed|setup failed)\]/ { print $2 "\t" run "\t" $0; next }
    /^panic: / { print "panic\t" run "\t" $0 }' "$dir/run-$i.log"
done >"$dir/failures.tsv"
echo "flake: $n runs in $(( $(date +%s) - start ))s, $failed_runs failed"
if [[ -s $dir/failures.tsv ]]; then
  echo "flake: tests that failed at least once (count, runs, first failure line):"
  sort -t$'\t' -k1,1 -s "$dir/failures.tsv" | awk -F'\t' '
    { if (!($1 in cnt)) { order[++k]=$1; first[$1]=$3 } cnt[$1]++; runs[$1]=runs[$1] (runs[$1] ? "," : "") $2 }
    END { for (j=1; j<=k; j++) { t=order[j]; printf "  %-60s %d× (runs %s): %s\n", t, cnt[t], runs[t], first[t] } }'
fi
((failed_runs == 0))
