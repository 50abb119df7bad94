//! Counters the write paths bump. Without an installed recorder (any command
//! but `serve`) these are no-ops; `serve` exposes them on `/metrics`.

use crate::provider::WriteOutcome;

/// Counts write outcomes in `stockshift_writes_total{result}`.
pub fn writes(outcomes: &[WriteOutcome]) {
    let (mut applied, mut already, mut conflict, mut failed) = (0u64, 0u64, 0u64, 0u64);
    for o in outcomes {
        match o {
            WriteOutcome::Applied => applied += 1,
            WriteOutcome::AlreadyApplied => already += 1,
            WriteOutcome::Conflict { .. } => conflict += 1,
            WriteOutcome::Failed { .. } => failed += 1,
        }
    }
    for (result, n) in [("applied", applied), ("already_applied", already), ("conflict", conflict), ("failed", failed)]
    {
        if n > 0 {
            metrics::counter!("stockshift_writes_total", "result" => result).increment(n);
        }
    }
}
