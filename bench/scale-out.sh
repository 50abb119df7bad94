#!/usr/bin/env bash
# Scale-out benchmark on one PostgreSQL (state, queue and target in one database):
#
# 1. replay throughput with 1, 2 and 4 workers: EVENTS queued events over KEYS
#    source keys, drained by W concurrent `stockshift replay` processes, each
#    run on a fresh copy of the same queued database;
# 2. ingestion: HOOKS signed webhooks (10% re-deliveries) into 1 receiver, then
#    spread over 3 receivers (`serve` on three ports, one load generator each).
#
#   bench/scale-out.sh [EVENTS] [KEYS] [HOOKS]     (defaults 1000000 100000 60000)
#
# The PostgreSQL server is started privately (see bench/pg-server.sh) or taken
# from STOCKSHIFT_TEST_PG_URL. Each replay run is checked: the queue ends empty
# and the target's total equals the snapshot plus every event. Prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
KEYS=${2:-100000}
HOOKS=${3:-60000}
WORKERS=${BENCH_WORKERS:-"1 2 4"}
if [ -z "${STOCKSHIFT_BIN:-}" ]; then cargo build --release -q --bin stockshift --example webhook_load; fi
BIN=${STOCKSHIFT_BIN:-$PWD/target/release/stockshift}
LOAD=${STOCKSHIFT_LOAD:-$PWD/target/release/examples/webhook_load}
DIR=$PWD/target/bench-scale-out/$EVENTS-$KEYS
rm -rf "$DIR" && mkdir -p "$DIR"
PG_EXTRA_OPTS="-c max_connections=200"
# shellcheck source=bench/pg-server.sh
source bench/pg-server.sh
q() { "$PSQL" -qtA -v ON_ERROR_STOP=1 "$1" -c "$2"; }
url_of() { echo "${ADMIN%/*}/$1"; }

export BENCH_ERP_SECRET="whsec_$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(24)).decode())')"
cd "$DIR"
awk -v n="$KEYS" 'BEGIN { print "sku,location,qty"; for (i = 0; i < n; i++) printf "SKU-%07d,WH-1,1000\n", i }' > source.csv
cat > plan.yaml <<YAML
version: 1
name: bench-scale-out
source: { provider: csv, path: source.csv }
target: { provider: postgres, url_env: BENCH_PG_URL, table: inventory, batch_size: 2000 }
state: { backend: postgres, url_env: BENCH_PG_URL }
limits: { max_writes: $((KEYS * 2)), max_zeroed: $((KEYS * 2)) }
events:
  queue: { backend: postgres, url_env: BENCH_PG_URL }
  listen: 127.0.0.1:0
  sources:
    - { name: erp, kind: standard, secret_env: BENCH_ERP_SECRET }
YAML
# EVENTS deltas of -1 or +1 (in turn) spread over the keys, sequences shuffled.
python3 - "$EVENTS" "$KEYS" > events.jsonl <<'PY'
import random, sys
n, k = int(sys.argv[1]), int(sys.argv[2])
seqs = list(range(1, n + 1))
random.Random(7).shuffle(seqs)
out = sys.stdout
for i, s in enumerate(seqs):
    d = -1 if i % 2 == 0 else 1
    out.write('{"id":"e%d","source":"erp","sku":"SKU-%07d","location":"WH-1","delta":%d,"sequence":%d,"occurred_at":"2026-11-27T10:00:00Z"}\n'
              % (i, (i * 7919) % k, d, s))
PY
EXPECTED_SUM=$(python3 -c "import sys; n,k=$EVENTS,$KEYS; print(k*1000 + sum(-1 if i % 2 == 0 else 1 for i in range(n)))")

# The template: target table, the apply that records the snapshot, the queued events.
export BENCH_PG_URL=$URL
q "$URL" "CREATE TABLE inventory (sku text NOT NULL, location text NOT NULL, qty bigint NOT NULL, PRIMARY KEY (sku, location))"
"$BIN" apply plan.yaml --auto-approve --state state > /dev/null
start=$(date +%s.%N)
"$BIN" replay plan.yaml --state state --from events.jsonl --queue-only > /dev/null
queue_s=$(echo "$(date +%s.%N) - $start" | bc -l)
q "$URL" "VACUUM ANALYZE" >/dev/null

declare -A WALL
for w in $WORKERS; do
  db=${DB}_w$w
  q "$ADMIN" "CREATE DATABASE $db TEMPLATE $DB" >/dev/null
  export BENCH_PG_URL; BENCH_PG_URL=$(url_of "$db")
  start=$(date +%s.%N)
  pids=()
  for i in $(seq "$w"); do
    "$BIN" replay plan.yaml --state state --quiet > "replay-$w-$i.log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "a worker failed:"; cat replay-"$w"-*.log; exit 1; }; done
  WALL[$w]=$(echo "$(date +%s.%N) - $start" | bc -l)
  left=$(q "$BENCH_PG_URL" "SELECT count(*) FROM stockshift_queue.pending")
  sum=$(q "$BENCH_PG_URL" "SELECT sum(qty) FROM inventory")
  [ "$left" = 0 ] || { echo "$w workers left $left events queued" >&2; exit 1; }
  [ "$sum" = "$EXPECTED_SUM" ] || { echo "$w workers: target total $sum, expected $EXPECTED_SUM" >&2; exit 1; }
  echo "replay with $w worker(s): ${WALL[$w]} s" >&2
done

# Ingestion: one receiver, then three.
ingest() { # receivers -> accepted/s
  local r=$1 db=${DB}_in$1 pids=() addrs=() logs=()
  q "$ADMIN" "CREATE DATABASE $db" >/dev/null
  export BENCH_PG_URL; BENCH_PG_URL=$(url_of "$db")
  for i in $(seq "$r"); do
    "$BIN" serve plan.yaml --state state > /dev/null 2> "serve-$r-$i.log" &
    pids+=($!)
  done
  for i in $(seq "$r"); do
    for _ in $(seq 100); do grep -q '^Listening on http://' "serve-$r-$i.log" && break; sleep 0.1; done
    addrs+=("$(sed -n 's/^Listening on http:\/\///p' "serve-$r-$i.log" | head -1)")
  done
  local start; start=$(date +%s.%N)
  local lpids=()
  for i in $(seq "$r"); do
    "$LOAD" --url "http://${addrs[$((i - 1))]}" --source erp --secret-env BENCH_ERP_SECRET \
      -n $((HOOKS / r)) -c $((48 / r)) --dup-ratio 0.1 --reorder --seed "$i" --skus "$KEYS" > "load-$r-$i.out" &
    lpids+=($!)
  done
  for p in "${lpids[@]}"; do wait "$p"; done
  local secs; secs=$(echo "$(date +%s.%N) - $start" | bc -l)
  kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true
  local accepted=0 errors=0
  for i in $(seq "$r"); do
    accepted=$((accepted + $(sed -n 's/.*RESULT.* accepted=\([0-9]*\).*/\1/p' "load-$r-$i.out")))
    errors=$((errors + $(sed -n 's/.*RESULT.* errors=\([0-9]*\).*/\1/p' "load-$r-$i.out")))
  done
  local stored; stored=$(q "$BENCH_PG_URL" "SELECT count(*) FROM stockshift_queue.event_log")
  [ "$errors" = 0 ] && [ "$stored" = "$accepted" ] || { echo "ingest with $r: $errors errors, $stored stored, $accepted accepted" >&2; exit 1; }
  echo "$accepted $secs"
}
read -r acc1 s1 < <(ingest 1)
read -r acc3 s3 < <(ingest 3)

printf '\nscale-out benchmark: %s events over %s keys; %s CPUs, load %s\n' "$EVENTS" "$KEYS" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'queueing %s events (replay --from --queue-only): %.1f s, %.0f events/s\n\n' "$EVENTS" "$queue_s" "$(echo "$EVENTS / $queue_s" | bc -l)"
printf '| %-24s | %10s | %12s | %8s |\n' "replay workers" "wall (s)" "events/s" "speed-up"
printf '|%s|%s|%s|%s|\n' "--------------------------" "------------" "--------------" "----------"
base=""
for w in $WORKERS; do
  eps=$(echo "$EVENTS / ${WALL[$w]}" | bc -l)
  [ -n "$base" ] || base=$eps
  printf '| %-24s | %10.1f | %12.0f | %7.2fx |\n' "$w" "${WALL[$w]}" "$eps" "$(echo "$eps / $base" | bc -l)"
done
printf '\n| %-24s | %10s | %12s | %8s |\n' "receivers" "wall (s)" "accepted/s" "speed-up"
printf '|%s|%s|%s|%s|\n' "--------------------------" "------------" "--------------" "----------"
r1=$(echo "$acc1 / $s1" | bc -l); r3=$(echo "$acc3 / $s3" | bc -l)
printf '| %-24s | %10.1f | %12.0f | %7.2fx |\n' "1" "$s1" "$r1" 1
printf '| %-24s | %10.1f | %12.0f | %7.2fx |\n' "3" "$s3" "$r3" "$(echo "$r3 / $r1" | bc -l)"
