#!/usr/bin/env bash
# Apply benchmark: 1,000,000 conditional writes to a 1,000,000-row SQLite
# target, journaled and audited; then a no-op re-apply of the same plan.
#
#   bench/apply.sh [ROWS]        (default 1000000)
#
# Prints writes/s and peak memory (from /usr/bin/time -v) of `apply FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
command -v /usr/bin/time >/dev/null || apt-get install -y time >/dev/null
# STOCKSHIFT_BIN measures another build (e.g. a release to compare with).
if [ -z "${STOCKSHIFT_BIN:-}" ]; then cargo build --release -q; fi
BIN=${STOCKSHIFT_BIN:-$PWD/target/release/stockshift}
DIR=$PWD/target/bench-apply/$ROWS
rm -rf "$DIR" && mkdir -p "$DIR"

python3 - "$DIR" "$ROWS" <<'PY'
import sqlite3, sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/source.csv", "w") as f:
    f.write("sku,location,qty\n")
    for i in range(n):
        f.write(f"SKU-{i:08d},loc-1,{i % 500 + 1}\n")
c = sqlite3.connect(f"{d}/target.db")
c.execute("CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location))")
c.executemany("INSERT INTO inventory (sku, location, qty) VALUES (?, 'loc-1', 0)", ((f"SKU-{i:08d}",) for i in range(n)))
c.commit()
open(f"{d}/plan.yaml", "w").write(f"""version: 1
name: bench-apply-{n}
source: {{ provider: csv, path: source.csv }}
target: {{ provider: sqlite, path: target.db }}
limits: {{ max_writes: {n * 2}, max_zeroed: {n * 2} }}
""")
PY

cd "$DIR"
"$BIN" plan plan.yaml --out bench.plan.json --format json > /dev/null
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -v "$@" > /dev/null 2> time.txt || { cat time.txt; exit 1; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' time.txt | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print int($2/1024)}' time.txt)
  echo "$label $wall $rss"
}
read -r _ apply_s apply_mb < <(measure apply "$BIN" apply bench.plan.json)
read -r _ noop_s noop_mb < <(measure noop "$BIN" apply bench.plan.json)
check=$(sqlite3 target.db "SELECT count(*) FROM inventory WHERE qty = (CAST(substr(sku, 5) AS INTEGER) % 500) + 1")
[ "$check" = "$ROWS" ] || { echo "target does not match the plan: $check of $ROWS rows right" >&2; exit 1; }
audited=$(sqlite3 .stockshift/state.db "SELECT count(*) FROM audit")
printf '\n%-34s %12s\n' "apply benchmark ($ROWS writes)" ""
printf '%-34s %12s\n' "apply wall (s)" "$apply_s"
printf '%-34s %12.0f\n' "writes/s" "$(echo "$ROWS / $apply_s" | bc -l)"
printf '%-34s %12s\n' "apply peak RSS (MB)" "$apply_mb"
printf '%-34s %12s\n' "audit rows" "$audited"
printf '%-34s %12s\n' "no-op re-apply wall (s)" "$noop_s"
printf '%-34s %12s\n' "no-op re-apply peak RSS (MB)" "$noop_mb"
