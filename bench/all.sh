#!/usr/bin/env bash
# Every benchmark in bench/, then ONE summary table (name, figure, unit, goal,
# pass/fail), so a release can be compared with the last one.
#
#   bench/all.sh
#
# Runs, each with its own defaults unless said otherwise:
#   plan.sh 1000000        (BENCH_10M=1: also 10,000,000 rows; needs ~4 GB and a few minutes)
#   apply.sh               1,000,000 writes
#   postgres.sh            200,000 conditional writes to a local PostgreSQL (starts a private server)
#   ingest.sh              50,000 webhooks, 64 connections
#   replay.sh              1,000,000 events over 100,000 keys
#   reconcile.sh 1000000   on plan.sh's data
#   simulate.sh 100000     the playbook's reference case and 100,000 SKUs over 48 h
#   shopify.sh             100,000 writes to the fake Shopify at 100 points/s, 1,000-point bucket
#
# Environment: BENCH_10M=1 (above); BENCH_RUNS (plan.sh and reconcile.sh, default 3);
# BENCH_ONLY="plan apply ..." to run some of them only.
# Each script's full output is kept in target/bench-all/<UTC time>/<name>.log; the
# table is printed, saved there as summary.txt and appended to target/bench-all/history.txt.
# Exit status: 0 when every figure meets its goal, 1 otherwise.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
LOGS=$ROOT/target/bench-all/$STAMP
mkdir -p "$LOGS"
ONLY=${BENCH_ONLY:-"plan apply postgres ingest replay reconcile simulate shopify"}
PLAN_SIZES=(1000000)
[[ ${BENCH_10M:-0} == 1 ]] && PLAN_SIZES=(1000000 10000000)

log() { printf '==> %s\n' "$*" >&2; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

log "cargo build --release (stockshift and the load generator)"
if ! cargo build --release --quiet --bin stockshift --example webhook_load; then
    echo "all.sh: the release build failed" >&2
    exit 1
fi
export BENCH_STOCKSHIFT=$ROOT/target/release/stockshift

declare -A STATUS
# run NAME CMD...: runs one benchmark script, its output to $LOGS/NAME.log.
run() {
    local name=$1; shift
    log "$name: $* (log: $LOGS/$name.log)"
    local t0=$SECONDS rc=0
    "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
    STATUS[$name]=$rc
    log "$name: exit $rc after $((SECONDS - t0)) s"
}

wants plan && run plan bench/plan.sh "${PLAN_SIZES[@]}"
wants apply && run apply bench/apply.sh
wants postgres && run postgres env STOCKSHIFT_BIN="$BENCH_STOCKSHIFT" bench/postgres.sh
wants ingest && run ingest bench/ingest.sh
wants replay && run replay bench/replay.sh
wants reconcile && run reconcile bench/reconcile.sh 1000000
wants simulate && run simulate bench/simulate.sh 100000
wants shopify && run shopify bench/shopify.sh

ROWS=()
ALL_OK=1
# row NAME FIGURE UNIT GOAL_TEXT OP LIMIT: OP is >= or <= (or "info": no goal).
row() {
    local name=$1 figure=$2 unit=$3 goal=$4 op=$5 limit=$6 verdict
    if [[ -z $figure ]]; then
        verdict="no figure"
        figure="-"
        ALL_OK=0
    elif [[ $op == info ]]; then
        verdict="-"
    else
        verdict=$(awk -v f="$figure" -v l="$limit" -v op="$op" \
            'BEGIN { ok = (op == ">=") ? (f + 0 >= l + 0) : (f + 0 <= l + 0); print ok ? "pass" : "FAIL" }')
        [[ $verdict == pass ]] || ALL_OK=0
    fi
    ROWS+=("$name	$figure	$unit	$goal	$verdict")
}
# failed NAME: a script that did not finish gives one row saying so.
failed() {
    ROWS+=("$1	-	-	-	FAIL (exit ${STATUS[$1]}, see $LOGS/$1.log)")
    ALL_OK=0
}
ok() { [[ ${STATUS[$1]:-x} == 0 ]]; }

if wants plan; then
    if ok plan; then
        for n in "${PLAN_SIZES[@]}"; do
            L=$LOGS/plan.log
            # rows: "<rows>  <tool padded to 28>  <wall>  <peak MB>  [<ratio>x]"
            # The tool column is 28 characters wide and starts at column 13.
            get() { awk -v n="$n" -v t="$1" -v col="$2" '$1 == n && substr($0, 13, 28) == sprintf("%-28s", t) { print $col }' "$L" | tail -1; }
            csv_wall=$(get "stockshift (csv target)" 5)
            csv_rss=$(get "stockshift (csv target)" 6)
            csv_ratio=$(get "stockshift (csv target)" 7)
            sql_wall=$(get "stockshift (sqlite target)" 5)
            sql_ratio=$(get "stockshift (sqlite target)" 7)
            polars_wall=$(get "polars" 3)
            label=$([[ $n == 1000000 ]] && echo 1M || echo 10M)
            row "plan $label, csv target: wall" "$csv_wall" s "" info 0
            row "plan $label, csv target: vs polars" "${csv_ratio%x}" "x faster" ">= 2" ">=" 2
            row "plan $label, sqlite target: wall" "$sql_wall" s "" info 0
            row "plan $label, sqlite target: vs polars" "${sql_ratio%x}" "x faster" ">= 2" ">=" 2
            row "plan $label: polars wall" "$polars_wall" s "" info 0
            if [[ $n == 10000000 ]]; then
                row "plan 10M, csv target: peak memory" "$csv_rss" MB "< 1024" "<=" 1023
            else
                row "plan 1M, csv target: peak memory" "$csv_rss" MB "" info 0
            fi
        done
    else
        failed plan
    fi
fi

if wants apply; then
    if ok apply; then
        L=$LOGS/apply.log
        row "apply 1M writes: rate" "$(awk '/^writes\/s/ { print $2 }' "$L")" "writes/s" ">= 100000" ">=" 100000
        row "apply 1M writes: wall" "$(awk '/^apply wall \(s\)/ { print $4 }' "$L")" s "" info 0
        row "apply 1M writes: peak memory" "$(awk '/^apply peak RSS \(MB\)/ { print $5 }' "$L")" MB "" info 0
        row "apply: no-op re-apply wall" "$(awk '/^no-op re-apply wall \(s\)/ { print $5 }' "$L")" s "" info 0
    else
        failed apply
    fi
fi

if wants postgres; then
    if ok postgres; then
        L=$LOGS/postgres.log
        row "postgres 200k conditional writes: rate" "$(awk '/^writes\/s/ { print $2 }' "$L")" "writes/s" ">= 50000" ">=" 50000
        row "postgres 200k conditional writes: wall" "$(awk '/^apply wall \(s\)/ { print $4 }' "$L")" s "" info 0
    else
        failed postgres
    fi
fi

if wants ingest; then
    if ok ingest; then
        L=$LOGS/ingest.log
        R=$(grep '^RESULT ' "$L" | tail -1)
        val() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$R"; }
        row "ingest 50k webhooks: accepted" "$(val accepted_per_s)" "webhooks/s" ">= 5000" ">=" 5000
        row "ingest: p99 latency" "$(val p99_ms)" ms "< 50" "<=" 50
        row "ingest: p50 latency" "$(val p50_ms)" ms "" info 0
        grep -q '^OK: every distinct event is queued exactly once' "$L" && q=1 || q=0
        row "ingest: queue holds each distinct event once" "$q" "1 = yes" "= 1" ">=" 1
    else
        failed ingest
    fi
fi

if wants replay; then
    if ok replay; then
        L=$LOGS/replay.log
        row "replay 1M events: rate" "$(awk '/^events\/s/ { print $2 }' "$L")" "events/s" ">= 200000" ">=" 200000
        row "replay 1M events: wall" "$(awk '/^replay wall \(s\)/ { print $4 }' "$L")" s "" info 0
        row "replay 1M events: peak memory" "$(awk '/^peak RSS \(MB\)/ { print $4 }' "$L")" MB "" info 0
    else
        failed replay
    fi
fi

if wants reconcile; then
    if ok reconcile; then
        L=$LOGS/reconcile.log
        # rows: "<case padded to 28>  plan s  plan MB  reconcile s  reconcile MB  wall r/p  CPU r/p ..."
        for c in "csv target" "sqlite target" "sqlite target, after apply"; do
            line=$(awk -v c="$c" 'substr($0, 1, 28) == sprintf("%-28s", c)' "$L" | tail -1)
            [[ -z $line ]] && continue
            read -r _ _ _ _ wall_rp cpu_rp _ <<<"${line:28}"
            row "reconcile 1M, $c: wall / plan wall" "${wall_rp%x}" ratio "<= 1.20" "<=" 1.2
            row "reconcile 1M, $c: CPU / plan CPU" "${cpu_rp%x}" ratio "" info 0
        done
    else
        failed reconcile
    fi
fi

if wants simulate; then
    L=$LOGS/simulate.log
    if grep -q '^RESULT name=simulate' "$L" 2>/dev/null; then
        while read -r R; do
            val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$R"; }
            name=$(val name)
            label=$([[ $name == simulate-reference ]] && echo "simulate reference (10k SKUs, 48 h)" ||
                echo "simulate $(val skus) SKUs, 48 h, 50k orders/day")
            row "$label: wall" "$(val wall_s)" s "< $(val goal_s)" "<=" "$(val goal_s)"
            v=$([[ $(val verdict) == pass ]] && echo 1 || echo 0)
            row "$label: ledger verdict pass" "$v" "1 = yes" "= 1" ">=" 1
        done < <(grep '^RESULT name=simulate' "$L")
    else
        failed simulate
    fi
fi

if wants shopify; then
    R=$(grep '^RESULT name=shopify' "$LOGS/shopify.log" 2>/dev/null | tail -1)
    if [[ -n $R ]]; then
        val() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$R"; }
        row "shopify 100k writes, 100 pts/s: wall / bucket minimum" "$(val ratio)" ratio "<= 1.10" "<=" 1.10
        row "shopify: THROTTLED after the first" "$(val throttled_after_first)" answers "= 0" "<=" 0
        row "shopify: minimum the bucket allows" "$(val min_s)" s "" info 0
    else
        failed shopify
    fi
fi

{
    echo
    echo "stockshift benchmarks: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown);" \
        "$(nproc) CPUs; $STAMP; logs in $LOGS"
    printf '%-64s  %12s  %-10s  %-10s  %s\n' name figure unit goal result
    for r in "${ROWS[@]}"; do
        IFS=$'\t' read -r name figure unit goal verdict <<<"$r"
        printf '%-64s  %12s  %-10s  %-10s  %s\n' "$name" "$figure" "$unit" "$goal" "$verdict"
    done
} | tee "$LOGS/summary.txt"
cat "$LOGS/summary.txt" >>"$ROOT/target/bench-all/history.txt"
[[ $ALL_OK == 1 ]]
