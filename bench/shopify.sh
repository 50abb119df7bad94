#!/usr/bin/env bash
# Shopify throttle benchmark: `stockshift apply` of 100,000 writes to the fake
# Shopify Admin API (tests/fakes/shopify.rs) with a 1,000-point cost bucket
# restoring 100 points/s (a Standard plan).
#
#   bench/shopify.sh [WRITES] [BUCKET] [RATE]      (defaults 100000 1000 100)
#
# 100,000 writes are 400 inventorySetQuantities mutations of 10 points: 4,000
# points, of which the full bucket gives 1,000 at once, so the bucket allows no
# less than 30 s. Prints that minimum, the apply's wall time, their ratio (goal
# <= 1.10) and the THROTTLED answers after the first (goal 0); exits 1 when a
# goal is missed or the shop does not hold the planned values.
set -euo pipefail
cd "$(dirname "$0")/.."
WRITES=${1:-100000}
BUCKET=${2:-1000}
RATE=${3:-100}
# STOCKSHIFT_BIN measures another build (e.g. a release to compare with).
if [ -z "${STOCKSHIFT_BIN:-}" ]; then cargo build --release -q --bin stockshift; fi
cargo build --release -q --example shopify_throttle
BIN=${STOCKSHIFT_BIN:-$PWD/target/release/stockshift}
target/release/examples/shopify_throttle --bin "$BIN" --writes "$WRITES" --bucket "$BUCKET" --rate "$RATE" \
    --dir "$PWD/target/bench-shopify/$WRITES"
