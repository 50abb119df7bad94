//! The `http` provider: any inventory API described by a YAML manifest
//! (`providers/*.yaml`, see [`manifest`]).
//!
//! Reading walks the manifest's listing page by page. Writing uses one of two
//! compare strategies: `read-compare-write` (look the batch's keys up, compare,
//! write, read back; see [`emulate`]) for APIs with no conditional write, or
//! `if-match` (per key: GET with ETag, write with `If-Match`, 412 = conflict) for
//! APIs that honour ETags. Requests are built from minijinja templates with the
//! batch and the plan's `vars`; [`transport`] paces them, waits out 429s and
//! keeps the credential out of every message.

pub mod emulate;
pub mod extract;
pub mod jsonpath;
pub mod manifest;
pub mod paging;
pub mod template;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Map, Value, json};

pub use manifest::{Manifest, ManifestError, manifest_path};

use self::extract::Item;
use self::manifest::{Compare, ItemSpec, RequestSpec};
use self::transport::{Req, Settings, Transport};
use super::{Capabilities, CompareMode, Provider, ProviderError, ReadInfo, RowSink, Write, WriteOutcome};
use crate::config::model::HttpProviderConfig;

/// Current value and remote fields of one key.
type Found = (i64, Map<String, Value>);

/// A platform reached through a manifest.
pub struct HttpProvider {
    m: Manifest,
    base_url: String,
    vars: BTreeMap<String, String>,
    /// Platform location id → plan location, and back (empty: the same names).
    from_remote: BTreeMap<String, String>,
    to_remote: BTreeMap<String, String>,
    t: Transport,
    batch_size: usize,
    rate: Option<f64>,
}

impl HttpProvider {
    /// Opens the provider a plan names; `base` is the plan's folder. The credential
    /// comes from `token_env`.
    pub fn from_config(cfg: &HttpProviderConfig, base: &Path) -> Result<Self, ProviderError> {
        let token = match &cfg.token_env {
            Some(var) => Some(super::net::secret_from_env(var, &format!("http {}", cfg.base_url))?),
            None => None,
        };
        Self::with_token(cfg, base, token)
    }

    /// Opens the provider with an explicit credential (tests).
    pub fn with_token(cfg: &HttpProviderConfig, base: &Path, token: Option<String>) -> Result<Self, ProviderError> {
        let path = manifest_path(base, &cfg.manifest);
        let m = Manifest::load(&path).map_err(|e| ProviderError::Invalid {
            what: format!("http manifest `{}`", cfg.manifest),
            message: format!("{e}. {}", e.help()),
        })?;
        let what = format!("http ({}) {}", m.name, cfg.base_url);
        let mut vars = m.vars.clone();
        vars.extend(cfg.vars.clone());
        let (auth, secret) = match &m.auth_header {
            None => (None, None),
            Some(header) => {
                let Some(token) = token else {
                    return Err(ProviderError::Invalid {
                        what,
                        message: format!(
                            "the manifest `{}` sends a credential in `{header}`: set `token_env` to the environment variable holding it",
                            m.file
                        ),
                    });
                };
                let value = m.templates.render("auth.value", &json!({"token": token, "vars": vars})).map_err(|e| {
                    ProviderError::Invalid { what: what.clone(), message: format!("template `auth.value`: {e}") }
                })?;
                (Some((header.clone(), value)), Some(token))
            }
        };
        let rate = cfg.requests_per_sec.or(m.limits.requests_per_sec);
        let t = Transport::new(Settings {
            what: what.clone(),
            auth,
            secret,
            headers: m.headers.clone(),
            requests_per_sec: rate,
            retry_after: m.limits.retry_after.clone(),
            timeout: m.limits.timeout,
            token_env: cfg.token_env.clone(),
        })?;
        let from_remote = cfg.locations.clone();
        let to_remote = from_remote.iter().map(|(r, p)| (p.clone(), r.clone())).collect();
        Ok(HttpProvider {
            batch_size: cfg.batch_size.unwrap_or(m.limits.batch_size).max(1),
            m,
            base_url: cfg.base_url.clone(),
            vars,
            from_remote,
            to_remote,
            t,
            rate,
        })
    }

    /// Request counters (tests, verbose output).
    pub fn stats(&self) -> transport::Stats {
        self.t.stats
    }

    fn invalid(&self, message: String) -> ProviderError {
        ProviderError::Invalid { what: self.t.what().to_owned(), message: self.t.redact(&message) }
    }

    /// The platform's id for a plan location (`None`: not mapped).
    fn remote(&self, location: &str) -> Option<String> {
        if self.to_remote.is_empty() { Some(location.to_owned()) } else { self.to_remote.get(location).cloned() }
    }

    fn render(&self, name: &str, ctx: &Value) -> Result<String, ProviderError> {
        self.m
            .templates
            .render(name, ctx)
            .map_err(|e| self.invalid(format!("manifest {}: template `{name}`: {e}", self.m.file)))
    }

    fn build(&self, spec: &RequestSpec, ctx: &Value, idempotent: bool) -> Result<Req, ProviderError> {
        let path = self.render(&spec.path, ctx)?;
        let mut url = transport::join(&self.base_url, &path).map_err(|e| self.invalid(e))?;
        {
            let mut pairs: Vec<(String, String)> = Vec::new();
            for (k, tmpl) in &spec.query {
                let v = self.render(tmpl, ctx)?;
                if !v.is_empty() {
                    pairs.push((k.clone(), v));
                }
            }
            if !pairs.is_empty() {
                let mut q = url.query_pairs_mut();
                for (k, v) in &pairs {
                    q.append_pair(k, v);
                }
            }
        }
        let mut headers = Vec::new();
        for (k, tmpl) in &spec.headers {
            headers.push((k.clone(), self.render(tmpl, ctx)?));
        }
        let body = match &spec.body {
            None => None,
            Some(tmpl) => {
                let text = self.render(tmpl, ctx)?;
                if let Err(e) = serde_json::from_str::<Value>(&text) {
                    let start: String = text.chars().take(200).collect();
                    return Err(self.invalid(format!(
                        "manifest {}: template `{tmpl}` did not render JSON ({e}): {start}",
                        self.m.file
                    )));
                }
                Some(text)
            }
        };
        Ok(Req { method: spec.method.clone(), url, headers, body, idempotent })
    }

    fn remote_locations(&self) -> Vec<String> {
        self.from_remote.keys().cloned().collect()
    }

    /// Walks a listing (the read request or a lookup) and hands every item over.
    fn walk(&mut self, req: Req, mut each: impl FnMut(Item)) -> Result<(), ProviderError> {
        let paging = self.m.paging.clone();
        let max_pages = self.m.max_pages;
        let rows = self.m.rows.clone();
        paging::each_page(&mut self.t, req, &paging, max_pages, |body| {
            let (n, items) = extract::extract(&rows, body);
            items.into_iter().for_each(&mut each);
            Ok(n)
        })
    }

    /// Current values of some (sku, platform location) keys.
    fn lookup(&mut self, keys: &[(String, String)]) -> Result<HashMap<(String, String), Found>, ProviderError> {
        let want: std::collections::HashSet<(String, String)> = keys.iter().cloned().collect();
        let mut found: HashMap<(String, String), Found> = HashMap::new();
        let mut bad: Option<String> = None;
        let Some((spec, max_keys)) = self.m.lookup.clone() else {
            // No lookup request: read everything and pick.
            let ctx = json!({"vars": self.vars, "locations": self.remote_locations()});
            let req = self.build(&self.m.read.clone(), &ctx, true)?;
            self.walk(req, |item| collect(item, &want, &mut found, &mut bad))?;
            return match bad {
                Some(b) => Err(self.invalid(b)),
                None => Ok(found),
            };
        };
        for chunk in keys.chunks(max_keys) {
            let mut skus: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
            skus.sort_unstable();
            skus.dedup();
            let mut locations: Vec<&str> = chunk.iter().map(|(_, l)| l.as_str()).collect();
            locations.sort_unstable();
            locations.dedup();
            let key_list: Vec<Value> = chunk.iter().map(|(s, l)| json!({"sku": s, "location": l})).collect();
            let ctx = json!({"vars": self.vars, "keys": key_list, "skus": skus, "locations": locations});
            let req = self.build(&spec, &ctx, true)?;
            self.walk(req, |item| collect(item, &want, &mut found, &mut bad))?;
        }
        match bad {
            Some(b) => Err(self.invalid(b)),
            None => Ok(found),
        }
    }

    fn write_ctx(&self, items: &[(&Write, &Map<String, Value>)]) -> Value {
        let mut skus: Vec<&str> = items.iter().map(|(w, _)| w.sku.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        let writes: Vec<Value> = items
            .iter()
            .map(|(w, extra)| {
                json!({
                    "sku": w.sku,
                    "location": self.remote(&w.location).unwrap_or_default(),
                    "plan_location": w.location,
                    "expected": w.expected,
                    "new": w.new,
                    "remote": extra,
                })
            })
            .collect();
        let mut locations: Vec<Value> = Vec::new();
        for w in &writes {
            if !locations.contains(&w["location"]) {
                locations.push(w["location"].clone());
            }
        }
        let mut ctx = json!({"vars": self.vars, "writes": writes, "skus": skus, "locations": locations});
        if let [only] = writes.as_slice() {
            ctx["w"] = only.clone();
        }
        ctx
    }

    /// Sends one write request (a batch, or one key) and returns the answer, whatever its status.
    fn send_write(
        &mut self,
        items: &[(&Write, &Map<String, Value>)],
        extra_headers: Vec<(String, String)>,
    ) -> Result<transport::Resp, ProviderError> {
        let spec = self.m.write.as_ref().map(|w| w.request.clone()).ok_or_else(|| self.read_only())?;
        let ctx = self.write_ctx(items);
        let mut req = self.build(&spec, &ctx, false)?;
        req.headers.extend(extra_headers);
        self.t.send(&req)
    }

    fn read_only(&self) -> ProviderError {
        self.invalid(format!("the manifest {} has no `write` section: this platform is read-only here", self.m.file))
    }

    /// Reads one key with its ETag (`if-match`): (quantity, etag); 404 = absent.
    fn read_item(&mut self, item: &ItemSpec, w: &Write) -> Result<(Option<i64>, Option<String>), ProviderError> {
        let ctx = json!({
            "vars": self.vars,
            "sku": w.sku,
            "location": self.remote(&w.location).unwrap_or_default(),
            "plan_location": w.location,
        });
        let req = self.build(&item.request, &ctx, true)?;
        let resp = self.t.send(&req)?;
        if resp.status == 404 {
            return Ok((None, None));
        }
        if !resp.is_success() {
            return Err(self.invalid(format!("{} answered {}: {}", resp.request, resp.status, resp.snippet())));
        }
        let etag = resp.header(&item.etag_header).map(str::to_owned);
        let body = resp.json(self.t.what())?;
        let qty = match item.qty.first(&body) {
            None => None,
            Some(v) => Some(jsonpath::quantity(v).ok_or_else(|| {
                self.invalid(format!("{}: the quantity at `{}` is not a whole number: {v}", resp.request, item.qty))
            })?),
        };
        if etag.is_none() {
            return Err(self.invalid(format!(
                "{} answered without an `{}` header; the `if-match` strategy needs one (use `read-compare-write`)",
                resp.request, item.etag_header
            )));
        }
        Ok((qty, etag))
    }

    /// The `if-match` strategy, one key at a time.
    fn write_if_match(
        &mut self,
        writes: &[Write],
        item: &ItemSpec,
        conflict_status: &[u16],
    ) -> Result<Vec<WriteOutcome>, ProviderError> {
        let none = Map::new();
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let (current, etag) = self.read_item(item, w)?;
            if let emulate::Decision::Done(o) = emulate::decide(current, w) {
                out.push(o);
                continue;
            }
            let guard = match (&current, etag) {
                (Some(_), Some(tag)) => ("If-Match".to_owned(), tag),
                _ => ("If-None-Match".to_owned(), "*".to_owned()),
            };
            let resp = self.send_write(&[(w, &none)], vec![guard])?;
            if resp.is_success() {
                out.push(WriteOutcome::Applied);
            } else if conflict_status.contains(&resp.status) {
                // Someone changed the key since our read: find out to what.
                let (found, _) = self.read_item(item, w)?;
                out.push(if found == Some(w.new) {
                    WriteOutcome::AlreadyApplied
                } else {
                    WriteOutcome::Conflict { found }
                });
            } else {
                let message = format!("{} answered {}: {}", resp.request, resp.status, resp.snippet());
                out.push(WriteOutcome::Failed { retriable: false, message });
            }
        }
        Ok(out)
    }
}

fn collect(
    item: Item,
    want: &std::collections::HashSet<(String, String)>,
    found: &mut HashMap<(String, String), Found>,
    bad: &mut Option<String>,
) {
    match item {
        Item::Row(r) => {
            let k = (r.sku, r.location);
            if want.contains(&k) {
                found.insert(k, (r.qty, r.extra));
            }
        }
        Item::Problem { summary, .. } => {
            if bad.is_none() {
                *bad = Some(format!("the lookup answer has a bad record: {summary}"));
            }
        }
        Item::Skipped => {}
    }
}

impl emulate::ReadWrite for HttpProvider {
    type Extra = Map<String, Value>;

    fn current(&mut self, keys: &[&Write]) -> Result<emulate::Current<Self::Extra>, ProviderError> {
        let remote: Vec<(String, String)> =
            keys.iter().map(|w| (w.sku.clone(), self.remote(&w.location).unwrap_or_default())).collect();
        let mut found = self.lookup(&remote)?;
        Ok(remote
            .iter()
            .map(|k| match found.remove(k) {
                Some((q, extra)) => (Some(q), extra),
                None => (None, Map::new()),
            })
            .collect())
    }

    fn put(&mut self, items: &[(&Write, &Self::Extra)]) -> Result<Result<(), String>, ProviderError> {
        let requires = self.m.write.as_ref().map(|w| w.requires.clone()).unwrap_or_default();
        for (w, extra) in items {
            if let Some(missing) = requires.iter().find(|f| !extra.contains_key(f.as_str())) {
                return Ok(Err(format!(
                    "{}: SKU `{}` at `{}` has no `{missing}` on the platform, which the write needs; create the item there first",
                    self.m.name, w.sku, w.location
                )));
            }
        }
        let resp = self.send_write(items, vec![])?;
        if resp.is_success() {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("{} answered {}: {}", resp.request, resp.status, resp.snippet())))
        }
    }

    fn one_per_request(&self) -> bool {
        self.m.write.as_ref().is_some_and(|w| w.per_key)
    }
}

impl Provider for HttpProvider {
    fn describe(&self) -> String {
        format!("http {} ({})", self.base_url, self.m.name)
    }

    fn capabilities(&self) -> Capabilities {
        let compare = if self.m.write.is_none() {
            CompareMode::ReadOnly
        } else if self.m.is_native() {
            CompareMode::Native
        } else {
            CompareMode::Emulated
        };
        Capabilities { compare, max_batch: self.batch_size, max_requests_per_sec: self.rate }
    }

    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError> {
        let ctx = json!({"vars": self.vars, "locations": self.remote_locations()});
        let req = self.build(&self.m.read.clone(), &ctx, true)?;
        let mut line: u64 = 0;
        let mut rows: u64 = 0;
        let from_remote = self.from_remote.clone();
        let manifest = self.m.name.clone();
        self.walk(req, |item| {
            line += 1;
            match item {
                Item::Row(r) => {
                    let loc =
                        if from_remote.is_empty() { Some(r.location) } else { from_remote.get(&r.location).cloned() };
                    if let Some(loc) = loc {
                        rows += 1;
                        sink.row(&r.sku, &loc, r.qty, line);
                    }
                }
                Item::Problem { summary, help } => sink.problem(line, 0, format!("{manifest}: {summary}"), help),
                Item::Skipped => {}
            }
        })?;
        Ok(ReadInfo { rows, sha256: None })
    }

    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError> {
        if self.m.write.is_none() {
            return Err(self.read_only());
        }
        let mut out: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
        let mut idx = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            if self.remote(&w.location).is_none() {
                out[i] = Some(WriteOutcome::Failed {
                    retriable: false,
                    message: format!(
                        "location `{}` is not in the provider's `locations` map; add it to write there",
                        w.location
                    ),
                });
            } else {
                idx.push(i);
            }
        }
        let sub: Vec<Write> = idx.iter().map(|&i| writes[i].clone()).collect();
        let done = match self.m.compare.clone() {
            Compare::ReadCompareWrite { settle } => emulate::read_compare_write(self, &sub, settle)?,
            Compare::IfMatch { item, conflict_status } => self.write_if_match(&sub, &item, &conflict_status)?,
        };
        for (i, o) in idx.into_iter().zip(done) {
            out[i] = Some(o);
        }
        Ok(out.into_iter().map(|o| o.expect("every write has an outcome")).collect())
    }

    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        let remote: Vec<Option<(String, String)>> =
            keys.iter().map(|(s, l)| self.remote(l).map(|r| (s.clone(), r))).collect();
        let wanted: Vec<(String, String)> = remote.iter().flatten().cloned().collect();
        let found = self.lookup(&wanted)?;
        Ok(remote.iter().map(|k| k.as_ref().and_then(|k| found.get(k)).map(|(q, _)| *q)).collect())
    }
}
