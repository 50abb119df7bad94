#!/usr/bin/env bash
# Reconcile benchmark: `stockshift reconcile` against `stockshift plan` on the same
# data as the plan benchmark (target/bench-data/<rows>, from bench/plan.sh), so the
# cost of reconciling (drift, causes from the state store, KPIs) reads as a ratio
# over the cost of planning. Goal: reconcile within 1.2x of plan.
#
#   bench/reconcile.sh [ROWS]          default: 1000000
#
# Environment:
#   BENCH_RUNS=3          runs per measurement (best wall, max peak RSS)
#   BENCH_SEED=42         generator seed (as bench/plan.sh)
#   BENCH_STOCKSHIFT=path use this stockshift binary instead of building target/release/stockshift
#   BENCH_WITH_STATE=1    also measure after an apply, with drift introduced in the target,
#                         so causes are looked up in a real audit log (0 to skip)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

N=${1:-1000000}
RUNS=${BENCH_RUNS:-3}
SEED=${BENCH_SEED:-42}
WITH_STATE=${BENCH_WITH_STATE:-1}
DATA_ROOT=$ROOT/target/bench-data
DIR=$DATA_ROOT/$N
BIN=${BENCH_STOCKSHIFT:-$ROOT/target/release/stockshift}

[[ $N =~ ^[0-9]+$ && $N -ge 100 ]] || { echo "reconcile.sh: ROWS must be an integer >= 100, got '$N'" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "reconcile.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'reconcile.sh: error: %s\n' "$*" >&2; exit 1; }

[[ -x /usr/bin/time ]] || die "please install GNU time (/usr/bin/time)"
command -v python3 >/dev/null || die "please install python3"

if [[ -z ${BENCH_STOCKSHIFT:-} ]]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[[ -x $BIN ]] || die "no stockshift binary at $BIN"

# ---------------------------------------------------------------- data
# The plan benchmark's data; bench/plan.sh generates (and verifies) it when missing.
if [[ ! -f $DIR/expected.txt || ! -f $DIR/target.db || ! -f $DIR/plan-csv.yaml ||
    $(head -n1 "$DIR/expected.txt") != "rows=$N seed=$SEED "* ]]; then
    log "no benchmark data for $N rows: running bench/plan.sh $N to generate it"
    BENCH_RUNS=1 BENCH_SEED=$SEED BENCH_TOOLS="stockshift-csv stockshift-sqlite" BENCH_STOCKSHIFT=$BIN \
        bench/plan.sh "$N" >&2
fi
[[ -f $DIR/target.db ]] || die "bench/plan.sh did not leave $DIR/target.db"

WORK=$DATA_ROOT/reconcile-$N
rm -rf "$WORK"
mkdir -p "$WORK"
# An empty state folder: the plan benchmark's conditions (nothing applied, no queue).
NO_STATE=$WORK/no-state

# ---------------------------------------------------------------- verification
# reconcile must agree with plan on the same inputs: every key plan compares, and as
# drift exactly plan's changes whose quantity moves (max_abs_drift is 0 in these plans).
check() {
    local plan_json=$1 rec_json=$2
    python3 - "$plan_json" "$rec_json" <<'PY'
import json, sys
plan, rec = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
s = plan["summary"]
keys = s["create"] + s["update"] + s["unchanged"]
moved = [c for c in plan["changes"] if c["after"] != (c["before"] or 0)]
want = {"keys": keys, "drifted": len(moved),
        "max_abs_drift": max((abs(c["after"] - (c["before"] or 0)) for c in moved), default=0)}
got = {k: rec[k] for k in want}
if got != want:
    sys.exit(f"reconcile says {got}, plan implies {want}")
pairs = {(c["sku"], c["location"], c["before"], c["after"]) for c in moved}
mine = {(d["sku"], d["location"], d["target"], d["source"]) for d in rec["drift"]}
if pairs != mine:
    sys.exit(f"drifted keys differ from plan's changes: {sorted(pairs ^ mine)[:5]}")
print(f"{rec['drifted']}\t{rec['seconds_per_key']:.3g}")
PY
}

# ---------------------------------------------------------------- measurement
# time_once LABEL CMD...: runs CMD once (stdout to /dev/null) under /usr/bin/time; exit
# 0 and 3 (a threshold breached: drift is expected in this data) both count as success.
# Sets W (wall s), C (user + system CPU s) and R (peak RSS MB).
time_once() {
    local label=$1; shift
    local tv=$WORK/.time err=$WORK/.stderr rc=0
    /usr/bin/time -f '%e %U %S %M' -o "$tv" "$@" >/dev/null 2>"$err" || rc=$?
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
        tail -n 20 "$err" >&2
        die "$label failed (exit $rc): $*"
    fi
    read -r W C R <<<"$(tail -n1 "$tv" | awk '{ printf "%s %.2f %.0f", $1, $2 + $3, $4 / 1024 }')"
    rm -f "$tv" "$err"
}

# min A B: the smaller number.
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (b == "" || a < b) ? a : b }'; }

RESULTS=()
# bench_pair LABEL PLANFILE STATE_DIR: verifies reconcile against plan, then times
# them alternately (plan, reconcile, plan, ...) so that load from other processes
# falls on both alike; keeps the best wall and CPU time of each.
bench_pair() {
    local label=$1 plan=$2 state=$3 out
    out=$WORK/$(printf '%s' "$label" | tr -cs 'A-Za-z0-9' '-')
    log "verifying reconcile against plan: $label"
    "$BIN" --state "$state" plan "$plan" --format json >"$out.plan.json" 2>"$out.plan.err" ||
        { tail -n 20 "$out.plan.err" >&2; die "plan failed: $label"; }
    local rc=0
    "$BIN" --state "$state" reconcile "$plan" --format json >"$out.reconcile.json" 2>"$out.reconcile.err" || rc=$?
    [[ $rc -eq 0 || $rc -eq 3 ]] || { tail -n 20 "$out.reconcile.err" >&2; die "reconcile failed (exit $rc): $label"; }
    local checked drifted spk
    checked=$(check "$out.plan.json" "$out.reconcile.json") || die "reconcile disagrees with plan: $label"
    IFS=$'\t' read -r drifted spk <<<"$checked"
    log "measuring $label ($RUNS runs each, alternating)"
    local pw="" pc="" pr=0 rw="" rcpu="" rr=0 i
    for ((i = 1; i <= RUNS; i++)); do
        time_once "plan ($label)" "$BIN" --state "$state" plan "$plan" --format json
        log "  plan      run $i: ${W}s wall, ${C}s CPU, ${R} MB"
        pw=$(min "$W" "$pw") pc=$(min "$C" "$pc")
        ((R > pr)) && pr=$R
        time_once "reconcile ($label)" "$BIN" --state "$state" reconcile "$plan" --format json
        log "  reconcile run $i: ${W}s wall, ${C}s CPU, ${R} MB"
        rw=$(min "$W" "$rw") rcpu=$(min "$C" "$rcpu")
        ((R > rr)) && rr=$R
    done
    RESULTS+=("$label	$pw	$pc	$pr	$rw	$rcpu	$rr	$drifted	$spk")
}

bench_pair "csv target" "$DIR/plan-csv.yaml" "$NO_STATE"
bench_pair "sqlite target" "$DIR/plan-sqlite.yaml" "$NO_STATE"

if [[ $WITH_STATE != 0 ]]; then
    # After an apply: a private copy of the SQLite target, applied, then 1% of its
    # keys changed behind stockshift's back, so the causes come from a real audit log.
    log "preparing the with-state case in $WORK/applied"
    A=$WORK/applied
    mkdir -p "$A"
    cp "$DIR/plan-sqlite.yaml" "$DIR/source.csv" "$DIR/skus.csv" "$DIR/target.db" "$A/"
    "$BIN" apply "$A/plan-sqlite.yaml" --auto-approve --allow-large >/dev/null 2>"$WORK/apply.err" ||
        { tail -n 20 "$WORK/apply.err" >&2; die "apply failed"; }
    python3 - "$A/target.db" <<'PY'
import random, sqlite3, sys
random.seed(7)
c = sqlite3.connect(sys.argv[1])
n = c.execute("SELECT max(rowid) FROM inventory").fetchone()[0]
ids = random.sample(range(1, n + 1), n // 100)
c.executemany("UPDATE inventory SET qty = qty + 1 WHERE rowid = ?", ((i,) for i in ids))
c.commit()
PY
    bench_pair "sqlite target, after apply" "$A/plan-sqlite.yaml" "$A/.stockshift"
fi

# ---------------------------------------------------------------- report
{
    echo
    echo "reconcile benchmark: best of $RUNS alternating runs; $N source rows; seed $SEED;" \
        "$(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%-28s  %7s  %7s  %11s  %11s  %9s  %9s  %7s  %7s  %8s  %s\n' case "plan s" "plan MB" \
        "reconcile s" "reconcile MB" "wall r/p" "CPU r/p" "plan C" "rec. C" drifted "s/key (KPI)"
    for row in "${RESULTS[@]}"; do
        IFS=$'\t' read -r label pw pc pr rw rcpu rr drifted spk <<<"$row"
        ratio() { awk -v p="$1" -v r="$2" 'BEGIN { if (p > 0) printf "%.2fx", r / p; else print "n/a" }'; }
        printf '%-28s  %7.2f  %7d  %11.2f  %11d  %9s  %9s  %7.2f  %7.2f  %8d  %s\n' "$label" "$pw" "$pr" "$rw" "$rr" \
            "$(ratio "$pw" "$rw")" "$(ratio "$pc" "$rcpu")" "$pc" "$rcpu" "$drifted" "$spk"
    done
    echo
    echo "wall r/p: reconcile wall / plan wall (goal <= 1.20x); CPU r/p: the same for user + system CPU time,"
    echo "steadier on a loaded machine. plan C / rec. C: best CPU seconds."
} | tee -a "$DATA_ROOT/results.txt"
