//! Webhook signatures: Shopify's `X-Shopify-Hmac-Sha256` and Standard Webhooks'
//! `webhook-signature`. Both are HMAC-SHA256; comparisons are constant-time
//! (`Mac::verify_slice`). Keys live in [`SecretKey`], whose `Debug` never shows them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Largest clock skew accepted on `webhook-timestamp`, either direction (Standard Webhooks).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

/// Most entries read from one `webhook-signature` header.
const MAX_SIGNATURES: usize = 16;

/// An HMAC key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Vec<u8>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A Shopify app's client secret: its bytes are the key.
    pub fn shopify(secret: &str) -> Result<SecretKey, String> {
        let s = secret.trim();
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(SecretKey(s.as_bytes().to_vec()))
    }

    /// A Standard Webhooks secret: `whsec_` + base64 of the key. Without the prefix
    /// the value is base64-decoded too (as the reference libraries do); a value that
    /// is not valid base64 is used as raw key bytes.
    pub fn standard(secret: &str) -> Result<SecretKey, String> {
        let s = secret.trim();
        if let Some(b64) = s.strip_prefix("whsec_") {
            let key = B64.decode(b64).map_err(|_| "the part after `whsec_` is not valid base64".to_string())?;
            if key.is_empty() {
                return Err("the key after `whsec_` is empty".into());
            }
            return Ok(SecretKey(key));
        }
        if s.is_empty() {
            return Err("the secret is empty".into());
        }
        match B64.decode(s) {
            Ok(key) if !key.is_empty() => Ok(SecretKey(key)),
            _ => Ok(SecretKey(s.as_bytes().to_vec())),
        }
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Why a signature check failed (safe to show: never contains the secret or a signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} header is malformed")]
    Malformed(&'static str),
    #[error("signature does not match the body")]
    Mismatch,
    #[error("webhook-timestamp is {0} seconds away from now; more than 5 minutes is refused (replayed or clock skew)")]
    Expired(i64),
}

/// Shopify: `header` must be base64(HMAC-SHA256(body, secret)).
pub fn verify_shopify(key: &SecretKey, body: &[u8], header: Option<&str>) -> Result<(), SignatureError> {
    const H: &str = "X-Shopify-Hmac-Sha256";
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or(SignatureError::Missing(H))?;
    let tag = B64.decode(header).map_err(|_| SignatureError::Malformed(H))?;
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

/// Shopify: the header value for `body` (used by tests and the load generator).
pub fn sign_shopify(key: &SecretKey, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(body);
    B64.encode(mac.finalize().into_bytes())
}

/// The headers of a Standard Webhooks delivery.
#[derive(Debug, Clone, Copy)]
pub struct StandardHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Standard Webhooks: the timestamp must be within 5 minutes of `now` (unix seconds)
/// and ANY `v1,<base64>` entry of the space-separated signature list must equal
/// base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). Other versions are ignored.
/// Returns the verified `webhook-id`.
pub fn verify_standard<'a>(
    key: &SecretKey,
    h: StandardHeaders<'a>,
    body: &[u8],
    now: i64,
) -> Result<&'a str, SignatureError> {
    let id = h.id.filter(|v| !v.trim().is_empty()).ok_or(SignatureError::Missing("webhook-id"))?;
    let ts_text = h.timestamp.ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let sigs = h.signature.filter(|v| !v.trim().is_empty()).ok_or(SignatureError::Missing("webhook-signature"))?;
    let ts: i64 = ts_text.trim().parse().map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    let skew = now.saturating_sub(ts);
    if skew.saturating_abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Expired(skew));
    }
    let mut mac = key.mac();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut any_v1 = false;
    for entry in sigs.split(' ').filter(|e| !e.is_empty()).take(MAX_SIGNATURES) {
        let Some(("v1", sig)) = entry.split_once(',') else { continue };
        any_v1 = true;
        let Ok(tag) = B64.decode(sig) else { continue };
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(id);
        }
    }
    Err(if any_v1 { SignatureError::Mismatch } else { SignatureError::Malformed("webhook-signature") })
}

/// Standard Webhooks: the `webhook-signature` value (`v1,<base64>`) for a delivery.
pub fn sign_standard(key: &SecretKey, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = key.mac();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The Standard Webhooks specification's published test vector.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers<'a>(sig: &'a str, ts: &'a str) -> StandardHeaders<'a> {
        StandardHeaders { id: Some(SPEC_ID), timestamp: Some(ts), signature: Some(sig) }
    }

    #[test]
    fn standard_webhooks_published_vector() {
        let key = SecretKey::standard(SPEC_SECRET).unwrap();
        assert_eq!(sign_standard(&key, SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        let ts = SPEC_TS.to_string();
        assert_eq!(verify_standard(&key, headers(SPEC_SIG, &ts), SPEC_BODY, SPEC_TS), Ok(SPEC_ID));
        // The prefix is optional, as in the reference libraries.
        let bare = SecretKey::standard("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(bare, key);
        // Any one valid signature among several is enough; other versions are skipped.
        let multi = format!("v1,bm9wZQ== v1a,whatever {SPEC_SIG}");
        assert!(verify_standard(&key, headers(&multi, &ts), SPEC_BODY, SPEC_TS).is_ok());
    }

    #[test]
    fn standard_webhooks_rejections() {
        let key = SecretKey::standard(SPEC_SECRET).unwrap();
        let ts = SPEC_TS.to_string();
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(verify_standard(&key, headers(SPEC_SIG, &ts), tampered, SPEC_TS), Err(SignatureError::Mismatch));
        assert_eq!(
            verify_standard(&key, headers(SPEC_SIG, &ts), SPEC_BODY, SPEC_TS + 301),
            Err(SignatureError::Expired(301))
        );
        assert_eq!(
            verify_standard(&key, headers(SPEC_SIG, &ts), SPEC_BODY, SPEC_TS - 301),
            Err(SignatureError::Expired(-301))
        );
        assert!(verify_standard(&key, headers(SPEC_SIG, &ts), SPEC_BODY, SPEC_TS + 300).is_ok());
        assert_eq!(
            verify_standard(&key, headers("v2,abc", &ts), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Malformed("webhook-signature"))
        );
        assert_eq!(
            verify_standard(&key, headers(SPEC_SIG, "soon"), SPEC_BODY, SPEC_TS),
            Err(SignatureError::Malformed("webhook-timestamp"))
        );
        let none = StandardHeaders { id: Some(SPEC_ID), timestamp: Some(&ts), signature: None };
        assert_eq!(verify_standard(&key, none, SPEC_BODY, SPEC_TS), Err(SignatureError::Missing("webhook-signature")));
        let other = SecretKey::standard("whsec_c2VjcmV0").unwrap();
        assert_eq!(verify_standard(&other, headers(SPEC_SIG, &ts), SPEC_BODY, SPEC_TS), Err(SignatureError::Mismatch));
        assert!(SecretKey::standard("whsec_!!").is_err());
        // Not base64 without the prefix: the text itself is the key.
        assert_eq!(SecretKey::standard("plain text key!").unwrap().0, b"plain text key!");
    }

    #[test]
    fn shopify_known_answer() {
        // Computed independently:
        //   printf '%s' "$BODY" | openssl dgst -sha256 -hmac hush -binary | base64
        let body = br#"{"id":820982911946154508,"line_items":[{"sku":"IPOD2008PINK","quantity":1}]}"#;
        let key = SecretKey::shopify("hush").unwrap();
        let expected = "8RjDetzX3mDHEjPTQ6oH70CBykNK0pyCL/hrf4gfXcQ=";
        assert_eq!(sign_shopify(&key, body), expected);
        assert_eq!(verify_shopify(&key, body, Some(expected)), Ok(()));
        let mut tampered = body.to_vec();
        tampered[10] = b'9';
        assert_eq!(verify_shopify(&key, &tampered, Some(expected)), Err(SignatureError::Mismatch));
        assert_eq!(verify_shopify(&key, body, None), Err(SignatureError::Missing("X-Shopify-Hmac-Sha256")));
        assert_eq!(
            verify_shopify(&key, body, Some("not base64!")),
            Err(SignatureError::Malformed("X-Shopify-Hmac-Sha256"))
        );
        assert_eq!(verify_shopify(&key, body, Some("AAAA")), Err(SignatureError::Mismatch));
    }

    #[test]
    fn shopify_matches_python_hmac() {
        // A second, independent computation when python3 is around.
        let body = br#"{"inventory_item_id":1,"location_id":2,"available":3}"#;
        let key = SecretKey::shopify("s3cr3t-for-tests").unwrap();
        let Ok(out) = std::process::Command::new("python3")
            .args([
                "-c",
                "import hmac,hashlib,base64,sys; print(base64.b64encode(hmac.new(sys.argv[1].encode(), sys.argv[2].encode(), hashlib.sha256).digest()).decode())",
                "s3cr3t-for-tests",
                std::str::from_utf8(body).unwrap(),
            ])
            .output()
        else {
            eprintln!("note: python3 not found; skipped the cross-check against Python's hmac");
            return;
        };
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), sign_shopify(&key, body));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SecretKey::shopify("super-secret-value").unwrap();
        assert!(!format!("{key:?}").contains("super"));
    }
}
