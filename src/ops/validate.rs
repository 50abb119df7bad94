//! `validate`: besides the plan itself, check the rows of every input that is a
//! plain file (CSV) the way `plan` would, without reading any other provider.

use crate::config::check::Plan;
use crate::config::model::ProviderConfig;
use crate::diag::Diagnostics;
use crate::diff::engine::{Engine, Side};
use crate::provider::{Provider, RowSink, csv::CsvProvider};

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

/// Checks the rows of CSV inputs; returns the problems and how many rows were read.
pub fn check_inputs(plan: &Plan) -> (Diagnostics, u64) {
    let mut engine = Engine::new(&plan.mapping);
    let mut rows = 0;
    for (side, cfg) in [(Side::Target, &plan.config.target), (Side::Source, &plan.config.source)] {
        if let ProviderConfig::Csv(c) = cfg {
            let mut p = CsvProvider::new(plan.resolve(&c.path), c.columns.clone());
            match p.read(&mut Feed { engine: &mut engine, side }) {
                Ok(info) => rows += info.rows,
                Err(e) => engine.issue(side, 0, 0, e.to_string(), "Check that the file exists and is readable.".into()),
            }
        }
    }
    let (issues, total) = engine.into_issues();
    (super::plan::issues_to_diags(plan, issues, total), rows)
}
