//! `--format markdown`: a GitHub pull-request comment.
//!
//! The layout lives in `templates/plan.md.j2` (a minijinja template compiled into
//! the binary); this module supplies the data, the escaping filters, and the
//! size budget. GitHub refuses comments over 65,536 characters, so the output is
//! kept under [`MAX_LEN`] bytes (bytes are never fewer than characters) by
//! showing only the first change rows that fit, with a notice saying how many
//! are shown. The number of rows is found by a binary search over renders of at
//! most `MAX_LEN / 8` rows (a table row has at least 8 `|`), so the cost does
//! not grow with the size of the plan. The output has no timestamps: the same
//! document always renders to the same text.

use minijinja::value::{Serde, Value};
use minijinja::{Environment, UndefinedBehavior, context};
use serde::Serialize;

use super::text::{cut, md_code, md_text, thousands};
use super::{RenderOptions, short_sha};
use crate::artifact::PlanArtifact;
use crate::diff::{Action, Change};

/// The output is always shorter than this many bytes (GitHub's comment limit is
/// 65,536 characters; the rest is headroom for whatever CI wraps around it).
pub const MAX_LEN: usize = 65_000;

/// At most this many warnings are listed; the rest are counted.
const MAX_WARNINGS: usize = 30;
/// A table row has at least this many bytes (its 8 `|`), which bounds how many
/// rows can ever fit.
const MIN_ROW_LEN: usize = 8;

const TEMPLATE_NAME: &str = "plan.md.j2";
const TEMPLATE: &str = include_str!("../../templates/plan.md.j2");

/// One change as the template sees it.
#[derive(Serialize)]
struct Row<'a> {
    location: &'a str,
    sku: &'a str,
    action: Action,
    before: Option<i64>,
    after: i64,
    delta: i64,
    orphan: bool,
    bundle: bool,
    note: &'a str,
}

impl<'a> From<&'a Change> for Row<'a> {
    fn from(c: &'a Change) -> Row<'a> {
        Row {
            location: &c.location,
            sku: &c.sku,
            action: c.action,
            before: c.before,
            after: c.after,
            delta: c.delta(),
            orphan: c.orphan,
            bundle: c.bundle,
            note: &c.note,
        }
    }
}

/// The counts shown in the summary table.
#[derive(Serialize)]
struct Counts {
    create: u64,
    update: u64,
    unchanged: u64,
    decreases: u64,
    zeroed: u64,
}

/// The pull-request comment for `doc`.
pub fn render(doc: &PlanArtifact, opts: &RenderOptions) -> String {
    let env = environment();
    let template = env.get_template(TEMPLATE_NAME).expect("the built-in template is valid");

    let diff = &doc.diff;
    let total = diff.changes.len();
    let warnings: Vec<String> = diff.warnings.iter().take(MAX_WARNINGS).map(|w| cut(w)).collect();
    let base = context! {
        title => cut(&opts.title),
        name => cut(&doc.plan.name),
        config_sha => short_sha(&doc.plan.config_sha256),
        summary => Value::from(Serde(Counts {
            create: diff.summary.create,
            update: diff.summary.update,
            unchanged: diff.summary.unchanged,
            decreases: diff.decreases() as u64,
            zeroed: diff.zeroed() as u64,
        })),
        total,
        warnings,
        hidden_warnings => diff.warnings.len().saturating_sub(MAX_WARNINGS),
    };

    // Only rows that could possibly fit are ever converted or rendered.
    let rows: Vec<Value> =
        diff.changes.iter().take(MAX_LEN / MIN_ROW_LEN + 1).map(|c| Value::from(Serde(Row::from(c)))).collect();
    let render_rows = |shown: usize| -> String {
        let ctx = context! {
            changes => Value::from(rows[..shown].to_vec()),
            shown,
            ..base.clone()
        };
        let mut out = template.render(ctx).expect("the built-in template renders every document");
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };

    fit_rows(total, rows.len(), render_rows)
}

/// Renders as many rows as fit under [`MAX_LEN`]: all `total` when they fit, else
/// the largest count found by binary search (below `total` the output grows with
/// every row; 0 rows always fit). `available` is how many rows `render_rows` can show.
pub(crate) fn fit_rows(total: usize, available: usize, render_rows: impl Fn(usize) -> String) -> String {
    if available == total {
        let all = render_rows(total);
        if all.len() < MAX_LEN {
            return all;
        }
    }
    let (mut fits, mut too_many) = (0, available.min(total.saturating_sub(1)) + 1);
    while too_many - fits > 1 {
        let mid = fits + (too_many - fits) / 2;
        if render_rows(mid).len() < MAX_LEN {
            fits = mid;
        } else {
            too_many = mid;
        }
    }
    render_rows(fits)
}

fn environment() -> Environment<'static> {
    environment_with(TEMPLATE_NAME, TEMPLATE)
}

/// A template environment for a Markdown comment: strict, trimmed, with the
/// `md_text`, `md_code`, `num` and `signed` filters.
pub(crate) fn environment_with(name: &'static str, template: &'static str) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("the syntax configuration is valid"),
    );
    env.add_filter("md_text", |s: &str| md_text(s));
    env.add_filter("md_code", |s: &str| md_code(s));
    env.add_filter("num", |n: i64| thousands(n));
    env.add_filter("signed", |n: i64| if n > 0 { format!("+{}", thousands(n)) } else { thousands(n) });
    env.add_template(name, template).expect("the built-in template parses");
    env
}
