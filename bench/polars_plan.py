#!/usr/bin/env python3
"""Baseline for the plan benchmark: the diff of `stockshift plan`, computed with polars.

    python bench/polars_plan.py DATA_DIR [--out FILE|-] [--check] [--streaming]

DATA_DIR is a directory written by `examples/gen_bench_data.rs`: source.csv, skus.csv,
target.csv and mapping.json (locations, bundles and safety stock of the plan YAML, as
JSON so that no YAML parser is needed). Applies SPEC section 2 steps 1-6 (rename and
factor, location map, merge by sum, safety stock, bundles, diff against the target with
`orphans: ignore`) and writes the changes as one JSON document to --out (stdout by
default; the benchmark sends it to /dev/null). The counts go to stderr as
`polars: create=X update=Y unchanged=Z`; --check compares them with the
`expected:` line of DATA_DIR/expected.txt and exits 1 when they differ.

Like stockshift it also checks the inputs (duplicate keys in source or target, an old
SKU mapped twice, a source row for a bundle SKU, an unmapped location, a missing qty)
and fails on them; --no-checks skips that (about a third of the time at 10M rows).
It does not trace the `from` rows of each change, which stockshift does.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import polars as pl


def fail(msg: str) -> None:
    print(f"polars_plan: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--out", default="-", help="where to write the JSON changes (- = stdout)")
    ap.add_argument("--check", action="store_true", help="compare the counts with expected.txt")
    ap.add_argument("--streaming", action="store_true", help="use polars' streaming engine")
    ap.add_argument("--timings", action="store_true", help="print phase timings to stderr")
    ap.add_argument("--no-checks", action="store_true", help="skip the input checks (diff only)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    d: Path = args.dir
    m = json.loads((d / "mapping.json").read_text())
    if m.get("unmapped_skus", "passthrough") != "passthrough" or m.get("orphans", "ignore") != "ignore":
        fail("only unmapped_skus: passthrough and orphans: ignore are implemented")

    s = pl.String
    # Locations are few: as Categorical the (sku, location) group-bys and joins run
    # about twice as fast as on two String columns.
    cat = pl.Categorical
    key_schema = {"sku": s, "location": s, "qty": pl.Int64}
    src = pl.scan_csv(d / "source.csv", schema=key_schema).with_columns(pl.col("location").cast(cat))
    skus = pl.scan_csv(d / "skus.csv", schema={"old_sku": s, "new_sku": s, "factor": pl.Int64})
    tgt = pl.scan_csv(d / "target.csv", schema=key_schema).with_columns(pl.col("location").cast(cat))

    locations: dict[str, str] = m["locations"]
    bundles: dict[str, dict[str, int]] = m["bundles"]
    ss_default: int = m["safety_stock"].get("default", 0)
    ss_per_sku: dict[str, int] = m["safety_stock"].get("per_sku", {})

    safety = pl.LazyFrame(
        {"sku": list(ss_per_sku), "ss": list(ss_per_sku.values())},
        schema={"sku": s, "ss": pl.Int64},
    )
    comps = pl.LazyFrame(
        {
            "bundle": [b for b, cs in bundles.items() for _ in cs],
            "sku": [c for cs in bundles.values() for c in cs],
            "units": [u for cs in bundles.values() for u in cs.values()],
        },
        schema={"bundle": s, "sku": s, "units": pl.Int64},
    )
    n_comps = comps.group_by("bundle").agg(n_comps=pl.len())

    # Input checks (each is an error in stockshift).
    # Each query returns the offending rows (or a count of them): empty when all is well.
    def duplicates(lf: pl.LazyFrame, *key: str) -> pl.LazyFrame:
        return lf.select(duplicates=pl.len() - pl.struct(*key).n_unique()).filter(pl.col("duplicates") > 0)

    checks = {
        "duplicate (sku, location) in source.csv": duplicates(src, "sku", "location"),
        "duplicate (sku, location) in target.csv": duplicates(tgt, "sku", "location"),
        "old SKU mapped twice in skus.csv": duplicates(skus, "old_sku"),
        "source row for a bundle SKU": src.filter(pl.col("sku").is_in(list(bundles))),
        "unmapped source location": src.filter(~pl.col("location").cast(s).is_in(list(locations))),
        "missing qty": pl.concat([src, tgt]).filter(pl.col("qty").is_null() | pl.col("sku").is_null()),
    }

    # Steps 1-3: SKU (+factor; unmapped SKUs pass through), location, merge by sum.
    merged = (
        src.join(skus, left_on="sku", right_on="old_sku", how="left")
        .select(
            sku=pl.coalesce("new_sku", "sku"),
            location=pl.col("location").cast(s).replace_strict(locations, return_dtype=s).cast(cat),
            qty=pl.col("qty") * pl.col("factor").fill_null(1),
        )
        .group_by("sku", "location")
        .agg(pl.col("qty").sum())
    )
    # Step 4: safety stock.
    rows = (
        merged.join(safety, on="sku", how="left")
        .select("sku", "location", qty=(pl.col("qty") - pl.col("ss").fill_null(ss_default)).clip(lower_bound=0))
    )
    # Step 5: bundles: a row wherever a component has one; min of floor(qty / units),
    # a component without a row there counts as 0.
    bundle_rows = (
        comps.join(rows, on="sku", how="inner")
        .group_by("bundle", "location")
        .agg(q=(pl.col("qty") // pl.col("units")).min(), present=pl.len())
        .join(n_comps, on="bundle")
        .select(
            sku="bundle",
            location="location",
            qty=pl.when(pl.col("present") == pl.col("n_comps")).then("q").otherwise(0),
        )
    )
    desired = pl.concat([rows, bundle_rows])
    # Step 6: diff; target keys absent from `desired` are orphans (ignored).
    diff = (
        desired.join(tgt.rename({"qty": "before"}), on=["sku", "location"], how="left")
        .rename({"qty": "after"})
        .with_columns(
            action=pl.when(pl.col("before").is_null())
            .then(pl.lit("create"))
            .when(pl.col("before") != pl.col("after"))
            .then(pl.lit("update"))
            .otherwise(pl.lit("unchanged"))
        )
    )
    counts = diff.group_by("action").agg(n=pl.len())
    changes = diff.filter(pl.col("action") != "unchanged").select(
        "sku", pl.col("location").cast(s), "action", "before", "after"
    )

    if args.no_checks:
        checks = {}
    engine = "streaming" if args.streaming else "auto"
    results = pl.collect_all([*checks.values(), counts, changes], engine=engine)
    t1 = time.perf_counter()
    for (what, _), bad in zip(checks.items(), results):
        if bad.height:
            fail(f"{what}: {bad.head(3).to_dicts()}")
    count_df, changes_df = results[-2], results[-1]
    summary = {"create": 0, "update": 0, "unchanged": 0}
    for action, n in count_df.iter_rows():
        summary[action] = n

    doc_head = json.dumps(
        {"format_version": 1, "plan": {"name": f"bench-{m.get('rows')}"}, "summary": summary}
    )[:-1]
    out = sys.stdout if args.out == "-" else open(args.out, "w")
    with out:
        out.write(doc_head)
        out.write(', "changes": ')
        out.write(changes_df.write_json())
        out.write(', "warnings": []}\n')
    t2 = time.perf_counter()

    line = "polars: create={create} update={update} unchanged={unchanged}".format(**summary)
    print(line, file=sys.stderr)
    if args.timings:
        print(f"polars_plan: compute {t1 - t0:.2f}s, write {t2 - t1:.2f}s", file=sys.stderr)
    if args.check:
        expected = next(
            (ln.strip() for ln in (d / "expected.txt").read_text().splitlines() if ln.startswith("expected:")),
            None,
        )
        if expected is None:
            fail(f"no expected: line in {d / 'expected.txt'}")
        if expected.removeprefix("expected:").strip() != line.removeprefix("polars:").strip():
            fail(f"counts differ: {line} vs {expected}")


if __name__ == "__main__":
    main()
