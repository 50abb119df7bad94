//! Rendering: turns a computed [`PlanArtifact`] into text.
//!
//! Rendering is separate from computing: nothing here reads a provider, a file
//! or the environment. Every function takes the document and returns a `String`;
//! callers decide where it goes and whether colour is wanted (TTY, `--no-color`,
//! `NO_COLOR`).
//!
//! - [`human`]: Terraform-like text for a terminal.
//! - [`json`]: the machine-readable document of SPEC section 6.
//! - [`markdown`]: a GitHub pull-request comment, kept under GitHub's size limit.

pub mod human;
pub mod json;
pub mod markdown;
pub(crate) mod text;

use std::fmt;
use std::str::FromStr;

use crate::artifact::PlanArtifact;

/// An output format, as named by `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Terraform-like text for a terminal.
    #[default]
    Human,
    /// One JSON document (SPEC section 6).
    Json,
    /// A GitHub pull-request comment.
    Markdown,
}

impl Format {
    /// Every format, in the order shown in help texts.
    pub const ALL: [Format; 3] = [Format::Human, Format::Json, Format::Markdown];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Json => "json",
            Format::Markdown => "markdown",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `--format` value that names no format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFormat(pub String);

impl fmt::Display for UnknownFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown format {:?}; expected human, json or markdown", self.0)
    }
}

impl std::error::Error for UnknownFormat {}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        Format::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Emit ANSI colour codes (human format only).
    pub color: bool,
    /// What the document is, e.g. `Plan` or `Rollback`: starts the summary line
    /// (`Plan: 1 to create, ...`) and names the document in headings.
    pub title: String,
}

impl Default for RenderOptions {
    /// No colour, titled `Plan`.
    fn default() -> RenderOptions {
        RenderOptions { color: false, title: "Plan".to_string() }
    }
}

/// Renders `doc` in `format`.
pub fn render(doc: &PlanArtifact, format: Format, opts: &RenderOptions) -> String {
    match format {
        Format::Human => human::render(doc, opts),
        Format::Json => json::render(doc),
        Format::Markdown => markdown::render(doc, opts),
    }
}

/// The short form of a SHA-256 shown to humans (the first 12 hex digits).
pub(crate) fn short_sha(sha: &str) -> &str {
    match sha.char_indices().nth(12) {
        Some((i, _)) => &sha[..i],
        None => sha,
    }
}
