//! Idempotency keys for `@idempotent(key:)`.
//!
//! A key is derived, never random: SHA-256 of the operation id (apply, replay,
//! rollback ...), the mutation's purpose, its exact variables, a *round* (the
//! resend number within one batch after a stale compare) and an *occurrence*
//! (how many times the same variables were already sent to completion by this
//! process in this operation). So:
//!
//! * a request retried after a timeout, a 5xx or a killed process carries the
//!   same key, and Shopify answers it with the first attempt's result instead of
//!   applying it twice;
//! * a resend of the rest of a batch after a stale row has other variables, so
//!   another key;
//! * the same variables sent again *on purpose* later in the same operation
//!   (a replay that sets A to 6, to 5, then to 6 again) get a new occurrence,
//!   so Shopify does not mistake them for a retry.
//!
//! The key is shaped like a UUID, the form Shopify recommends.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// Derives one key. Pure: the same inputs always give the same key.
pub fn derive(op_id: &str, purpose: &str, occurrence: u32, round: u32, payload: &str) -> String {
    let mut h = Sha256::new();
    for part in ["stockshift/shopify/v1", op_id, purpose] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(occurrence.to_le_bytes());
    h.update(round.to_le_bytes());
    h.update((payload.len() as u64).to_le_bytes());
    h.update(payload.as_bytes());
    let d = hex::encode(&h.finalize()[..16]);
    format!("{}-{}-{}-{}-{}", &d[..8], &d[8..12], &d[12..16], &d[16..20], &d[20..32])
}

/// The keys of one provider instance: the bound operation and the occurrences
/// of payloads it completed.
#[derive(Debug)]
pub struct Keys {
    op_id: String,
    completed: HashMap<[u8; 32], u32>,
}

impl Default for Keys {
    fn default() -> Self {
        // Writes made without an operation (a library caller) still get keys no
        // other instance shares.
        Keys { op_id: format!("unbound-{}", uuid::Uuid::new_v4()), completed: HashMap::new() }
    }
}

impl Keys {
    /// Binds the operation the next writes belong to.
    pub fn bind(&mut self, op_id: &str) {
        if self.op_id != op_id {
            self.op_id = op_id.to_owned();
            self.completed.clear();
        }
    }

    pub fn op_id(&self) -> &str {
        &self.op_id
    }

    fn digest(purpose: &str, payload: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(payload.as_bytes());
        h.finalize().into()
    }

    /// The key for `payload` in resend `round` of the current attempt.
    pub fn key(&self, purpose: &str, round: u32, payload: &str) -> String {
        let occurrence = self.completed.get(&Self::digest(purpose, payload)).copied().unwrap_or(0);
        derive(&self.op_id, purpose, occurrence, round, payload)
    }

    /// Records that a batch first sent with `payload` finished (with outcomes,
    /// not an error): sending the same payload again is a new request.
    pub fn complete(&mut self, purpose: &str, payload: &str) {
        *self.completed.entry(Self::digest(purpose, payload)).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_uuid_shaped() {
        let a = derive("op-1", "set", 0, 0, "{\"q\":1}");
        assert_eq!(a, derive("op-1", "set", 0, 0, "{\"q\":1}"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = derive("op-1", "set", 0, 0, "p");
        for other in [
            derive("op-2", "set", 0, 0, "p"),
            derive("op-1", "activate", 0, 0, "p"),
            derive("op-1", "set", 1, 0, "p"),
            derive("op-1", "set", 0, 1, "p"),
            derive("op-1", "set", 0, 0, "q"),
            // Lengths are part of the hash: moving a boundary is another key.
            derive("op-1s", "et", 0, 0, "p"),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_retry_reuses_the_key_and_a_completed_payload_gets_a_new_one() {
        let mut k = Keys::default();
        k.bind("apply-7");
        let first = k.key("set", 0, "payload");
        assert_eq!(k.key("set", 0, "payload"), first, "a retry carries the same key");
        k.complete("set", "payload");
        let again = k.key("set", 0, "payload");
        assert_ne!(again, first, "the same variables sent again on purpose are a new request");
        // Another process resuming the same operation derives the same first key.
        let mut resumed = Keys::default();
        resumed.bind("apply-7");
        assert_eq!(resumed.key("set", 0, "payload"), first);
        // Unbound instances never share keys.
        assert_ne!(Keys::default().key("set", 0, "p"), Keys::default().key("set", 0, "p"));
    }
}
