//! One GraphQL request to the Admin API, paced and retried.
//!
//! [`Client::execute`] waits for the cost bucket ([`super::throttle`]), posts the
//! document with the access token in `X-Shopify-Access-Token`, reads
//! `extensions.cost`, and retries what is transient: `THROTTLED` (as a GraphQL
//! error with status 200 or as a 429), other 429s, 408, 5xx and network
//! errors, with capped, jittered exponential backoff that honours `Retry-After`.
//! Anything else is returned as an error right away. The token is sent in that
//! header only and is scrubbed from every message built from a response.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::throttle::{Bucket, ThrottleStatus};
use crate::provider::ProviderError;
use crate::provider::net;

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per request for network errors, 429 and 5xx.
    pub attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// `THROTTLED` answers tolerated per request (each one waits for the bucket).
    pub throttled: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            throttled: 30,
        }
    }
}

/// Counters of what the client did, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub requests: u64,
    pub throttled: u64,
    pub retries: u64,
}

/// A request: a named document, its variables, and an estimate of its requested
/// cost used until Shopify has reported the real one for this name.
pub struct Request<'a> {
    pub name: &'static str,
    pub query: &'a str,
    pub variables: Value,
    pub est_cost: f64,
}

pub struct Client {
    http: reqwest::blocking::Client,
    download: Option<reqwest::blocking::Client>,
    url: String,
    token: String,
    token_env: String,
    bucket: Bucket,
    /// Requested cost Shopify last reported per document (name and estimate:
    /// generated documents of another size have another estimate).
    costs: HashMap<(&'static str, u64), f64>,
    pub retry: RetryPolicy,
    pub stats: Stats,
}

/// What one HTTP exchange came to.
enum Attempt {
    Data(Value),
    Throttled,
    Transient { message: String, retry_after: Option<Duration> },
}

impl Client {
    pub fn new(url: String, token: String, token_env: String) -> Result<Client, ProviderError> {
        Ok(Client {
            http: net::client(Duration::from_secs(60))?,
            download: None,
            url,
            token,
            token_env,
            bucket: Bucket::default(),
            costs: HashMap::new(),
            retry: RetryPolicy::default(),
            stats: Stats::default(),
        })
    }

    /// The last throttle status Shopify reported.
    pub fn throttle_status(&self) -> Option<ThrottleStatus> {
        self.bucket.status()
    }

    /// Replaces the token with a marker in a message built from a response.
    pub fn scrub(&self, s: &str) -> String {
        if self.token.is_empty() { s.to_owned() } else { s.replace(&self.token, "[redacted]") }
    }

    fn err(&self, message: String) -> ProviderError {
        ProviderError::Invalid { what: "shopify".into(), message: self.scrub(&message) }
    }

    /// Runs one document and returns its `data`.
    pub fn execute(&mut self, req: &Request<'_>) -> Result<Value, ProviderError> {
        let body = serde_json::to_vec(&json!({ "query": req.query, "variables": req.variables }))
            .map_err(|e| self.err(format!("cannot encode the request: {e}")))?;
        let mut transient = 0;
        let mut throttled = 0;
        loop {
            let cost = self.costs.get(&(req.name, req.est_cost.to_bits())).copied().unwrap_or(req.est_cost);
            let wait = self.bucket.delay(cost, Instant::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            self.bucket.spend(cost, Instant::now());
            self.stats.requests += 1;
            match self.attempt(req, &body)? {
                Attempt::Data(data) => return Ok(data),
                Attempt::Throttled => {
                    throttled += 1;
                    self.stats.throttled += 1;
                    if throttled > self.retry.throttled {
                        return Err(ProviderError::Unavailable {
                            what: "shopify".into(),
                            message: format!("`{}` was still throttled after {throttled} tries", req.name),
                        });
                    }
                    if self.bucket.status().is_none() {
                        std::thread::sleep(self.backoff(throttled, None));
                    }
                }
                Attempt::Transient { message, retry_after } => {
                    transient += 1;
                    if transient >= self.retry.attempts {
                        return Err(ProviderError::Unavailable {
                            what: "shopify".into(),
                            message: format!("`{}` failed {transient} times; last: {}", req.name, self.scrub(&message)),
                        });
                    }
                    self.stats.retries += 1;
                    std::thread::sleep(self.backoff(transient, retry_after));
                }
            }
        }
    }

    /// Full-jitter exponential backoff, at least `retry_after` (capped at a minute).
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self.retry.base_backoff.saturating_mul(1 << attempt.min(16)).min(self.retry.max_backoff);
        let jittered = ceiling.mul_f64(0.5 + 0.5 * jitter());
        jittered.max(retry_after.unwrap_or_default().min(Duration::from_secs(60)))
    }

    fn attempt(&mut self, req: &Request<'_>, body: &[u8]) -> Result<Attempt, ProviderError> {
        let sent = self
            .http
            .post(&self.url)
            .header("X-Shopify-Access-Token", &self.token)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .body(body.to_vec())
            .send();
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Ok(Attempt::Transient {
                    message: format!("request failed: {}", error_chain(&e)),
                    retry_after: None,
                });
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let bytes = match resp.bytes() {
            Ok(b) => b,
            Err(e) => {
                return Ok(Attempt::Transient {
                    message: format!("reading the response failed: {}", error_chain(&e)),
                    retry_after,
                });
            }
        };
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok().filter(Value::is_object);
        if let Some(v) = &parsed
            && let Some(cost) = v.get("extensions").and_then(|e| e.get("cost"))
        {
            if let Some(s) = ThrottleStatus::from_cost(cost) {
                self.bucket.observe(s, Instant::now());
            }
            if let Some(c) = cost.get("requestedQueryCost").and_then(Value::as_f64).filter(|c| c.is_finite()) {
                self.costs.insert((req.name, req.est_cost.to_bits()), c);
            }
        }
        let errors: Vec<&Value> = parsed
            .as_ref()
            .and_then(|v| v.get("errors"))
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let code_of =
            |e: &Value| e.get("extensions").and_then(|x| x.get("code")).and_then(Value::as_str).map(str::to_owned);
        if errors.iter().any(|e| code_of(e).as_deref() == Some("THROTTLED")) {
            return Ok(Attempt::Throttled);
        }
        if net::retriable_status(status) {
            return Ok(Attempt::Transient { message: format!("HTTP {status}: {}", snippet(&bytes)), retry_after });
        }
        if status == 401 || status == 403 {
            return Err(self.err(format!(
                "Shopify refused the access token (HTTP {status}); check the token in `{}` and its scopes (read_inventory, write_inventory, read_products, read_locations)",
                self.token_env
            )));
        }
        if !(200..300).contains(&status) {
            return Err(self.err(format!("HTTP {status} from {}: {}", self.url, snippet(&bytes))));
        }
        let Some(v) = &parsed else {
            // A 2xx that is not a JSON object: a proxy's page or a cut-off body.
            return Ok(Attempt::Transient {
                message: format!("the response is not a JSON object: {}", snippet(&bytes)),
                retry_after,
            });
        };
        if !errors.is_empty() {
            if errors.iter().any(|e| code_of(e).as_deref() == Some("INTERNAL_SERVER_ERROR")) {
                return Ok(Attempt::Transient { message: graphql_errors(&errors), retry_after });
            }
            return Err(self.err(format!("`{}` was refused: {}", req.name, graphql_errors(&errors))));
        }
        if let Some(e) = v.get("errors").filter(|e| !e.is_null() && !e.is_array()) {
            // REST-style `{"errors": "..."}`.
            return Err(self.err(format!("`{}` was refused: {}", req.name, truncate(&e.to_string(), 300))));
        }
        match v.get("data") {
            Some(d) if d.is_object() => Ok(Attempt::Data(d.clone())),
            _ => Err(self.err(format!("`{}`: the response has no `data` object", req.name))),
        }
    }

    /// Streams a file Shopify hosts (a bulk operation's JSONL). The URL is
    /// pre-signed storage: the access token is *not* sent there.
    pub fn download(&mut self, url: &str) -> Result<Box<dyn Read>, ProviderError> {
        if self.download.is_none() {
            self.download = Some(net::client(Duration::from_secs(3600))?);
        }
        let client = self.download.as_ref().expect("set above");
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts {
            match client.get(url).send() {
                Ok(r) if r.status().is_success() => return Ok(Box::new(r)),
                Ok(r) if net::retriable_status(r.status().as_u16()) => last = format!("HTTP {}", r.status().as_u16()),
                Ok(r) => {
                    return Err(self.err(format!("downloading the bulk result failed: HTTP {}", r.status().as_u16())));
                }
                Err(e) => last = error_chain(&e),
            }
            std::thread::sleep(self.backoff(attempt, None));
        }
        Err(ProviderError::Unavailable {
            what: "shopify".into(),
            message: format!("downloading the bulk result failed: {}", self.scrub(&last)),
        })
    }
}

fn graphql_errors(errors: &[&Value]) -> String {
    let mut parts: Vec<String> = errors
        .iter()
        .take(5)
        .map(|e| {
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("(no message)");
            match e.get("extensions").and_then(|x| x.get("code")).and_then(Value::as_str) {
                Some(code) => format!("{} ({code})", truncate(msg, 300)),
                None => truncate(msg, 300),
            }
        })
        .collect();
    if errors.len() > 5 {
        parts.push(format!("and {} more", errors.len() - 5));
    }
    parts.join("; ")
}

fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(400)]);
    let s: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if s.trim().is_empty() { "(empty body)".into() } else { truncate(s.trim(), 300) }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A number in [0, 1) that differs from call to call (no RNG crate needed).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_carry_the_token() {
        let c =
            Client::new("http://127.0.0.1:9/graphql.json".into(), "shpat_secret123".into(), "TOKEN".into()).unwrap();
        assert_eq!(c.scrub("echo shpat_secret123 back"), "echo [redacted] back");
        assert!(!c.err("x shpat_secret123".into()).to_string().contains("secret123"));
    }

    #[test]
    fn snippets_are_short_and_printable() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"a\x1b[31mb"), "a [31mb");
        assert!(snippet(&[b'x'; 5000]).chars().count() <= 301);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let c = Client::new("http://127.0.0.1:9/".into(), "t".into(), "T".into()).unwrap();
        for attempt in 1..20 {
            assert!(c.backoff(attempt, None) <= c.retry.max_backoff);
        }
        assert!(c.backoff(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert!(c.backoff(1, Some(Duration::from_secs(3600))) <= Duration::from_secs(60));
    }
}
