#!/usr/bin/env bash
# PostgreSQL apply benchmark: ROWS conditional writes ("UPDATE ... WHERE qty =
# expected", batched) to a ROWS-row PostgreSQL table over loopback, journaled
# and audited; then a no-op re-apply of the same plan (every write "already
# applied"). Goal: at least 50,000 writes/s.
#
#   bench/postgres.sh [ROWS]        (default 200000)
#
# Uses the server at STOCKSHIFT_TEST_PG_URL when set (its user must be allowed to
# CREATE DATABASE; psql must be on PATH). Otherwise it starts a private cluster
# the way the tests do (tests/pg.rs): initdb on a temporary folder (as user
# `postgres` when run as root), pg_ctl on a free port of 127.0.0.1 with
# fsync=off, stopped and removed on exit. When the server binaries are missing
# and the script runs as root, it installs the `postgresql` package.
# Prints writes/s, CPU time and peak memory (from /usr/bin/time -v) of `apply FILE`,
# the best of BENCH_RUNS runs (default 3), each on a freshly loaded table.
# BENCH_PG_BATCH sets the plan's batch_size (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-200000}
BATCH=${BENCH_PG_BATCH:-2000}
command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null
# STOCKSHIFT_BIN measures another build (e.g. a release to compare with).
if [ -z "${STOCKSHIFT_BIN:-}" ]; then cargo build --release -q --bin stockshift; fi
BIN=${STOCKSHIFT_BIN:-$PWD/target/release/stockshift}
DIR=$PWD/target/bench-postgres/$ROWS
rm -rf "$DIR" && mkdir -p "$DIR"

# shellcheck source=bench/pg-server.sh
source bench/pg-server.sh
export INVENTORY_DB_URL=$URL

# The target: ROWS keys at 0, primary key (sku, location). The source sets each to 1..500.
reset_target() {
  "$PSQL" -q -v ON_ERROR_STOP=1 "$URL" >/dev/null <<SQL
DROP TABLE IF EXISTS inventory;
CREATE TABLE inventory (sku text NOT NULL, location text NOT NULL, qty bigint NOT NULL,
                        version bigint NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));
INSERT INTO inventory (sku, location, qty)
  SELECT 'SKU-' || lpad(i::text, 8, '0'), 'loc-1', 0 FROM generate_series(0, $ROWS - 1) AS i;
VACUUM ANALYZE inventory;
SQL
}
awk -v n="$ROWS" 'BEGIN { print "sku,location,qty"; for (i = 0; i < n; i++) printf "SKU-%08d,loc-1,%d\n", i, i % 500 + 1 }' \
  > "$DIR/source.csv"
cat > "$DIR/plan.yaml" <<YAML
version: 1
name: bench-postgres-$ROWS
source: { provider: csv, path: source.csv }
target: { provider: postgres, url_env: INVENTORY_DB_URL, batch_size: $BATCH }
limits: { max_writes: $((ROWS * 2)), max_zeroed: $((ROWS * 2)) }
YAML

cd "$DIR"
measure() { # label, command... -> "label wall_s peak_mb cpu_s"
  local label=$1; shift
  /usr/bin/time -v "$@" > /dev/null 2> time.txt || { cat time.txt; exit 1; }
  local wall rss cpu
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' time.txt | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' time.txt)
  cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' time.txt)
  echo "$label $wall $rss $cpu"
}
q() { "$PSQL" -qtA -v ON_ERROR_STOP=1 "$URL" -c "$1"; }
# Best of RUNS: each run starts from a fresh table and a fresh state folder.
RUNS=${BENCH_RUNS:-3}
best_apply=""; best_noop=""
for run in $(seq "$RUNS"); do
  reset_target
  rm -rf .stockshift bench.plan.json
  read -r _ plan_s _ _ < <(measure plan "$BIN" plan plan.yaml --out bench.plan.json --format json)
  read -r _ apply_s apply_mb apply_cpu < <(measure apply "$BIN" apply bench.plan.json)
  read -r _ noop_s noop_mb _ < <(measure noop "$BIN" apply bench.plan.json)
  check=$(q "SELECT count(*) FROM inventory WHERE qty = (substr(sku, 5)::int % 500) + 1 AND version = 1")
  [ "$check" = "$ROWS" ] || { echo "target does not match the plan: $check of $ROWS rows right" >&2; exit 1; }
  echo "run $run: plan ${plan_s}s, apply ${apply_s}s (CPU ${apply_cpu}s), no-op re-apply ${noop_s}s" >&2
  if [ -z "$best_apply" ] || awk -v a="$apply_s" -v b="$best_apply" 'BEGIN { exit !(a < b) }'; then
    best_apply=$apply_s; best_apply_mb=$apply_mb; best_apply_cpu=$apply_cpu; best_plan=$plan_s
  fi
  if [ -z "$best_noop" ] || awk -v a="$noop_s" -v b="$best_noop" 'BEGIN { exit !(a < b) }'; then
    best_noop=$noop_s; best_noop_mb=$noop_mb
  fi
done
settings=$(q "SELECT 'PostgreSQL ' || current_setting('server_version') || ', fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit')")
printf '\n%-34s %12s\n' "postgres apply benchmark ($ROWS writes, batch $BATCH, best of $RUNS)" ""
printf '%-34s %s\n' "server" "$settings"
printf '%-34s %s\n' "load average" "$(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
printf '%-34s %12s\n' "plan wall (s)" "$best_plan"
printf '%-34s %12s\n' "apply wall (s)" "$best_apply"
printf '%-34s %12.0f\n' "writes/s" "$(echo "$ROWS / $best_apply" | bc -l)"
printf '%-34s %12s\n' "apply CPU of stockshift (s)" "$best_apply_cpu"
printf '%-34s %12s\n' "apply peak RSS (MB)" "$best_apply_mb"
printf '%-34s %12s\n' "no-op re-apply wall (s)" "$best_noop"
printf '%-34s %12.0f\n' "no-op re-apply writes/s" "$(echo "$ROWS / $best_noop" | bc -l)"
printf '%-34s %12s\n' "no-op re-apply peak RSS (MB)" "$best_noop_mb"
