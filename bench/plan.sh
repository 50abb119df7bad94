#!/usr/bin/env bash
# Plan benchmark: `stockshift plan` (CSV and SQLite targets) against a polars baseline
# computing the same diff. See bench/README.md.
#
#   bench/plan.sh [ROWS...]            default: 1000000 10000000
#
# Environment:
#   BENCH_RUNS=3        runs per measurement (best wall, max peak RSS)
#   BENCH_SEED=42       generator seed
#   BENCH_TOOLS="stockshift-csv stockshift-sqlite polars polars-nochecks"
#                       what to measure; leave out the stockshift-* ones to run the
#                       polars side alone (stockshift is then not built)
#   BENCH_STOCKSHIFT=path  use this stockshift binary instead of building
#                       target/release/stockshift
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [[ $# -gt 0 ]]; then SIZES=("$@"); else SIZES=(1000000 10000000); fi
RUNS=${BENCH_RUNS:-3}
SEED=${BENCH_SEED:-42}
TOOLS=${BENCH_TOOLS:-"stockshift-csv stockshift-sqlite polars polars-nochecks"}
DATA_ROOT=$ROOT/target/bench-data
VENV=$ROOT/bench/.venv
BIN=${BENCH_STOCKSHIFT:-$ROOT/target/release/stockshift}
GEN=$DATA_ROOT/bin/gen_bench_data

for n in "${SIZES[@]}"; do
    [[ $n =~ ^[0-9]+$ && $n -ge 100 ]] || { echo "plan.sh: ROWS must be integers >= 100, got '$n'" >&2; exit 2; }
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "plan.sh: BENCH_RUNS must be a positive integer" >&2; exit 2; }
wants() { [[ " $TOOLS " == *" $1 "* ]]; }
wants_stockshift() { wants stockshift-csv || wants stockshift-sqlite; }

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'plan.sh: error: %s\n' "$*" >&2; exit 1; }

# apt_install PKG...: returns non-zero when it cannot (not root, no apt-get, failure).
apt_install() {
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
        printf 'plan.sh: cannot install %s (needs root and apt-get)\n' "$*" >&2
        return 1
    fi
    log "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }
}

# ---------------------------------------------------------------- tools
[[ -x /usr/bin/time ]] || apt_install time || die "please install GNU time (/usr/bin/time)"
command -v python3 >/dev/null || apt_install python3 || die "please install python3"

# ---------------------------------------------------------------- builds
if wants_stockshift && [[ -z ${BENCH_STOCKSHIFT:-} ]]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
if wants_stockshift; then
    [[ -x $BIN ]] || die "no stockshift binary at $BIN"
fi
# The generator is std-only (it does not use the stockshift library), so it is built
# with rustc directly: it works even while the library does not compile. It is the
# same file that `cargo run --release --example gen_bench_data` builds.
mkdir -p "$DATA_ROOT/bin"
if [[ ! -x $GEN || examples/gen_bench_data.rs -nt $GEN ]]; then
    log "rustc examples/gen_bench_data.rs"
    rustc --edition 2024 -C opt-level=3 -o "$GEN" examples/gen_bench_data.rs
fi
GEN_VERSION=$("$GEN" --version | awk '{print $2}')

if wants polars || wants polars-nochecks; then
    if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import polars' 2>/dev/null; then
        log "creating $VENV with polars"
        rm -rf "$VENV"
        python3 -m venv "$VENV" 2>/dev/null ||
            { rm -rf "$VENV" && apt_install python3-venv && python3 -m venv "$VENV"; } ||
            die "cannot create a python venv (install python3-venv)"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check polars
    fi
    [[ -f $VENV/.gitignore ]] || printf '*\n' >"$VENV/.gitignore" # keep the venv out of git
    POLARS_VERSION=$("$VENV/bin/python" -c 'import polars; print(polars.__version__)')
fi

# ---------------------------------------------------------------- data
# A data directory is complete when expected.txt exists (the generator writes it last)
# and was written by this generator version with this seed and size.
ensure_data() {
    local n=$1 dir=$DATA_ROOT/$1
    local want="rows=$n seed=$SEED generator_version=$GEN_VERSION "
    if [[ -f $dir/expected.txt && $(head -n1 "$dir/expected.txt") == "$want"* ]]; then
        log "data for $n rows: up to date in $dir"
    else
        log "generating $n rows into $dir"
        rm -rf "$dir"
        local t0 t1
        t0=$(date +%s.%N)
        "$GEN" --rows "$n" --out "$dir" --seed "$SEED" >/dev/null
        t1=$(date +%s.%N)
        log "generator took $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s"
    fi
    if wants stockshift-sqlite && [[ ! -f $dir/target.db || $dir/target.csv -nt $dir/target.db ]]; then
        build_target_db "$dir"
    fi
}

build_target_db() {
    local dir=$1 tmp=$1/target.db.tmp t0
    log "building $dir/target.db"
    t0=$(date +%s.%N)
    rm -f "$tmp"
    command -v sqlite3 >/dev/null || apt_install sqlite3 || log "no sqlite3 CLI: using python3's sqlite3 module"
    if command -v sqlite3 >/dev/null; then
        (cd "$dir" && sqlite3 -batch target.db.tmp >/dev/null <<'SQL'
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE inventory(sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL,
                       version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));
CREATE TEMP TABLE staging(sku TEXT, location TEXT, qty TEXT);
.mode csv
.import --skip 1 --schema temp target.csv staging
INSERT INTO inventory(sku, location, qty) SELECT sku, location, CAST(qty AS INTEGER) FROM temp.staging;
SQL
        )
    else
        python3 - "$dir/target.csv" "$tmp" <<'PY'
import csv, sqlite3, sys
db = sqlite3.connect(sys.argv[2])
db.execute("PRAGMA journal_mode = OFF")
db.execute("PRAGMA synchronous = OFF")
db.execute("CREATE TABLE inventory(sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL,"
           " version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location))")
with open(sys.argv[1], newline="") as f:
    rows = csv.reader(f)
    next(rows)
    db.executemany("INSERT INTO inventory(sku, location, qty) VALUES (?, ?, ?)",
                   ((s, l, int(q)) for s, l, q in rows))
db.commit()
PY
    fi
    local want got
    want=$(($(wc -l < "$dir/target.csv") - 1))
    got=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from inventory").fetchone()[0])' "$tmp")
    [[ $want == "$got" ]] || die "$tmp holds $got rows, target.csv $want"
    mv "$tmp" "$dir/target.db"
    log "target.db took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')s"
}

# ---------------------------------------------------------------- verification
# Compares a plan JSON document (stockshift's or polars') with expected.txt and, when
# given, with a reference document: same summary, same set of changes.
check_json() {
    python3 - "$@" <<'PY'
import json, sys
path, expected_file, ref = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
line = next(l for l in open(expected_file) if l.startswith("expected:"))
want = dict(kv.split("=") for kv in line.split()[1:])
want = {k: int(v) for k, v in want.items()}
try:
    doc = json.load(open(path))
except ValueError as e:
    sys.exit(f"{path}: not one JSON document: {e}")
got = {k: doc.get("summary", {}).get(k) for k in want}
if got != want:
    sys.exit(f"{path}: summary {got} differs from the generator's {want}")
def changes(d):
    return {(c["sku"], c["location"], c["action"], c.get("before"), c["after"]) for c in d["changes"]}
mine = changes(doc)
if len(mine) != len(doc["changes"]) or len(mine) != want["create"] + want["update"]:
    sys.exit(f"{path}: {len(doc['changes'])} changes ({len(mine)} distinct), summary says {want['create'] + want['update']}")
if ref:
    theirs = changes(json.load(open(ref)))
    if mine != theirs:
        a, b = sorted(mine - theirs)[:5], sorted(theirs - mine)[:5]
        sys.exit(f"{path} and {ref} differ: only in the first {a}, only in the second {b}")
PY
}

verify() {
    local n=$1 dir=$DATA_ROOT/$1 out=$DATA_ROOT/$1/verify
    mkdir -p "$out"
    log "verifying $n rows: $(grep '^expected:' "$dir/expected.txt")"
    local ref=""
    if wants polars || wants polars-nochecks; then
        "$VENV/bin/python" bench/polars_plan.py "$dir" --check --out "$out/polars.json" 2>"$out/polars.err" ||
            { cat "$out/polars.err" >&2; die "polars disagrees with the generator at $n rows"; }
        check_json "$out/polars.json" "$dir/expected.txt" || die "polars output is wrong at $n rows"
        ref=$out/polars.json
    fi
    local kind
    for kind in csv sqlite; do
        wants "stockshift-$kind" || continue
        "$BIN" plan "$dir/plan-$kind.yaml" --format json >"$out/stockshift-$kind.json" 2>"$out/stockshift-$kind.err" ||
            { tail -n 20 "$out/stockshift-$kind.err" >&2; die "stockshift plan plan-$kind.yaml failed at $n rows"; }
        check_json "$out/stockshift-$kind.json" "$dir/expected.txt" ${ref:+"$ref"} ||
            die "stockshift plan plan-$kind.yaml gives a wrong answer at $n rows (see $out)"
    done
    log "verified: every tool agrees with the generator"
}

# ---------------------------------------------------------------- measurement
# measure LABEL CMD...: runs CMD (stdout to /dev/null) $RUNS times under
# /usr/bin/time -v; sets WALL (best, seconds), CPU (user + system seconds of that
# best run) and RSS_MB (max peak RSS, MB).
measure() {
    local label=$1; shift
    local tv=$DATA_ROOT/.time.$$ err=$DATA_ROOT/.stderr.$$ i w r c
    WALL="" CPU="" RSS_MB=0
    for ((i = 1; i <= RUNS; i++)); do
        if ! /usr/bin/time -v -o "$tv" "$@" >/dev/null 2>"$err"; then
            tail -n 20 "$err" >&2
            die "$label failed: $*"
        fi
        w=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tv")
        r=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$tv")
        c=$(awk -F': ' '/(User|System) time \(seconds\)/ { s += $2 } END { printf "%.2f", s }' "$tv")
        log "  $label run $i: ${w}s wall, ${c}s cpu, ${r} MB"
        if [[ -z $WALL ]] || awk -v a="$w" -v b="$WALL" 'BEGIN { exit !(a < b) }'; then WALL=$w CPU=$c; fi
        if ((r > RSS_MB)); then RSS_MB=$r; fi
    done
    rm -f "$tv" "$err"
}

RESULTS=()
record() { RESULTS+=("$1	$2	$3	$4	$5"); }   # rows tool wall rss cpu

for n in "${SIZES[@]}"; do
    ensure_data "$n"
done
for n in "${SIZES[@]}"; do
    dir=$DATA_ROOT/$n
    verify "$n"
    log "measuring $n rows ($RUNS runs each)"
    if wants stockshift-csv; then
        measure "stockshift csv" "$BIN" plan "$dir/plan-csv.yaml" --format json
        record "$n" "stockshift (csv target)" "$WALL" "$RSS_MB" "$CPU"
    fi
    if wants stockshift-sqlite; then
        measure "stockshift sqlite" "$BIN" plan "$dir/plan-sqlite.yaml" --format json
        record "$n" "stockshift (sqlite target)" "$WALL" "$RSS_MB" "$CPU"
    fi
    if wants polars; then
        measure "polars" "$VENV/bin/python" bench/polars_plan.py "$dir"
        record "$n" "polars" "$WALL" "$RSS_MB" "$CPU"
    fi
    if wants polars-nochecks; then
        measure "polars --no-checks" "$VENV/bin/python" bench/polars_plan.py "$dir" --no-checks
        record "$n" "polars --no-checks" "$WALL" "$RSS_MB" "$CPU"
    fi
done

# ---------------------------------------------------------------- report
{
    echo
    echo "plan benchmark: best wall of $RUNS runs, max peak RSS; seed $SEED; $(nproc) CPUs;" \
        "polars ${POLARS_VERSION:-n/a}; $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf '%-10s  %-28s  %8s  %8s  %8s  %s\n' rows tool "wall s" "cpu s" "peak MB" "polars wall / this wall"
    for row in "${RESULTS[@]}"; do
        IFS=$'\t' read -r n tool wall rss cpu <<<"$row"
        polars_wall=""
        for other in "${RESULTS[@]}"; do
            IFS=$'\t' read -r n2 tool2 wall2 _ _ <<<"$other"
            [[ $n2 == "$n" && $tool2 == polars ]] && polars_wall=$wall2
        done
        ratio=""
        if [[ -n $polars_wall && $tool == stockshift* ]]; then
            ratio=$(awk -v p="$polars_wall" -v s="$wall" 'BEGIN { if (s > 0) printf "%.2fx", p / s; else print "inf" }')
        fi
        printf '%-10s  %-28s  %8.2f  %8.2f  %8d  %s\n' "$n" "$tool" "$wall" "$cpu" "$rss" "$ratio"
    done
    echo
    echo "ratio > 1: stockshift is faster than polars on the same inputs (csv target is the headline)."
} | tee -a "$DATA_ROOT/results.txt"
