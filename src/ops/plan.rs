//! `plan`: read source and target, map, diff, and build the plan document.

use crate::artifact::{FORMAT_VERSION, InputDigest, PlanArtifact, PlanMeta, StateRef};
use crate::config::check::Plan;
use crate::config::model::ProviderConfig;
use crate::diag::{Diagnostic, Diagnostics};
use crate::diff::engine::{Engine, Issue, Side};
use crate::provider::{self, ProviderError, RowSink};

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Input rows are wrong; every one is named.
    #[error("{0}")]
    Input(crate::diag::DiagnosticsError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

struct Feed<'a, 'm> {
    engine: &'a mut Engine<'m>,
    side: Side,
}

impl RowSink for Feed<'_, '_> {
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        match self.side {
            Side::Source => self.engine.add_source(sku, location, qty, line),
            Side::Target => self.engine.add_target(sku, location, qty, line),
        }
    }
    fn problem(&mut self, line: u64, col: usize, summary: String, help: String) {
        self.engine.issue(self.side, line, col, summary, help);
    }
}

/// Where rows of a provider come from, for messages: `plans/data/erp.csv`, or a
/// database file with its table.
pub fn input_label(plan: &Plan, cfg: &ProviderConfig) -> (String, bool) {
    match cfg {
        ProviderConfig::Csv(c) => (plan.shown(&c.path), true),
        ProviderConfig::Sqlite(c) => (format!("{} (table {})", plan.shown(&c.path), c.table), false),
    }
}

fn path_of(cfg: &ProviderConfig) -> &str {
    match cfg {
        ProviderConfig::Csv(c) => &c.path,
        ProviderConfig::Sqlite(c) => &c.path,
    }
}

/// Turns input issues into diagnostics naming each file and line.
pub fn issues_to_diags(plan: &Plan, issues: Vec<Issue>, total: u64) -> Diagnostics {
    let mut diags = Diagnostics::new();
    let kept = issues.len() as u64;
    for i in issues {
        let cfg = match i.side {
            Side::Source => &plan.config.source,
            Side::Target => &plan.config.target,
        };
        let (label, lines) = input_label(plan, cfg);
        let d = if lines {
            Diagnostic::error(label, i.line as usize, i.col, i.summary)
        } else {
            Diagnostic::error(format!("{label}, rowid {}", i.line), 0, 0, i.summary)
        };
        diags.push(d.help(i.help));
    }
    if total > kept {
        diags.push(
            Diagnostic::error(&plan.file, 0, 0, format!("{} more input problem(s) not shown", total - kept))
                .help("Fix the ones above and run again to see the rest."),
        );
    }
    diags
}

/// Reads both sides and computes the plan document.
pub fn run(plan: &Plan, state: Option<StateRef>) -> Result<PlanArtifact, PlanError> {
    let mut engine = Engine::new(&plan.mapping);
    let mut target = provider::open(&plan.config.target, &plan.dir);
    let tinfo = target.read(&mut Feed { engine: &mut engine, side: Side::Target })?;
    let mut source = provider::open(&plan.config.source, &plan.dir);
    let sinfo = source.read(&mut Feed { engine: &mut engine, side: Side::Source })?;

    let mut inputs = vec![];
    let digest = |role: &str, cfg: &ProviderConfig, sha: Option<String>| -> Option<InputDigest> {
        sha.map(|sha256| InputDigest { role: role.into(), path: path_of(cfg).to_owned(), sha256 })
    };
    inputs.extend(digest("source", &plan.config.source, sinfo.sha256.or_else(|| file_sha(plan, &plan.config.source))));
    inputs.extend(digest("target", &plan.config.target, tinfo.sha256));
    inputs.extend(plan.inputs.iter().cloned());

    let (mut diff, _stats) = engine.finish().map_err(|(issues, total)| {
        PlanError::Input(crate::diag::DiagnosticsError(issues_to_diags(plan, issues, total)))
    })?;
    for w in plan.warnings.iter() {
        diff.warnings.insert(0, format!("{}:{}: {}", w.file, w.line, w.summary));
    }
    Ok(PlanArtifact {
        format_version: FORMAT_VERSION,
        plan: PlanMeta { name: plan.config.name.clone(), config_sha256: plan.sha256.clone(), path: plan.file.clone() },
        diff,
        inputs,
        state,
        rollback_of: None,
        file_sha256: None,
        file_path: None,
    })
}

/// SHA-256 of a database-backed source file, so a changed source makes a saved plan stale.
fn file_sha(plan: &Plan, cfg: &ProviderConfig) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let ProviderConfig::Sqlite(c) = cfg else { return None };
    let mut f = std::fs::File::open(plan.resolve(&c.path)).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}
