//! Where output goes: results to stdout, everything else to stderr, colour only
//! on a terminal and never with `--no-color` or `NO_COLOR`. A closed pipe
//! (`stockshift plan ... | head`) is not an error.

use std::io::{IsTerminal, Write};

use super::GlobalArgs;
use crate::diag::{Diagnostics, Severity};

/// Output settings of one invocation.
#[derive(Debug, Clone)]
pub struct Output {
    color: bool,
    err_color: bool,
    quiet: bool,
    pub verbose: u8,
}

fn no_color_env() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Output {
    pub fn new(g: &GlobalArgs) -> Self {
        let allowed = !g.no_color && !no_color_env();
        Output {
            color: allowed && std::io::stdout().is_terminal(),
            err_color: allowed && std::io::stderr().is_terminal(),
            quiet: g.quiet,
            verbose: g.verbose,
        }
    }

    /// Whether stdout gets colour.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Prints a result on stdout.
    pub fn result(&self, text: &str) {
        let mut so = std::io::stdout().lock();
        let _ = so.write_all(text.as_bytes()).and_then(|_| so.flush());
    }

    /// Prints a remark on stderr (suppressed by `--quiet`).
    pub fn note(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// Prints diagnostics on stderr; warnings are suppressed by `--quiet`.
    pub fn diagnostics(&self, d: &Diagnostics) {
        let mut se = std::io::stderr().lock();
        for item in d.iter() {
            if self.quiet && item.severity == Severity::Warning {
                continue;
            }
            let text = item.to_string();
            let text = if self.err_color {
                let (label, code) = match item.severity {
                    Severity::Error => ("error:", "\x1b[1;31m"),
                    Severity::Warning => ("warning:", "\x1b[1;33m"),
                };
                text.replacen(label, &format!("{code}{label}\x1b[0m"), 1)
            } else {
                text
            };
            let _ = writeln!(se, "{text}");
        }
    }

    /// Prints an error with its cause chain on stderr.
    pub fn error(&self, e: &anyhow::Error) {
        let prefix = if self.err_color { "\x1b[1;31merror:\x1b[0m" } else { "error:" };
        let _ = writeln!(std::io::stderr().lock(), "{prefix} {e:#}");
    }
}
