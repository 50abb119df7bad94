//! `--format json`: the plan document of SPEC section 6, exactly as saved by
//! `plan --out` (one document, pretty-printed, with a final newline).
//!
//! It lives here, trivial as it is, so that every format goes through
//! [`render`](super::render) and the JSON output cannot drift from the saved plan.

use crate::artifact::PlanArtifact;

/// The JSON document: exactly [`PlanArtifact::to_json`].
pub fn render(doc: &PlanArtifact) -> String {
    doc.to_json()
}
