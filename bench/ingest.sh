#!/usr/bin/env bash
# Ingest benchmark: how many signed webhooks per second `stockshift serve` accepts
# (each acknowledged only after its group commit is fsync'd), and at what latency.
#
#   bench/ingest.sh [N] [CONCURRENCY] [DUP_RATIO] [KIND]
#   defaults: 50000 webhooks, 64 connections, 10% duplicates, standard
#
# Builds release, starts `serve` on a temporary state folder, runs
# examples/webhook_load.rs against it, then checks with python3's sqlite3 that the
# queue holds exactly the distinct events sent (duplicates not queued twice).
set -euo pipefail

N=${1:-50000}
C=${2:-64}
DUP=${3:-0.1}
KIND=${4:-standard}

cd "$(dirname "$0")/.."
cargo build --release --quiet --bin stockshift --example webhook_load
BIN=target/release/stockshift
LOAD=target/release/examples/webhook_load

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

printf 'sku,location,qty\nSKU-0,WH-1,1\n' > "$WORK/source.csv"
cp "$WORK/source.csv" "$WORK/target.csv"
printf 'inventory_item_id,location_id,sku,location\n1,1,SKU-0,WH-1\n' > "$WORK/inventory_map.csv"
cat > "$WORK/plan.yaml" <<YAML
version: 1
name: ingest-bench
source: { provider: csv, path: source.csv }
target: { provider: csv, path: target.csv }
events:
  sources:
    - { name: erp, kind: standard, secret_env: BENCH_ERP_SECRET }
    - { name: shop, kind: shopify, secret_env: BENCH_SHOP_SECRET, inventory_map: inventory_map.csv }
YAML
export BENCH_ERP_SECRET="whsec_$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(24)).decode())')"
export BENCH_SHOP_SECRET="bench-$(python3 -c 'import os; print(os.urandom(12).hex())')"
SOURCE=erp; SECRET_ENV=BENCH_ERP_SECRET
if [ "$KIND" = shopify ]; then SOURCE=shop; SECRET_ENV=BENCH_SHOP_SECRET; fi

"$BIN" serve "$WORK/plan.yaml" --state "$WORK/state" --listen 127.0.0.1:0 2> "$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 1 100); do
    grep -q '^Listening on http://' "$WORK/serve.log" && break
    sleep 0.1
done
ADDR=$(sed -n 's/^Listening on http:\/\///p' "$WORK/serve.log" | head -1)
[ -n "$ADDR" ] || { echo "serve did not start:"; cat "$WORK/serve.log"; exit 1; }

echo "== $N $KIND webhooks, $C connections, dup ratio $DUP, reordered sequences; $(nproc) CPU(s)"
"$LOAD" --url "http://$ADDR" --source "$SOURCE" --secret-env "$SECRET_ENV" --kind "$KIND" \
    -n "$N" -c "$C" --dup-ratio "$DUP" --reorder | tee "$WORK/load.out"
RESULT=$(grep '^RESULT ' "$WORK/load.out")
DISTINCT=$(sed -n 's/.* distinct=\([0-9]*\).*/\1/p' <<< "$RESULT")

kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=

python3 - "$WORK/state/events.db" "$DISTINCT" "$SOURCE" <<'PY'
import sqlite3, sys
db, distinct, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = sqlite3.connect(db)
rows, ids = con.execute("SELECT count(*), count(DISTINCT id) FROM events WHERE source = ?", (source,)).fetchone()
deliveries = con.execute("SELECT count(*) FROM deliveries").fetchone()[0]
size = con.execute("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()").fetchone()[0]
print(f"== queue: {rows} events ({ids} distinct ids), {deliveries} deliveries, {size / 1e6:.1f} MB; expected {distinct} distinct")
if rows != distinct or ids != distinct:
    print("FAIL: the queue does not hold exactly the distinct events sent")
    sys.exit(1)
print("OK: every distinct event is queued exactly once")
PY
