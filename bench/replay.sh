#!/usr/bin/env bash
# Replay benchmark: 1,000,000 queued events over 100,000 source keys, replayed
# from the durable queue into a SQLite target through the mapping, journaled
# and audited. Prints events/s and peak memory of `stockshift replay`.
#
#   bench/replay.sh [EVENTS] [KEYS]      (defaults 1000000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
KEYS=${2:-100000}
command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null
# STOCKSHIFT_BIN measures another build (e.g. a release to compare with).
if [ -z "${STOCKSHIFT_BIN:-}" ]; then cargo build --release -q; fi
BIN=${STOCKSHIFT_BIN:-$PWD/target/release/stockshift}
DIR=$PWD/target/bench-replay/$EVENTS-$KEYS
rm -rf "$DIR" && mkdir -p "$DIR"

python3 - "$DIR" "$KEYS" <<'PY'
import sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/source.csv", "w") as f:
    f.write("sku,location,qty\n")
    for i in range(n):
        f.write(f"OLD-{i:07d},WH-1,{i % 500 + 100}\n")
c = sqlite3.connect(f"{d}/target.db")
c.execute("CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location))")
c.commit()
with open(f"{d}/skus.csv", "w") as f:
    f.write("old_sku,new_sku,factor\n")
    for i in range(n):
        f.write(f"OLD-{i:07d},SKU-{i:07d},{12 if i % 50 == 0 else 1}\n")
open(f"{d}/plan.yaml", "w").write(f"""version: 1
name: bench-replay
source: {{ provider: csv, path: source.csv }}
target: {{ provider: sqlite, path: target.db }}
mapping:
  skus: {{ file: skus.csv }}
  locations: {{ WH-1: loc-1 }}
  safety_stock: {{ default: 1 }}
limits: {{ max_writes: {n * 2}, max_zeroed: {n * 2} }}
events:
  sources:
    - {{ name: erp, kind: standard, secret_env: BENCH_SECRET }}
""")
PY

cd "$DIR"
"$BIN" apply plan.yaml --auto-approve > /dev/null
# Create the queue (schema) through stockshift, then fill it directly: this
# benchmark measures replay from the queue, not ingestion (see bench/ingest.sh).
"$BIN" freeze status plan.yaml > /dev/null
python3 - "$DIR" "$EVENTS" "$KEYS" <<'PY'
import random, sqlite3, sys
d, n, keys = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(7)
c = sqlite3.connect(f"{d}/.stockshift/events.db")
c.execute("INSERT INTO deliveries (source, received_at, raw) VALUES ('erp', '2026-11-27T10:00:00Z', x'7b7d')")
rows = []
for i in range(n):
    k = random.randrange(keys)
    if random.random() < 0.02:
        delta, qty = None, random.randrange(50, 600)
    else:
        delta, qty = -random.randrange(1, 4) if random.random() < 0.9 else random.randrange(1, 3), None
    rows.append(("erp", f"ev-{i}", f"OLD-{k:07d}", "WH-1", delta, qty, random.randrange(1, 10_000_000), "2026-11-27T10:00:00Z", "2026-11-27T10:00:00Z", 1))
c.executemany("INSERT INTO event_log (source, id, sku, location, delta, qty, sequence, occurred_at, received_at, delivery) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
c.execute("INSERT INTO pending (seq) SELECT seq FROM event_log")
c.commit()
PY
/usr/bin/time -v "$BIN" replay plan.yaml > replay.out 2> time.txt || { cat replay.out time.txt; exit 1; }
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' time.txt | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' time.txt)
left=$(sqlite3 .stockshift/events.db "SELECT count(*) FROM pending")
cat replay.out
printf '\n%-34s %12s\n' "replay benchmark" "$EVENTS events, $KEYS keys"
printf '%-34s %12s\n' "replay wall (s)" "$wall"
printf '%-34s %12.0f\n' "events/s" "$(echo "$EVENTS / $wall" | bc -l)"
printf '%-34s %12s\n' "peak RSS (MB)" "$rss"
printf '%-34s %12s\n' "events left queued" "$left"
