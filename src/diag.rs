//! Diagnostics: problems found in a plan or its input files, collected rather than
//! thrown, so that one run names every one of them.
//!
//! Each diagnostic is printed as `file:line:column: error: summary`, followed by a
//! `help:` sentence that says how to fix it.

use std::fmt;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Reported, but does not stop the command.
    Warning,
    /// Stops the command before anything is written.
    Error,
}

/// One problem, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// File as the user named it (or as resolved from the plan's folder).
    pub file: String,
    /// 1-based line; 0 when the problem is about the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub col: usize,
    /// Short title, no trailing period.
    pub summary: String,
    /// Full sentences saying what to do.
    pub help: String,
}

impl Diagnostic {
    pub fn error(file: impl Into<String>, line: usize, col: usize, summary: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            file: file.into(),
            line,
            col,
            summary: summary.into(),
            help: String::new(),
        }
    }

    pub fn warning(file: impl Into<String>, line: usize, col: usize, summary: impl Into<String>) -> Self {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(file, line, col, summary) }
    }

    /// Adds the sentence that says how to fix the problem.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = help.into();
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match (self.line, self.col) {
            (0, _) => write!(f, "{}: {sev}: {}", self.file, self.summary)?,
            (l, 0) => write!(f, "{}:{l}: {sev}: {}", self.file, self.summary)?,
            (l, c) => write!(f, "{}:{l}:{c}: {sev}: {}", self.file, self.summary)?,
        }
        if !self.help.is_empty() {
            write!(f, "\n  help: {}", self.help)?;
        }
        Ok(())
    }
}

/// Diagnostics collected by one command.
#[derive(Debug, Default, Clone)]
pub struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.items.extend(other.items);
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.items.iter().filter(|d| d.severity == Severity::Error).count()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    /// Sorts by file, then position, keeping the order of equal positions.
    pub fn sort(&mut self) {
        self.items.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.items
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics { items: vec![d] }
    }
}

/// An error made of diagnostics; commands print them all and exit 1.
#[derive(Debug)]
pub struct DiagnosticsError(pub Diagnostics);

impl fmt::Display for DiagnosticsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.0.iter() {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DiagnosticsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_position_summary_and_help() {
        let d = Diagnostic::error("plans/x.yaml", 3, 5, "Unknown key `colour`").help("Remove it.");
        assert_eq!(d.to_string(), "plans/x.yaml:3:5: error: Unknown key `colour`\n  help: Remove it.");
        let w = Diagnostic::warning("a.csv", 0, 0, "Empty file");
        assert_eq!(w.to_string(), "a.csv: warning: Empty file");
    }

    #[test]
    fn counts_only_errors() {
        let mut ds = Diagnostics::new();
        ds.push(Diagnostic::warning("f", 1, 1, "w"));
        assert!(!ds.has_errors());
        ds.push(Diagnostic::error("f", 2, 1, "e"));
        assert_eq!(ds.error_count(), 1);
    }
}
