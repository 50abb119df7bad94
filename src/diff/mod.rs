//! The diff: which stock writes turn the target into the mapped source.
//!
//! [`Diff`] is plain data. `diff::engine` computes it without any I/O from rows
//! that providers feed in; `render` turns it into text; `apply` executes it. A
//! change's `from` and `note` explain it to reviewers and are never consulted when
//! writing.

pub mod engine;

use serde::{Deserialize, Serialize};

/// What a write does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The key is absent in the target.
    Create,
    /// The key exists in the target with another quantity.
    Update,
}

/// One source row behind a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// SKU as written in the source.
    pub sku: String,
    /// Location as written in the source.
    pub location: String,
    /// Quantity as written in the source.
    pub qty: i64,
    /// Line in the source file (or row id in a database table).
    pub line: u64,
}

/// One stock write: set `after` at (sku, location) where the target still holds `before`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub sku: String,
    pub location: String,
    pub action: Action,
    /// The target's quantity as read; `None` for a create.
    pub before: Option<i64>,
    pub after: i64,
    /// A target key absent from the mapped source, zeroed by `orphans: zero`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub orphan: bool,
    /// A bundle quantity derived from its components.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bundle: bool,
    /// The source rows behind `after` (for a bundle: its components' rows).
    #[serde(default)]
    pub from: Vec<SourceRef>,
    /// How `after` was derived, for reviewers (e.g. `×12`, `safety stock 5`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Change {
    /// `after - before` (a create counts from 0).
    pub fn delta(&self) -> i64 {
        self.after - self.before.unwrap_or(0)
    }

    /// True when the write lowers stock.
    pub fn decreases(&self) -> bool {
        self.delta() < 0
    }

    /// True when the write takes a key with stock to 0.
    pub fn zeroes(&self) -> bool {
        self.after == 0 && self.before.unwrap_or(0) > 0
    }
}

/// Counts of a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
}

/// The writes, their counts and anything a reviewer should know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diff {
    pub summary: Summary,
    /// Sorted by location, then SKU.
    pub changes: Vec<Change>,
    pub warnings: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Writes that lower stock.
    pub fn decreases(&self) -> usize {
        self.changes.iter().filter(|c| c.decreases()).count()
    }

    /// Writes that take a key with stock to 0.
    pub fn zeroed(&self) -> usize {
        self.changes.iter().filter(|c| c.zeroes()).count()
    }
}
