//! `plan`: read source and target, map, diff, and build the plan document.

use crate::artifact::{FORMAT_VERSION, InputDigest, PlanArtifact, PlanMeta, StateRef};
use crate::config::check::Plan;
use crate::config::model::ProviderConfig;
use crate::diag::{Diagnostic, Diagnostics};
use crate::diff::engine::{Issue, Reader, Side, plan_parallel};
use crate::ops::snapshot::SnapshotTee;
use crate::provider::{self, ProviderError, ReadInfo, RowSink};

/// Most parts an input is read in at once.
const MAX_READ_PARTS: usize = 4;

/// Why planning failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Input rows are wrong; every one is named.
    #[error("{0}")]
    Input(crate::diag::DiagnosticsError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// Where rows of a provider come from, for messages: `plans/data/erp.csv`, or a
/// database file with its table.
pub fn input_label(plan: &Plan, cfg: &ProviderConfig) -> (String, bool) {
    match cfg {
        ProviderConfig::Csv(c) => (plan.shown(&c.path), true),
        ProviderConfig::Sqlite(c) => (format!("{} (table {})", plan.shown(&c.path), c.table), false),
        ProviderConfig::Postgres(c) => (format!("postgres (table {})", c.table), false),
        ProviderConfig::Shopify(c) => (format!("shopify {}", c.shop), false),
        ProviderConfig::Magento(c) => (format!("magento {}", c.base_url), false),
        ProviderConfig::Http(c) => (format!("http {} ({})", c.base_url, c.manifest), false),
    }
}

fn path_of(cfg: &ProviderConfig) -> &str {
    match cfg {
        ProviderConfig::Csv(c) => &c.path,
        ProviderConfig::Sqlite(c) => &c.path,
        ProviderConfig::Postgres(_)
        | ProviderConfig::Shopify(_)
        | ProviderConfig::Magento(_)
        | ProviderConfig::Http(_) => "",
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

/// Reads both sides and computes the plan document. The target and the source
/// are read at the same time, on two threads (see `diff::engine`).
pub fn run(plan: &Plan, state: Option<StateRef>) -> Result<PlanArtifact, PlanError> {
    // The target is read in parts where its provider can split its read (a database
    // scanned by rowid ranges), so that no single reader thread is the bottleneck.
    let parts = std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_READ_PARTS);
    let target: Vec<Reader<'_, ProviderError>> =
        match provider::open(&plan.config.target, &plan.dir)?.read_parts(parts)? {
            Some(parts) => parts.into_iter().map(|p| p as Reader<'_, ProviderError>).collect(),
            None => vec![Box::new(|sink: &mut dyn RowSink| provider::open(&plan.config.target, &plan.dir)?.read(sink))],
        };
    let snapshot = std::sync::Mutex::new(None);
    let source: Reader<'_, ProviderError> = Box::new(|sink: &mut dyn RowSink| {
        let mut source = provider::open(&plan.config.source, &plan.dir)?;
        if !is_file_backed(&plan.config.source) {
            let mut tee = SnapshotTee::new(sink, &plan.state_dir(None).join("snapshots"))?;
            let info = source.read(&mut tee)?;
            let (path, sha256) = tee.finish()?;
            *snapshot.lock().expect("not poisoned") = Some(path.display().to_string());
            return Ok(ReadInfo { sha256: Some(sha256), ..info });
        }
        let mut info = source.read(sink)?;
        // A database-backed source has no digest of its own: hash its file here, on
        // the source's thread, so a changed source makes a saved plan stale.
        info.sha256 = info.sha256.or_else(|| file_sha(plan, &plan.config.source));
        Ok(info)
    });
    let planned = plan_parallel(&plan.mapping, target, vec![source])?;

    let mut inputs = vec![];
    let digest = |role: &str, cfg: &ProviderConfig, sha: Option<String>| -> Option<InputDigest> {
        sha.map(|sha256| InputDigest { role: role.into(), path: path_of(cfg).to_owned(), sha256 })
    };
    match snapshot.into_inner().expect("not poisoned") {
        // A database or platform source: its snapshot file stands for it.
        Some(path) => {
            inputs.extend(planned.source.sha256.map(|sha256| InputDigest { role: "source".into(), path, sha256 }))
        }
        None => inputs.extend(digest("source", &plan.config.source, planned.source.sha256)),
    }
    inputs.extend(digest("target", &plan.config.target, planned.target.sha256));
    inputs.extend(plan.inputs.iter().cloned());

    let (mut diff, _stats) = planned.outcome.map_err(|(issues, total)| {
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

/// Whether a provider reads a file that apply can copy as the source snapshot.
fn is_file_backed(cfg: &ProviderConfig) -> bool {
    matches!(cfg, ProviderConfig::Csv(_) | ProviderConfig::Sqlite(_))
}

/// SHA-256 of a database-backed source file, so a changed source makes a saved plan stale.
fn file_sha(plan: &Plan, cfg: &ProviderConfig) -> Option<String> {
    let ProviderConfig::Sqlite(c) = cfg else { return None };
    crate::artifact::sha256_file(&plan.resolve(&c.path))
}
