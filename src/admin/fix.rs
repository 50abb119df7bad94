//! The two actions: set one key's quantity, and run a reconcile now.
//!
//! A fix is one conditional write, "set the key to NEW where it still holds the
//! value the page showed", made through the same journaled, audited write loop
//! as `apply` and `reconcile --fix` ([`crate::ops::apply::execute`]), under the
//! state lock, as an operation of kind `admin` (command `admin`) whose required
//! reason is stored with it. A conflict writes nothing: the key's page shows what
//! the target holds now, and the refusal is in the audit log too. While the freeze
//! is on in `read_only` mode nothing is written.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;

use super::Admin;
use super::auth::{Who, csrf_refused, read_form};
use super::pages::{KeyExtra, bad_request, blocking, failed, key_field, key_page};
use super::view::{Fields, key_url, shorten};
use crate::config::model::FreezeMode;
use crate::events::FreezeState;
use crate::ops::apply::{ApplyOptions, execute};
use crate::ops::plan::PlanError;
use crate::ops::reconcile::{ReconcileError, ReconcileOptions};
use crate::provider::{self, Write, WriteOutcome};
use crate::state::lock::LockError;
use crate::state::{Actor, NewOperation, OpKind};

/// Largest quantity the form accepts.
pub(crate) const MAX_QTY: i64 = 1_000_000_000;
/// Longest reason, in characters.
pub(crate) const MAX_REASON: usize = 500;
/// Largest |expected| accepted (a value the target can hold).
const MAX_EXPECTED: i64 = 1_000_000_000_000;
/// How long a fix waits for another operation's state lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// A checked fix form.
#[derive(Debug, Clone)]
struct FixForm {
    sku: String,
    location: String,
    /// The value the page showed (`None`: the key was absent).
    expected: Option<i64>,
    new: i64,
    reason: String,
}

fn parse(f: &Fields) -> Result<FixForm, String> {
    let sku = key_field(f, "sku")?;
    let location = key_field(f, "location")?;
    let expected =
        match f.get("expected").map(str::trim) {
            None => return Err("`expected` (the value the page showed) is missing.".into()),
            Some("") => None,
            Some(s) => Some(s.parse::<i64>().ok().filter(|v| v.abs() <= MAX_EXPECTED).ok_or_else(|| {
                format!("`expected` must be a whole number or empty (absent), not `{}`.", shorten(s))
            })?),
        };
    let new_text = f.get("new").map(str::trim).unwrap_or("");
    if new_text.is_empty() {
        return Err("Enter the new quantity.".into());
    }
    let new = new_text.parse::<i64>().ok().filter(|n| (0..=MAX_QTY).contains(n)).ok_or_else(|| {
        format!("The new quantity must be a whole number from 0 to {MAX_QTY}, not `{}`.", shorten(new_text))
    })?;
    let reason = f.get("reason").map(str::trim).unwrap_or("");
    if reason.is_empty() {
        return Err("Give a reason: it is kept in the audit log with the write.".into());
    }
    if reason.chars().count() > MAX_REASON {
        return Err(format!("The reason is longer than {MAX_REASON} characters."));
    }
    if reason.chars().any(char::is_control) {
        return Err("The reason holds control characters.".into());
    }
    Ok(FixForm { sku, location, expected, new, reason: reason.to_owned() })
}

/// What a fix did.
enum Done {
    /// The write was made (or found already made, or refused): its operation and outcome.
    Written { op_id: String, outcome: WriteOutcome },
    /// Nothing was attempted: the status and why.
    Refused(StatusCode, String),
}

/// Makes the write: lock, operation, reason, conditional write, audit.
fn write(a: &Admin, f: &FixForm) -> anyhow::Result<Done> {
    let plan = &a.plan;
    let queue = (a.queue)()?;
    let freeze = FreezeState::evaluate(plan.config.freeze.as_ref(), queue.manual_freeze()?, Timestamp::now())
        .map_err(anyhow::Error::msg)?;
    drop(queue);
    if freeze.frozen && freeze.mode == FreezeMode::ReadOnly {
        return Ok(Done::Refused(
            StatusCode::CONFLICT,
            "The freeze is on in read_only mode: nothing is written to the target until it ends. Nothing was written."
                .into(),
        ));
    }
    let actor = Actor::current("admin");
    let lock_store = a.open_state()?;
    let guard = match lock_store.lock(OpKind::Admin.as_str(), &actor, LOCK_WAIT) {
        Ok(g) => g,
        Err(LockError::Held(info)) => {
            return Ok(Done::Refused(
                StatusCode::CONFLICT,
                format!(
                    "Another operation ({}, by {}@{} since {}) holds the state lock; try again when it is done. Nothing was written.",
                    info.operation, info.user, info.host, info.started_at
                ),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let mut target = provider::open(&plan.config.target, &plan.dir)?;
    let mut state = lock_store.reopen()?;
    let run_id = uuid::Uuid::new_v4().to_string();
    let op = state.begin(
        OpKind::Admin,
        &NewOperation {
            plan_name: &plan.config.name,
            plan_sha256: &plan.sha256,
            artifact_sha256: &run_id,
            writes: 1,
            rollback_of: None,
        },
        &actor,
    )?;
    state.set_reason(&op.id, &f.reason)?;
    let w = Write { sku: f.sku.clone(), location: f.location.clone(), expected: f.expected, new: f.new };
    let opts = ApplyOptions { max_attempts: 3, ..ApplyOptions::new(actor) };
    let run = match execute(&mut state, &op.id, target.as_mut(), &[0], &|_| w.clone(), &opts) {
        Ok(r) => r,
        Err(e) => {
            // Journaled without an outcome: the next apply reads the key back and records it.
            state.mark_interrupted(&op.id)?;
            drop(guard);
            return Err(anyhow::Error::new(e).context(
                "the target could not be written; the write may or may not have landed: the key's page shows the value now",
            ));
        }
    };
    let counts = state.counts(&op.id)?;
    state.finish(&op.id, counts)?;
    let outcome = if let Some(c) = run.conflicts.first() {
        WriteOutcome::Conflict { found: c.found }
    } else if let Some(f) = run.failures.first() {
        WriteOutcome::Failed { retriable: false, message: f.message.clone() }
    } else if counts.applied > 0 {
        WriteOutcome::Applied
    } else {
        WriteOutcome::AlreadyApplied
    };
    if matches!(outcome, WriteOutcome::Applied | WriteOutcome::AlreadyApplied)
        && let Some(r) = state.last_reconcile()?
    {
        state.mark_drift_fixed(r.id, &f.sku, &f.location, &op.id)?;
    }
    drop(guard);
    Ok(Done::Written { op_id: op.id, outcome })
}

/// `POST /admin/key/fix` with `csrf`, `sku`, `location`, `expected`, `new`, `reason`.
pub(crate) async fn fix(
    State(admin): State<Arc<Admin>>,
    Extension(who): Extension<Who>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let fields = match read_form(body) {
        Ok(f) => f,
        Err((status, msg)) => {
            return admin.views.message(status, "Bad request", &msg, &who.layout(&admin.plan.config.name));
        }
    };
    if !who.csrf_ok(fields.get("csrf")) {
        return csrf_refused(&admin, &who);
    }
    let again = |status: StatusCode, error: String| KeyExtra {
        status: Some(status),
        error: Some(error),
        new: fields.get("new").map(str::to_owned),
        reason: fields.get("reason").map(str::to_owned),
        ..KeyExtra::default()
    };
    let form = match parse(&fields) {
        Ok(f) => f,
        Err(msg) => {
            return match (key_field(&fields, "sku"), key_field(&fields, "location")) {
                (Ok(sku), Ok(loc)) => key_page(&admin, &who, sku, loc, again(StatusCode::BAD_REQUEST, msg)).await,
                _ => bad_request(&admin, &who, &msg),
            };
        }
    };
    let a = admin.clone();
    let f = form.clone();
    let done = blocking(move || write(&a, &f)).await;
    let (sku, location) = (form.sku.clone(), form.location.clone());
    match done {
        Ok(Done::Written { op_id, outcome: WriteOutcome::Applied | WriteOutcome::AlreadyApplied }) => {
            Redirect::to(&format!("{}&op={op_id}", key_url(&sku, &location))).into_response()
        }
        Ok(Done::Written { outcome: WriteOutcome::Conflict { found }, .. }) => {
            let extra = KeyExtra {
                status: Some(StatusCode::CONFLICT),
                conflict: Some((form.expected, found)),
                new: Some(form.new.to_string()),
                reason: Some(form.reason.clone()),
                ..KeyExtra::default()
            };
            key_page(&admin, &who, sku, location, extra).await
        }
        Ok(Done::Written { op_id, outcome: WriteOutcome::Failed { message, .. } }) => {
            let mut extra = again(StatusCode::BAD_GATEWAY, format!("The target refused the write: {message}"));
            extra.done_op = Some(op_id);
            key_page(&admin, &who, sku, location, extra).await
        }
        Ok(Done::Refused(status, msg)) => key_page(&admin, &who, sku, location, again(status, msg)).await,
        Err(e) => key_page(&admin, &who, sku, location, again(StatusCode::BAD_GATEWAY, format!("{e:#}"))).await,
    }
}

/// `POST /admin/reconcile` with `csrf`: runs a reconcile now (recorded in the
/// state store like any other) and shows its drift list.
pub(crate) async fn reconcile(
    State(admin): State<Arc<Admin>>,
    Extension(who): Extension<Who>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let layout = who.layout(&admin.plan.config.name);
    let fields = match read_form(body) {
        Ok(f) => f,
        Err((status, msg)) => return admin.views.message(status, "Bad request", &msg, &layout),
    };
    if !who.csrf_ok(fields.get("csrf")) {
        return csrf_refused(&admin, &who);
    }
    if admin.reconciling.swap(true, Ordering::SeqCst) {
        return admin.views.message(
            StatusCode::CONFLICT,
            "Reconcile running",
            "A reconcile started from this page is still running; its drift list appears when it is done.",
            &layout,
        );
    }
    let a = admin.clone();
    let ran = blocking(move || {
        // The state store must exist for the run to be recorded.
        a.open_state()?;
        let opts = ReconcileOptions { state_dir: Some(&a.state_dir), fulfillment_failure_rate: None };
        Ok(crate::ops::reconcile::run(&a.plan, &opts))
    })
    .await;
    admin.reconciling.store(false, Ordering::SeqCst);
    match ran {
        Ok(Ok(_)) => Redirect::to("/admin/drift").into_response(),
        Ok(Err(ReconcileError::Plan(PlanError::Input(d)))) => admin.views.message(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Reconcile refused",
            &format!("The inputs have problems; nothing was compared.\n\n{d}"),
            &layout,
        ),
        Ok(Err(e)) => failed(&admin, &who, &anyhow::Error::new(e)),
        Err(e) => failed(&admin, &who, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(s: &str) -> Result<FixForm, String> {
        parse(&Fields::parse(s.as_bytes()).unwrap())
    }

    #[test]
    fn the_fix_form_is_checked() {
        let f = form("sku=A&location=L&expected=5&new=7&reason=count+corrected").unwrap();
        assert_eq!((f.expected, f.new, f.reason.as_str()), (Some(5), 7, "count corrected"));
        assert_eq!(form("sku=A&location=L&expected=&new=0&reason=x").unwrap().expected, None);
        for (bad, says) in [
            ("location=L&expected=5&new=7&reason=x", "`sku` is missing"),
            ("sku=&location=L&expected=5&new=7&reason=x", "`sku` is empty"),
            ("sku=A&location=L&new=7&reason=x", "`expected`"),
            ("sku=A&location=L&expected=five&new=7&reason=x", "`expected` must be"),
            ("sku=A&location=L&expected=5&new=-1&reason=x", "from 0 to"),
            ("sku=A&location=L&expected=5&new=1.5&reason=x", "from 0 to"),
            ("sku=A&location=L&expected=5&new=99999999999999999999&reason=x", "from 0 to"),
            ("sku=A&location=L&expected=5&new=&reason=x", "new quantity"),
            ("sku=A&location=L&expected=5&new=7&reason=+++", "Give a reason"),
            ("sku=A&location=L&expected=5&new=7&reason=a%0Ab", "control"),
            ("sku=A%00&location=L&expected=5&new=7&reason=x", "control"),
        ] {
            let e = form(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let long = "x".repeat(MAX_REASON + 1);
        assert!(form(&format!("sku=A&location=L&expected=5&new=7&reason={long}")).unwrap_err().contains("longer"));
    }
}
