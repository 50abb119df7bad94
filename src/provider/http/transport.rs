//! One HTTP conversation with a platform: the credential header, pacing to a
//! request rate, waiting out throttling (429 with `Retry-After` or a
//! platform-specific reset header) and retrying safe requests after transient
//! failures. Shared by the `http` and `magento` providers.
//!
//! Only requests marked idempotent (reads) are retried after a 5xx or a network
//! error. A write that fails that way is reported as [`ProviderError::Unavailable`]
//! and left to the apply loop, which retries the whole read-compare-write, so the
//! compare runs again. A 429 means the request was not processed, so it is
//! retried for every method. The credential never appears in an error: it is
//! only sent as a header, and any echo of it in a response is masked.

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::provider::ProviderError;
use crate::provider::net;

/// Largest response body read (bigger ones are cut, and fail to parse).
const MAX_BODY: u64 = 256 << 20;

/// Where the wait after a 429 comes from.
#[derive(Debug, Clone)]
pub struct RetryAfter {
    /// Header holding the wait (`Retry-After` when `None`).
    pub header: Option<String>,
    /// Whether that header counts milliseconds (else seconds).
    pub millis: bool,
}

/// How a transport behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shown in errors: `magento https://shop.example.com/rest`.
    pub what: String,
    /// The credential header (name, value). The value is secret.
    pub auth: Option<(String, String)>,
    /// The raw secret, masked wherever it might be echoed.
    pub secret: Option<String>,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Requests per second, when the platform has a fixed rate.
    pub requests_per_sec: Option<f64>,
    pub retry_after: RetryAfter,
    /// Bound on one whole request.
    pub timeout: Duration,
    /// The environment variable holding the secret, named in auth errors.
    pub token_env: Option<String>,
}

/// An answer: status, headers and the body bytes.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `METHOD /path` of the request, for messages.
    pub request: String,
}

impl Resp {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; malformed bodies are an error that quotes the start of the body.
    pub fn json(&self, what: &str) -> Result<serde_json::Value, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Invalid {
            what: what.to_owned(),
            message: format!(
                "{} answered {} with a body that is not JSON ({e}): {}",
                self.request,
                self.status,
                self.snippet()
            ),
        })
    }

    /// The start of the body, printable, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let one_line: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let t = one_line.trim();
        if t.is_empty() {
            return "(empty body)".into();
        }
        let mut cut: String = t.chars().take(300).collect();
        if cut.len() < t.len() {
            cut.push('…');
        }
        cut
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Safe to send twice (reads): retried after 5xx and network errors.
    pub idempotent: bool,
}

impl Req {
    pub fn get(url: Url) -> Req {
        Req { method: Method::GET, url, headers: vec![], body: None, idempotent: true }
    }
}

/// Counters, for tests and `-v` output.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub requests: u64,
    pub throttled: u64,
    pub retried: u64,
}

/// A paced, retrying HTTP client for one platform.
pub struct Transport {
    client: reqwest::blocking::Client,
    s: Settings,
    every: Option<Duration>,
    next: Instant,
    /// Waits after 429 per request before giving up.
    pub max_throttle_waits: u32,
    /// Longest single wait after a 429.
    pub max_wait: Duration,
    /// Extra attempts of an idempotent request after 5xx or a network error.
    pub read_retries: u32,
    pub backoff: Duration,
    pub stats: Stats,
}

impl Transport {
    pub fn new(s: Settings) -> Result<Transport, ProviderError> {
        let client = net::client(s.timeout)?;
        let every = s.requests_per_sec.filter(|r| r.is_finite() && *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r));
        Ok(Transport {
            client,
            s,
            every,
            next: Instant::now(),
            max_throttle_waits: 6,
            max_wait: Duration::from_secs(60),
            read_retries: 3,
            backoff: Duration::from_millis(200),
            stats: Stats::default(),
        })
    }

    pub fn what(&self) -> &str {
        &self.s.what
    }

    /// Masks the secret in a message.
    pub fn redact(&self, text: &str) -> String {
        match &self.s.secret {
            Some(secret) if secret.len() >= 4 => text.replace(secret.as_str(), "***"),
            _ => text.to_owned(),
        }
    }

    fn unavailable(&self, message: String) -> ProviderError {
        ProviderError::Unavailable { what: self.s.what.clone(), message: self.redact(&message) }
    }

    fn invalid(&self, message: String) -> ProviderError {
        ProviderError::Invalid { what: self.s.what.clone(), message: self.redact(&message) }
    }

    fn pace(&mut self) {
        if let Some(every) = self.every {
            let now = Instant::now();
            if self.next > now {
                std::thread::sleep(self.next - now);
            }
            self.next = self.next.max(now) + every;
        }
    }

    /// Sends a request. Returns the answer for every status but 401/403 (an
    /// [`ProviderError::Invalid`] naming the credential's variable), 429 after the
    /// waits ran out, and 5xx/408 that could not be retried (both
    /// [`ProviderError::Unavailable`]).
    pub fn send(&mut self, req: &Req) -> Result<Resp, ProviderError> {
        let label = format!("{} {}", req.method, req.url.path());
        let mut throttled = 0;
        let mut failures = 0;
        loop {
            self.pace();
            self.stats.requests += 1;
            let result = self.once(req);
            let resp = match result {
                Ok(r) => r,
                Err(e) => {
                    if req.idempotent && failures < self.read_retries {
                        failures += 1;
                        self.stats.retried += 1;
                        std::thread::sleep(self.backoff * (1 << failures.min(6)));
                        continue;
                    }
                    return Err(self.unavailable(format!("{label} failed: {e}")));
                }
            };
            let resp = Resp { request: label.clone(), ..resp };
            match resp.status {
                429 => {
                    self.stats.throttled += 1;
                    if throttled >= self.max_throttle_waits {
                        return Err(self.unavailable(format!(
                            "{label} is still throttled (429) after {throttled} waits; try again later or lower the request rate"
                        )));
                    }
                    throttled += 1;
                    std::thread::sleep(self.wait_after_429(&resp));
                }
                401 | 403 => {
                    let var = match &self.s.token_env {
                        Some(v) => format!("the token in `{v}`"),
                        None => "the credential".to_owned(),
                    };
                    return Err(self.invalid(format!(
                        "{label} was refused ({}): check that {var} is valid and has the inventory permissions; {}",
                        resp.status,
                        resp.snippet()
                    )));
                }
                s if net::retriable_status(s) => {
                    if req.idempotent && failures < self.read_retries {
                        failures += 1;
                        self.stats.retried += 1;
                        std::thread::sleep(self.backoff * (1 << failures.min(6)));
                        continue;
                    }
                    return Err(self.unavailable(format!("{label} answered {s}: {}", resp.snippet())));
                }
                _ => return Ok(Resp { body: self.redact_body(resp.body), ..resp }),
            }
        }
    }

    fn redact_body(&self, body: Vec<u8>) -> Vec<u8> {
        match &self.s.secret {
            Some(secret) if secret.len() >= 4 && body.windows(secret.len()).any(|w| w == secret.as_bytes()) => {
                self.redact(&String::from_utf8_lossy(&body)).into_bytes()
            }
            _ => body,
        }
    }

    fn once(&self, req: &Req) -> Result<Resp, String> {
        let mut b = self.client.request(req.method.clone(), req.url.clone());
        let mut headers = HeaderMap::new();
        for (k, v) in self.s.headers.iter().chain(&req.headers) {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
            let value = HeaderValue::from_str(v).map_err(|_| format!("bad value for header `{k}`"))?;
            headers.insert(name, value);
        }
        if let Some((k, v)) = &self.s.auth {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| format!("bad header name `{k}`"))?;
            let mut value = HeaderValue::from_str(v)
                .map_err(|_| format!("the credential for header `{k}` has characters a header cannot hold"))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(body) = &req.body {
            if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
                headers.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            b = b.body(body.clone());
        }
        if !headers.contains_key(reqwest::header::ACCEPT) {
            headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        }
        let resp = b.headers(headers).send().map_err(|e| e.without_url().to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        resp.take(MAX_BODY).read_to_end(&mut body).map_err(|e| format!("reading the answer: {e}"))?;
        Ok(Resp { status, headers, body, request: String::new() })
    }

    fn wait_after_429(&self, resp: &Resp) -> Duration {
        let configured = self.s.retry_after.header.as_deref().and_then(|h| resp.header(h)).and_then(|v| {
            let n: f64 = v.trim().parse().ok()?;
            (n.is_finite() && n >= 0.0).then(|| if self.s.retry_after.millis { n / 1000.0 } else { n })
        });
        let standard = || {
            let n: f64 = resp.header("retry-after")?.trim().parse().ok()?;
            (n.is_finite() && n >= 0.0).then_some(n)
        };
        let secs = configured.or_else(standard).unwrap_or(1.0);
        Duration::from_secs_f64(secs).min(self.max_wait)
    }
}

/// Joins a base URL and a path (`https://h/rest` + `/V1/x` → `https://h/rest/V1/x`).
pub fn join(base: &str, path: &str) -> Result<Url, String> {
    let full = format!("{}/{}", base.trim_end_matches('/'), path.trim_start_matches('/'));
    Url::parse(&full).map_err(|e| format!("`{full}` is not a valid URL: {e}"))
}

/// Percent-encodes a string for use in a URL path segment or query value.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_encodes() {
        assert_eq!(join("http://h:1/rest/", "/V1/x").unwrap().as_str(), "http://h:1/rest/V1/x");
        assert_eq!(join("http://h:1/rest", "V1/x").unwrap().as_str(), "http://h:1/rest/V1/x");
        assert!(join("nonsense", "x").is_err());
        assert_eq!(percent_encode("A B/ü,1"), "A%20B%2F%C3%BC%2C1");
    }

    #[test]
    fn snippets_are_short_and_printable() {
        let r = Resp {
            status: 500,
            headers: HeaderMap::new(),
            body: "x\n".repeat(500).into_bytes(),
            request: "GET /".into(),
        };
        let s = r.snippet();
        assert!(s.chars().count() <= 301 && !s.contains('\n'), "{s}");
        let e = Resp { body: b"<html>".to_vec(), ..r }.json("t").unwrap_err().to_string();
        assert!(e.contains("not JSON") && e.contains("<html>"), "{e}");
    }
}
