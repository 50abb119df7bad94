//! `--format human`: Terraform-like text for a terminal.
//!
//! ```text
//! stockshift plan "erp-to-shopify" (config sha256 3f2a9c1b0d4e)
//!
//! Stock writes are shown with these symbols:
//!   + create
//!   ~ update
//!
//! Location "loc-1":
//!   + EACH-1  = 12           ×12
//!   ~ HOT-1   10 -> 5 (-5)   safety stock 5
//!
//! Plan: 1 to create, 1 to update, 9985 unchanged.
//! ```
//!
//! Changes are grouped under one header per location, in the order of the diff
//! (sorted by location, then SKU). The SKU and quantity columns are aligned
//! within a location. Colour (ANSI escape codes) is only emitted when
//! [`RenderOptions::color`] is set; control characters in names are shown
//! escaped so that data can never drive the terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::text::{printable, quoted};
use super::{RenderOptions, short_sha};
use crate::artifact::PlanArtifact;
use crate::diff::{Action, Change};

const RESET: &str = "\x1b[0m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";

/// Marker for a change zeroing an orphan (`orphans: zero`).
const ORPHAN: &str = "[orphan: absent from source]";
/// Marker for a bundle quantity derived from its components.
const BUNDLE: &str = "[bundle]";

/// Applies ANSI styles when colour is on.
struct Paint {
    on: bool,
}

impl Paint {
    fn paint(&self, style: &str, text: &str) -> String {
        if self.on && !text.is_empty() { format!("{style}{text}{RESET}") } else { text.to_string() }
    }
}

/// The human-readable rendering of `doc`.
pub fn render(doc: &PlanArtifact, opts: &RenderOptions) -> String {
    let p = Paint { on: opts.color };
    let diff = &doc.diff;
    let mut out = String::new();

    // Header.
    let _ = write!(out, "stockshift {} {}", printable(&opts.title.to_lowercase()), quoted(&doc.plan.name));
    let sha = short_sha(&doc.plan.config_sha256);
    if !sha.is_empty() {
        let _ = write!(out, " (config sha256 {})", printable(sha));
    }
    out.push_str("\n\n");

    if diff.changes.is_empty() {
        out.push_str("No changes. The target already matches the mapped source.\n\n");
    } else {
        // Legend: only the symbols that appear, as Terraform does.
        out.push_str("Stock writes are shown with these symbols:\n");
        for (action, word) in [(Action::Create, "create"), (Action::Update, "update")] {
            if diff.changes.iter().any(|c| c.action == action) {
                let _ = writeln!(out, "  {} {word}", symbol(action, &p));
            }
        }
        out.push('\n');

        for group in diff.changes.chunk_by(|a, b| a.location == b.location) {
            location_group(&mut out, group, &p);
            out.push('\n');
        }
    }

    for warning in &diff.warnings {
        let mut lines = warning.split('\n');
        let first = lines.next().unwrap_or_default();
        let _ = writeln!(out, "{} {}", p.paint(YELLOW, &p.paint(BOLD, "Warning:")), printable(first));
        for line in lines {
            let _ = writeln!(out, "         {}", printable(line));
        }
    }
    if !diff.warnings.is_empty() {
        out.push('\n');
    }

    let s = &diff.summary;
    let summary = format!(
        "{}: {} to create, {} to update, {} unchanged.",
        printable(&opts.title),
        s.create,
        s.update,
        s.unchanged
    );
    out.push_str(&p.paint(BOLD, &summary));
    out.push('\n');
    out
}

/// The quantity cell of a change line: its plain text (which sets the widths)
/// and, when colour makes it differ, the coloured text.
struct Cell {
    plain: String,
    painted: Option<String>,
}

impl Cell {
    fn shown(&self) -> &str {
        self.painted.as_deref().unwrap_or(&self.plain)
    }
}

/// Writes the header and lines of the changes at one location.
fn location_group(out: &mut String, group: &[Change], p: &Paint) {
    let _ = writeln!(out, "Location {}:", quoted(&group[0].location));

    let skus: Vec<Cow<'_, str>> = group.iter().map(|c| printable(&c.sku)).collect();
    let values: Vec<Cell> = group.iter().map(|c| value(c, p)).collect();
    let sku_width = skus.iter().map(|s| width(s)).max().unwrap_or(0);
    let value_width = values.iter().map(|v| width(&v.plain)).max().unwrap_or(0);

    for ((change, sku), value) in group.iter().zip(&skus).zip(&values) {
        out.push_str("  ");
        out.push_str(&symbol(change.action, p));
        out.push(' ');
        out.push_str(sku);
        let has_suffix = change.orphan || change.bundle || !change.note.is_empty();
        pad(out, sku_width - width(sku) + 2);
        out.push_str(value.shown());
        if has_suffix {
            pad(out, value_width - width(&value.plain) + 3);
            let mut parts = Vec::with_capacity(3);
            if change.orphan {
                parts.push(Cow::Borrowed(ORPHAN));
            }
            if change.bundle {
                parts.push(Cow::Borrowed(BUNDLE));
            }
            if !change.note.is_empty() {
                parts.push(Cow::Owned(p.paint(DIM, &printable(&change.note))));
            }
            out.push_str(&parts.join(" "));
        }
        out.push('\n');
    }
}

/// `= 12` for a create, `5 -> 7 (+2)` for an update (negative deltas in red).
fn value(change: &Change, p: &Paint) -> Cell {
    match (change.action, change.before) {
        (Action::Create, _) | (Action::Update, None) => Cell { plain: format!("= {}", change.after), painted: None },
        (Action::Update, Some(before)) => {
            let delta = change.delta();
            let head = format!("{before} -> {} ", change.after);
            let delta_text = format!("({delta:+})");
            let painted = (p.on && delta < 0).then(|| format!("{head}{}", p.paint(RED, &delta_text)));
            Cell { plain: head + &delta_text, painted }
        }
    }
}

fn symbol(action: Action, p: &Paint) -> Cow<'static, str> {
    match (action, p.on) {
        (Action::Create, false) => Cow::Borrowed("+"),
        (Action::Update, false) => Cow::Borrowed("~"),
        (Action::Create, true) => Cow::Owned(p.paint(GREEN, "+")),
        (Action::Update, true) => Cow::Owned(p.paint(YELLOW, "~")),
    }
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Display width, counted in characters.
fn width(s: &str) -> usize {
    s.chars().count()
}
