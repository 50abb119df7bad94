//! Rendering a plan document: human, JSON and Markdown (golden files under
//! tests/golden/render/), colour, escaping and the Markdown size budget.

use stockshift::artifact::{FORMAT_VERSION, InputDigest, PlanArtifact, PlanMeta};
use stockshift::diff::{Action, Change, Diff, SourceRef, Summary};
use stockshift::render::{self, Format, RenderOptions};

use crate::util::golden;

const SHA: &str = "3f2a9c1b0d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";

fn change(location: &str, sku: &str, before: Option<i64>, after: i64) -> Change {
    Change {
        sku: sku.to_string(),
        location: location.to_string(),
        action: if before.is_some() { Action::Update } else { Action::Create },
        before,
        after,
        orphan: false,
        bundle: false,
        from: Vec::new(),
        note: String::new(),
    }
}

fn artifact(name: &str, diff: Diff) -> PlanArtifact {
    PlanArtifact {
        format_version: FORMAT_VERSION,
        plan: PlanMeta {
            name: name.to_string(),
            config_sha256: SHA.to_string(),
            path: "plans/erp-to-shopify.yaml".to_string(),
        },
        diff,
        inputs: vec![InputDigest {
            role: "source".to_string(),
            path: "data/erp_snapshot.csv".to_string(),
            sha256: "0".repeat(64),
        }],
        state: None,
        rollback_of: None,
        file_sha256: None,
        file_path: None,
    }
}

/// Every kind of change: a create with a factor, an increase, a decrease by
/// safety stock, a bundle, an orphan zeroed, a plain key zeroed; and a warning.
fn mixed() -> PlanArtifact {
    let mut each = change("loc-1", "EACH-1", None, 12);
    each.note = "×12".to_string();
    each.from = vec![SourceRef { sku: "CASE-12".to_string(), location: "WH-EAST".to_string(), qty: 1, line: 3 }];
    let mut hot = change("loc-1", "HOT-1", Some(10), 5);
    hot.note = "safety stock 5".to_string();
    let new = change("loc-1", "NEW-1", Some(5), 7);
    let mut kit = change("loc-2", "KIT-1", Some(3), 1);
    kit.bundle = true;
    kit.note = "min(A/2, B/1)".to_string();
    let mut legacy = change("loc-2", "LEGACY-9", Some(4), 0);
    legacy.orphan = true;
    let sold = change("loc-2", "SOLD-OUT", Some(2), 0);
    let changes = vec![each, hot, new, kit, legacy, sold];
    artifact(
        "erp-to-shopify",
        Diff {
            summary: Summary { create: 1, update: 5, unchanged: 9985 },
            changes,
            warnings: vec![
                "unmapped SKU \"ODD-7\" at WH-EAST passed through unchanged (unmapped_skus: passthrough)".to_string(),
            ],
        },
    )
}

fn empty() -> PlanArtifact {
    artifact(
        "erp-to-shopify",
        Diff { summary: Summary { create: 0, update: 0, unchanged: 10 }, changes: Vec::new(), warnings: Vec::new() },
    )
}

/// `n` updates that each lower stock by one, at keys with wide names.
fn large(n: usize) -> PlanArtifact {
    let changes: Vec<Change> =
        (0..n).map(|i| change(&format!("loc-{:02}", i % 7), &format!("SKU-{i:07}"), Some(5), 4)).collect();
    artifact(
        "big",
        Diff { summary: Summary { create: 0, update: n as u64, unchanged: 0 }, changes, warnings: Vec::new() },
    )
}

fn opts(title: &str) -> RenderOptions {
    RenderOptions { color: false, title: title.to_string() }
}

/// The change rows of a Markdown table (lines after the header separator).
fn table_rows(md: &str) -> Vec<&str> {
    md.lines().skip_while(|l| !l.starts_with("| location |")).skip(2).take_while(|l| l.starts_with('|')).collect()
}

/// Unescaped `|` in a table row: one per column boundary.
fn unescaped_pipes(row: &str) -> usize {
    let mut count = 0;
    let mut escaped = false;
    for c in row.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '|' if !escaped => count += 1,
            _ => escaped = false,
        }
        if c != '\\' {
            escaped = false;
        }
    }
    count
}

#[test]
fn golden_human() {
    golden("render/mixed.txt", &render::render(&mixed(), Format::Human, &opts("Plan")));
    golden("render/empty.txt", &render::render(&empty(), Format::Human, &opts("Plan")));
    golden("render/rollback.txt", &render::render(&mixed(), Format::Human, &opts("Rollback")));
}

#[test]
fn golden_json() {
    golden("render/mixed.json", &render::render(&mixed(), Format::Json, &opts("Plan")));
    golden("render/empty.json", &render::render(&empty(), Format::Json, &opts("Plan")));
}

#[test]
fn golden_markdown() {
    golden("render/mixed.md", &render::render(&mixed(), Format::Markdown, &opts("Plan")));
    golden("render/empty.md", &render::render(&empty(), Format::Markdown, &opts("Plan")));
}

#[test]
fn json_is_the_artifact_document() {
    let doc = mixed();
    let out = render::render(&doc, Format::Json, &RenderOptions::default());
    assert_eq!(out, doc.to_json());
    assert_eq!(out, render::json::render(&doc));
    let back: PlanArtifact = serde_json::from_str(&out).unwrap();
    assert_eq!(back, doc);
}

#[test]
fn human_summary_line_is_last_and_exact() {
    let out = render::human::render(&mixed(), &opts("Plan"));
    assert_eq!(out.lines().last(), Some("Plan: 1 to create, 5 to update, 9985 unchanged."));
    let out = render::human::render(&empty(), &opts("Rollback"));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.contains(&"No changes. The target already matches the mapped source."));
    assert_eq!(lines.last(), Some(&"Rollback: 0 to create, 0 to update, 10 unchanged."));
}

#[test]
fn colour_only_when_asked() {
    for format in Format::ALL {
        let plain = render::render(&mixed(), format, &opts("Plan"));
        assert!(!plain.contains('\x1b'), "{format} has escape codes without color");
    }
    let coloured = render::render(&mixed(), Format::Human, &RenderOptions { color: true, title: "Plan".to_string() });
    assert!(coloured.contains("\x1b[32m+\x1b[0m"), "green +");
    assert!(coloured.contains("\x1b[33m~\x1b[0m"), "yellow ~");
    assert!(coloured.contains("\x1b[31m(-5)\x1b[0m"), "red negative delta");
    assert!(!coloured.contains("\x1b[31m(+2)"), "positive delta is not red");
    assert!(coloured.contains("\x1b[2msafety stock 5\x1b[0m"), "dim note");
    assert!(coloured.contains("\x1b[1mPlan: 1 to create, 5 to update, 9985 unchanged.\x1b[0m"), "bold summary");
    // Colour changes nothing but the escape codes.
    assert_eq!(strip_ansi(&coloured), render::render(&mixed(), Format::Human, &opts("Plan")));
    // JSON and Markdown never colour.
    for format in [Format::Json, Format::Markdown] {
        let out = render::render(&mixed(), format, &RenderOptions { color: true, title: "Plan".to_string() });
        assert!(!out.contains('\x1b'), "{format} has escape codes");
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn human_escapes_control_characters() {
    let mut doc = empty();
    doc.diff.changes = vec![change("loc\n1", "EVIL\x1b[2J", Some(1), 2)];
    let out = render::human::render(&doc, &opts("Plan"));
    assert!(!out.contains('\x1b'));
    assert!(out.contains("Location \"loc\\n1\":"), "{out}");
    assert!(out.contains("EVIL\\u{1b}[2J"), "{out}");
}

#[test]
fn markdown_truncates_under_github_limit() {
    let total = 200_000;
    let doc = large(total);
    let start = std::time::Instant::now();
    let md = render::markdown::render(&doc, &opts("Plan"));
    let elapsed = start.elapsed();
    assert!(md.len() < 65_536, "{} bytes", md.len());
    assert!(md.len() < render::markdown::MAX_LEN);
    assert!(elapsed.as_secs() < 20, "took {elapsed:?}");

    let notice = md.lines().find(|l| l.starts_with("Showing ")).expect("a truncation notice");
    let (shown, stated_total) = notice
        .strip_prefix("Showing ")
        .and_then(|rest| rest.split_once(" changes;"))
        .and_then(|(counts, _)| counts.split_once(" of "))
        .map(|(a, b)| {
            let n = |s: &str| s.replace(',', "").parse::<usize>().unwrap();
            (n(a), n(b))
        })
        .expect("Showing N of M changes");
    assert_eq!(stated_total, total);
    assert!(notice.contains("stockshift show"), "{notice}");
    let rows = table_rows(&md);
    assert_eq!(rows.len(), shown, "rows in the table = rows stated");
    assert!(shown > 500, "the budget is used: {shown} rows");
    // The first rows are shown, in order.
    assert!(rows[0].contains("`SKU-0000000`"));
    assert!(rows[shown - 1].contains(&format!("`SKU-{:07}`", shown - 1)));
    // As many as fit: one more row would not.
    assert!(md.len() + rows[0].len() + 1 >= render::markdown::MAX_LEN - 16);
    assert!(
        md.contains(&format!("<details><summary>200,000 changes ({} shown)</summary>", thousands(shown))),
        "the summary line states the same count"
    );
    // Deterministic.
    assert_eq!(md, render::markdown::render(&doc, &opts("Plan")));
}

#[test]
fn markdown_shows_everything_that_fits() {
    let doc = large(100);
    let md = render::markdown::render(&doc, &opts("Plan"));
    assert_eq!(table_rows(&md).len(), 100);
    assert!(!md.contains("Showing "));
    assert!(md.contains("<details><summary>100 changes</summary>"));
}

#[test]
fn markdown_escapes_cells() {
    let mut doc = empty();
    let mut c = change("loc|<b>1</b>", "A|B*`x`_@team", Some(3), 1);
    c.note = "see [link](http://x) | <script> $x$\nnext ~~line~~".to_string();
    doc.diff.changes = vec![c];
    doc.diff.warnings = vec!["# not a heading | *bold* <img src=x>".to_string()];
    doc.plan.name = "evil`name|".to_string();
    let md = render::markdown::render(&doc, &opts("Plan"));

    let rows = table_rows(&md);
    assert_eq!(rows.len(), 1);
    let row = rows[0];
    // 7 columns: 8 unescaped pipes, on one line.
    assert_eq!(unescaped_pipes(row), 8, "{row}");
    assert!(row.starts_with(r"| `loc\|<b>1</b>` | ``A\|B*`x`_@team`` | update | 3 | 1 | -2 |"), "{row}");
    assert!(row.ends_with(r"| see \[link\](http://x) \| \<script\> \$x\$ next \~\~line\~\~ |"), "{row}");
    assert!(md.contains("\n- \\# not a heading \\| \\*bold\\* \\<img src=x\\>\n"), "{md}");
    assert!(md.starts_with("## Plan: ``evil`name\\|``\n"), "{md}");
    assert!(!md.contains("<script>"));
}

#[test]
fn markdown_warns_about_decreases_and_zeroes() {
    let md = render::markdown::render(&mixed(), &opts("Plan"));
    assert!(md.contains("> [!WARNING]\n> **4** writes lower stock; **2** take keys to 0.\n"), "{md}");
    let md = render::markdown::render(&large(3), &opts("Plan"));
    assert!(md.contains("> [!WARNING]\n> **3** writes lower stock.\n"), "{md}");
    let mut doc = empty();
    doc.diff.changes = vec![change("loc-1", "A", Some(1), 0)];
    let md = render::markdown::render(&doc, &opts("Plan"));
    assert!(md.contains("> **1** write lowers stock; **1** takes a key to 0.\n"), "{md}");
    assert!(!render::markdown::render(&empty(), &opts("Plan")).contains("[!WARNING]"));
}

#[test]
fn markdown_caps_warnings() {
    let mut doc = empty();
    doc.diff.warnings = (0..10_000).map(|i| format!("warning {i} {}", "x".repeat(2_000))).collect();
    let md = render::markdown::render(&doc, &opts("Plan"));
    assert!(md.len() < render::markdown::MAX_LEN);
    assert!(md.contains("and 9,970 more"), "{}", &md[md.len() - 300..]);
}

#[test]
fn markdown_stays_under_the_limit_with_huge_texts() {
    // Four-byte characters and characters that double when escaped, everywhere.
    let huge = "🦀*".repeat(5_000);
    let mut doc = large(10);
    doc.plan.name = huge.clone();
    doc.diff.warnings = vec![huge.clone(); 1_000];
    doc.diff.changes[0].note = huge.clone();
    doc.diff.changes[1].sku = huge;
    let md = render::markdown::render(&doc, &RenderOptions { color: false, title: "🦀".repeat(10_000) });
    assert!(md.len() < render::markdown::MAX_LEN, "{} bytes", md.len());
    assert!(md.contains("Showing 1 of 10 changes"), "the long note fits, the long SKU does not");
}

#[test]
fn format_parses_its_names() {
    for format in Format::ALL {
        assert_eq!(format.to_string().parse::<Format>(), Ok(format));
    }
    assert_eq!("markdown".parse::<Format>(), Ok(Format::Markdown));
    let err = "yaml".parse::<Format>().unwrap_err();
    assert_eq!(err.to_string(), "unknown format \"yaml\"; expected human, json or markdown");
    assert_eq!(Format::default(), Format::Human);
}
