#!/usr/bin/env bash
# Simulate benchmark: `stockshift simulate` on the playbook's reference case
# (10,000 SKUs, 500 orders/day, 1,500 at peak, 48 h, duplicates and reordering)
# and on a large case (100,000 SKUs, 50,000 orders/day, 150,000 at peak, 48 h).
# Each run is the real cutover and 48 rounds of continuous sync checked by the
# independent ledger; a run whose verdict is not `pass` fails the script.
#
#   bench/simulate.sh [SKUS]           large case size (default 100000)
#
# Environment:
#   BENCH_STOCKSHIFT=path  use this stockshift binary instead of building target/release/stockshift
#   BENCH_SIM_FAULTS=LIST  faults of both runs (default dup=0.1,reorder=0.1)
#
# Goals (on a 2-core machine): reference case under 5 s, large case under 60 s.
# The last lines are machine-readable (bench/all.sh reads them):
#   RESULT name=... skus=N events=N wall_s=S peak_mb=M goal_s=G verdict=pass|fail
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LARGE=${1:-100000}
FAULTS=${BENCH_SIM_FAULTS:-dup=0.1,reorder=0.1}
BIN=${BENCH_STOCKSHIFT:-$ROOT/target/release/stockshift}

[[ $LARGE =~ ^[0-9]+$ && $LARGE -ge 1 ]] || { echo "simulate.sh: SKUS must be a positive integer, got '$LARGE'" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "simulate.sh: please install GNU time (/usr/bin/time)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "simulate.sh: please install python3" >&2; exit 1; }
if [[ -z ${BENCH_STOCKSHIFT:-} ]]; then
    echo "==> cargo build --release" >&2
    cargo build --release --quiet --bin stockshift
fi
[[ -x $BIN ]] || { echo "simulate.sh: no stockshift binary at $BIN" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
RESULTS=()
FAILED=0

# bench NAME GOAL_S ARGS...: one simulate run, timed by /usr/bin/time.
bench() {
    local name=$1 goal=$2; shift 2
    echo "==> $name: stockshift simulate $* --faults $FAULTS" >&2
    local rc=0
    /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" simulate "$@" --faults "$FAULTS" --format json \
        >"$WORK/$name.json" 2>"$WORK/$name.err" || rc=$?
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
        tail -n 20 "$WORK/$name.err" >&2
        echo "simulate.sh: $name failed (exit $rc)" >&2
        RESULTS+=("$name 0 0 0 0 $goal error")
        FAILED=1
        return
    fi
    local wall rss
    read -r wall rss <<<"$(tail -n1 "$WORK/time" | awk '{ printf "%s %.0f", $1, $2 / 1024 }')"
    local line
    line=$(python3 - "$WORK/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(d["skus"], d["events"], d["verdict"], d["unresolved_drift_units"], d["events_lost"], d["events_applied_twice"])
PY
)
    local skus events verdict units lost twice
    read -r skus events verdict units lost twice <<<"$line"
    echo "    verdict $verdict: unresolved drift $units units, $lost lost, $twice applied twice" >&2
    [[ $verdict == pass ]] || FAILED=1
    RESULTS+=("$name $skus $events $wall $rss $goal $verdict")
}

bench simulate-reference 5 --skus 10000 --orders-per-day 500 --peak-per-day 1500 --hours 48 --seed 42
bench "simulate-${LARGE}" 60 --skus "$LARGE" --orders-per-day 50000 --peak-per-day 150000 --hours 48 --seed 42

echo
echo "simulate benchmark: faults $FAULTS; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '%-24s  %8s  %8s  %8s  %8s  %8s  %s\n' case skus events "wall s" "peak MB" "goal s" result
for r in "${RESULTS[@]}"; do
    read -r name skus events wall rss goal verdict <<<"$r"
    ok=$(awk -v w="$wall" -v g="$goal" 'BEGIN { print (w > 0 && w < g) ? "pass" : "FAIL" }')
    [[ $verdict == pass ]] || ok="FAIL (verdict $verdict)"
    printf '%-24s  %8d  %8d  %8.2f  %8d  %8d  %s\n' "$name" "$skus" "$events" "$wall" "$rss" "$goal" "$ok"
done
echo
for r in "${RESULTS[@]}"; do
    read -r name skus events wall rss goal verdict <<<"$r"
    echo "RESULT name=$name skus=$skus events=$events wall_s=$wall peak_mb=$rss goal_s=$goal verdict=$verdict"
done
exit "$FAILED"
