//! The `http` provider's manifest: a YAML file that describes one platform's
//! inventory API (how to read every level, how to look up a few keys, how to
//! write a batch, how compare-and-set is done, limits and credentials).
//!
//! Loading checks everything that can be checked without the network: unknown
//! keys, JSON paths, template syntax, and combinations that make no sense (an
//! `if-match` compare without a per-key item read). Every error names the
//! manifest file, line and column. Shipped manifests (`providers/*.yaml`) are
//! compiled into the binary and can be named by their bare name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use super::emulate::Settle;
use super::jsonpath::JsonPath;
use super::template::Templates;
use super::transport::RetryAfter;
use crate::config::spans::{Seg, SpanIndex};

/// Manifests shipped with stockshift, usable as `manifest: NAME`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("bigcommerce", include_str!("../../../providers/bigcommerce.yaml")),
    ("woocommerce", include_str!("../../../providers/woocommerce.yaml")),
];

/// How a shipped manifest's path is spelled internally (`builtin:bigcommerce`).
const BUILTIN_PREFIX: &str = "builtin:";

/// Where a plan's `manifest:` value points. A bare name (`bigcommerce`) means
/// `providers/NAME.yaml` beside the plan when that file exists, else the shipped
/// manifest of that name; anything else is a path relative to the plan's folder.
pub fn manifest_path(dir: &Path, name: &str) -> PathBuf {
    let bare = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !bare {
        return dir.join(name);
    }
    let local = dir.join("providers").join(format!("{name}.yaml"));
    if !local.is_file() && BUILTIN.iter().any(|(n, _)| *n == name) {
        return PathBuf::from(format!("{BUILTIN_PREFIX}{name}"));
    }
    local
}

/// A manifest problem, with where it is.
#[derive(Debug, Clone)]
pub struct ManifestError {
    /// The manifest as shown to the user (`providers/x.yaml`, `builtin:bigcommerce`).
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    pub col: usize,
    pub message: String,
    help: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

impl std::error::Error for ManifestError {}

impl ManifestError {
    /// How to fix it.
    pub fn help(&self) -> String {
        if self.help.is_empty() {
            "See \"Writing a manifest\" in docs/providers.md for every key a manifest may hold.".into()
        } else {
            self.help.clone()
        }
    }
}

// ---------------------------------------------------------------------------
// The file format, as written. Flat structs so the YAML reader can point at
// unknown keys; combinations are checked afterwards.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    limits: RawLimits,
    read: RawRead,
    #[serde(default)]
    lookup: Option<RawLookup>,
    #[serde(default)]
    write: Option<RawWrite>,
    #[serde(default)]
    compare: Option<RawCompare>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    batch_size: Option<usize>,
    #[serde(default)]
    requests_per_sec: Option<f64>,
    #[serde(default)]
    retry_after_header: Option<String>,
    #[serde(default)]
    retry_after_unit: Option<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    #[serde(default)]
    method: Option<String>,
    path: String,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagination {
    style: String,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    first: Option<u64>,
    #[serde(default)]
    total_pages: Option<String>,
    #[serde(default)]
    total_pages_header: Option<String>,
    #[serde(default)]
    total: Option<String>,
    #[serde(default)]
    page_size: Option<usize>,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    max_pages: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRead {
    request: RawRequest,
    #[serde(default)]
    pagination: Option<RawPagination>,
    records: String,
    #[serde(default)]
    expand: Option<String>,
    sku: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    location_value: Option<String>,
    qty: String,
    #[serde(default)]
    skip_incomplete: bool,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLookup {
    request: RawRequest,
    #[serde(default)]
    max_keys: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWrite {
    request: RawRequest,
    #[serde(default)]
    per: Option<String>,
    #[serde(default)]
    requires_fields: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompare {
    strategy: String,
    #[serde(default)]
    settle: Option<RawSettle>,
    #[serde(default)]
    item: Option<RawItem>,
    #[serde(default)]
    conflict_status: Option<Vec<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettle {
    attempts: u32,
    #[serde(default)]
    delay_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    request: RawRequest,
    qty: String,
    #[serde(default)]
    etag_header: Option<String>,
}

// ---------------------------------------------------------------------------
// The compiled manifest.

/// One request, its parts as template names in [`Manifest::templates`].
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    pub path: String,
    /// Query parameter name → template; a value that renders empty is left out.
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// How a listing continues past its first page.
#[derive(Debug, Clone)]
pub enum Paging {
    /// One request returns everything.
    None,
    /// `?param=1,2,3...`; stops on an empty page, at `total_pages`, once `total`
    /// records were seen, or after a page shorter than `page_size`.
    Page {
        param: String,
        first: u64,
        total_pages: Option<JsonPath>,
        total_pages_header: Option<String>,
        total: Option<JsonPath>,
        page_size: Option<usize>,
    },
    /// `?param=<cursor>` with the cursor taken from the previous answer.
    Cursor { param: String, next: JsonPath },
    /// The next page's URL, from the body (`next`) or the `Link: <...>; rel="next"` header.
    Link { next: Option<JsonPath> },
}

/// A field of a row: a path from the expanded element, or (`^.` prefix) from the record.
#[derive(Debug, Clone)]
pub struct Field {
    pub from_record: bool,
    pub path: JsonPath,
}

/// Where a row's location comes from.
#[derive(Debug, Clone)]
pub enum LocationField {
    Path(Field),
    /// Every row has this location (platforms without locations).
    Value(String),
}

/// How rows are found in an answer.
#[derive(Debug, Clone)]
pub struct RowSpec {
    pub records: JsonPath,
    pub expand: Option<JsonPath>,
    pub sku: Field,
    pub location: LocationField,
    pub qty: Field,
    /// Rows without a SKU or a quantity (null, absent, empty) are skipped rather than reported.
    pub skip_incomplete: bool,
    /// Extra values kept per key and handed to the write template as `w.remote.NAME`.
    pub fields: Vec<(String, Field)>,
}

/// How writes are sent.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    pub request: RequestSpec,
    /// One request per key (else one per batch).
    pub per_key: bool,
    /// `read.fields` a key must have for its write to be sent (`w.remote.NAME`).
    pub requires: Vec<String>,
}

/// A per-key read for the `if-match` strategy.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    pub request: RequestSpec,
    pub qty: JsonPath,
    pub etag_header: String,
}

/// How "set to B where still A" is done.
#[derive(Debug, Clone)]
pub enum Compare {
    /// Read, compare, write, read back (no platform support needed).
    ReadCompareWrite { settle: Settle },
    /// Per key: GET with its ETag, write with `If-Match`; these statuses mean "changed".
    IfMatch { item: ItemSpec, conflict_status: Vec<u16> },
}

/// Platform limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub batch_size: usize,
    pub requests_per_sec: Option<f64>,
    pub retry_after: RetryAfter,
    pub timeout: Duration,
}

/// A loaded, checked manifest.
#[derive(Debug)]
pub struct Manifest {
    pub name: String,
    pub description: Option<String>,
    /// The manifest as shown in messages.
    pub file: String,
    /// Defaults for `vars.NAME`; the plan's `vars` override them.
    pub vars: BTreeMap<String, String>,
    /// The credential header's name; its value is the template `auth.value`.
    pub auth_header: Option<String>,
    pub headers: Vec<(String, String)>,
    pub limits: Limits,
    pub read: RequestSpec,
    pub paging: Paging,
    pub max_pages: u64,
    pub rows: RowSpec,
    pub lookup: Option<(RequestSpec, usize)>,
    pub write: Option<WriteSpec>,
    pub compare: Compare,
    pub templates: Templates,
}

impl Manifest {
    /// Loads a manifest file, or a shipped one (see [`manifest_path`]).
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let shown = path.display().to_string();
        if let Some(name) = shown.strip_prefix(BUILTIN_PREFIX) {
            let text = BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ManifestError {
                file: shown.clone(),
                line: 0,
                col: 0,
                message: format!("there is no shipped manifest named `{name}`"),
                help: shipped_help(),
            })?;
            return Manifest::parse(text, &shown);
        }
        let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
            file: shown.clone(),
            line: 0,
            col: 0,
            message: format!("cannot read the manifest: {e}"),
            help: format!(
                "Write the path of a manifest file relative to the plan's folder, or the name of a shipped one. {}",
                shipped_help()
            ),
        })?;
        Manifest::parse(&text, &shown)
    }

    /// Parses and checks manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Manifest, ManifestError> {
        let spans = SpanIndex::build(text).map_err(|(pos, msg)| ManifestError {
            file: file.to_owned(),
            line: pos.line,
            col: pos.col,
            message: format!("YAML syntax error: {msg}"),
            help: "Fix the YAML syntax at this position (indentation, quotes, a missing `:`).".into(),
        })?;
        if let Some(d) = spans.duplicates.first() {
            return Err(ManifestError {
                file: file.to_owned(),
                line: d.again.line,
                col: d.again.col,
                message: format!(
                    "`{}` appears twice (first at line {})",
                    crate::config::spans::display_path(&d.path),
                    d.first.line
                ),
                help: "Keep one of the two entries.".into(),
            });
        }
        let raw: RawManifest = serde_yaml::from_str(text).map_err(|e| {
            let (line, col) = e.location().map(|l| (l.line(), l.column())).unwrap_or((1, 1));
            let full = e.to_string();
            let message = match full.rfind(" at line ") {
                Some(i) => full[..i].to_owned(),
                None => full,
            };
            let help = if message.contains("unknown field") {
                "Remove or rename the key; the message lists the keys allowed here.".to_owned()
            } else {
                String::new()
            };
            ManifestError { file: file.to_owned(), line, col, message, help }
        })?;
        Compiler { file, spans: &spans, templates: Templates::new() }.compile(raw)
    }

    /// Compare-and-set as the apply loop sees it.
    pub fn is_native(&self) -> bool {
        matches!(self.compare, Compare::IfMatch { .. })
    }
}

fn shipped_help() -> String {
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    format!("Shipped manifests: {}.", names.join(", "))
}

struct Compiler<'a> {
    file: &'a str,
    spans: &'a SpanIndex,
    templates: Templates,
}

fn key_path(dotted: &str) -> Vec<Seg> {
    dotted.split('.').filter(|s| !s.is_empty()).map(|s| Seg::Key(s.to_owned())).collect()
}

impl Compiler<'_> {
    fn err(&self, at: &str, message: impl Into<String>, help: impl Into<String>) -> ManifestError {
        let pos = self.spans.locate(&key_path(at));
        ManifestError {
            file: self.file.to_owned(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
            help: help.into(),
        }
    }

    fn path(&self, at: &str, text: &str) -> Result<JsonPath, ManifestError> {
        JsonPath::parse(text).map_err(|e| {
            self.err(
                at,
                format!("`{at}`: {e}"),
                "Write a path of names, indexes and wildcards, e.g. `data[*].locations[*]` or `meta.pagination.total_pages`.",
            )
        })
    }

    fn field(&self, at: &str, text: &str) -> Result<Field, ManifestError> {
        let (from_record, rest) = match text.trim().strip_prefix('^') {
            Some(r) => (true, r.strip_prefix('.').unwrap_or(r)),
            None => (false, text),
        };
        Ok(Field { from_record, path: self.path(at, rest)? })
    }

    fn template(&mut self, at: &str, source: &str) -> Result<String, ManifestError> {
        self.templates.add(at, source).map_err(|e| {
            let pos = self.spans.locate(&key_path(at));
            ManifestError {
                file: self.file.to_owned(),
                line: pos.line,
                col: pos.col,
                message: format!("template `{at}`: {e}"),
                help: "Fix the minijinja syntax: `{{ expr }}` for values, `{% for w in writes %}...{% endfor %}` for loops."
                    .into(),
            }
        })?;
        Ok(at.to_owned())
    }

    fn request(&mut self, at: &str, r: RawRequest, default: Method) -> Result<RequestSpec, ManifestError> {
        let method = match r.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
            None => default,
            Some("GET") => Method::GET,
            Some("POST") => Method::POST,
            Some("PUT") => Method::PUT,
            Some("PATCH") => Method::PATCH,
            Some("DELETE") => Method::DELETE,
            Some(other) => {
                return Err(self.err(
                    &format!("{at}.method"),
                    format!("unknown HTTP method `{other}`"),
                    "Use GET, POST, PUT, PATCH or DELETE.",
                ));
            }
        };
        if r.body.is_some() && method == Method::GET {
            return Err(self.err(&format!("{at}.body"), "a GET request has no body", "Remove `body`, or use POST."));
        }
        let path = self.template(&format!("{at}.path"), &r.path)?;
        let mut query = Vec::new();
        for (k, v) in &r.query {
            query.push((k.clone(), self.template(&format!("{at}.query.{k}"), v)?));
        }
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            check_header_name(k)
                .map_err(|m| self.err(&format!("{at}.headers.{k}"), m, "Use a valid HTTP header name."))?;
            headers.push((k.clone(), self.template(&format!("{at}.headers.{k}"), v)?));
        }
        let body = match &r.body {
            Some(b) => Some(self.template(&format!("{at}.body"), b)?),
            None => None,
        };
        Ok(RequestSpec { method, path, query, headers, body })
    }

    fn paging(&self, p: Option<RawPagination>) -> Result<(Paging, u64), ManifestError> {
        let Some(p) = p else { return Ok((Paging::None, 1)) };
        let at = "read.pagination";
        let max_pages = p.max_pages.unwrap_or(1_000_000).max(1);
        let unused = |name: &str, set: bool, style: &str| -> Result<(), ManifestError> {
            if set {
                Err(self.err(
                    &format!("{at}.{name}"),
                    format!("`{name}` is not used by pagination style `{style}`"),
                    "Remove it; see the pagination styles in docs/providers.md.",
                ))
            } else {
                Ok(())
            }
        };
        let paging = match p.style.as_str() {
            "none" => Paging::None,
            "page" => {
                unused("next", p.next.is_some(), "page")?;
                let param = p.param.ok_or_else(|| {
                    self.err(
                        at,
                        "pagination style `page` needs `param`",
                        "Name the page query parameter, e.g. `param: page`.",
                    )
                })?;
                Paging::Page {
                    param,
                    first: p.first.unwrap_or(1),
                    total_pages: p.total_pages.map(|t| self.path(&format!("{at}.total_pages"), &t)).transpose()?,
                    total_pages_header: p.total_pages_header,
                    total: p.total.map(|t| self.path(&format!("{at}.total"), &t)).transpose()?,
                    page_size: p.page_size.filter(|n| *n > 0),
                }
            }
            "cursor" => {
                for (name, set) in [
                    ("first", p.first.is_some()),
                    ("total_pages", p.total_pages.is_some()),
                    ("total_pages_header", p.total_pages_header.is_some()),
                    ("total", p.total.is_some()),
                    ("page_size", p.page_size.is_some()),
                ] {
                    unused(name, set, "cursor")?;
                }
                let param = p.param.ok_or_else(|| {
                    self.err(
                        at,
                        "pagination style `cursor` needs `param`",
                        "Name the cursor query parameter, e.g. `param: after`.",
                    )
                })?;
                let next = p.next.ok_or_else(|| {
                    self.err(
                        at,
                        "pagination style `cursor` needs `next`",
                        "Give the path of the next cursor in the answer, e.g. `next: meta.end_cursor`.",
                    )
                })?;
                Paging::Cursor { param, next: self.path(&format!("{at}.next"), &next)? }
            }
            "link" => {
                for (name, set) in [
                    ("param", p.param.is_some()),
                    ("first", p.first.is_some()),
                    ("total_pages", p.total_pages.is_some()),
                    ("total_pages_header", p.total_pages_header.is_some()),
                    ("total", p.total.is_some()),
                    ("page_size", p.page_size.is_some()),
                ] {
                    unused(name, set, "link")?;
                }
                Paging::Link { next: p.next.map(|n| self.path(&format!("{at}.next"), &n)).transpose()? }
            }
            other => {
                return Err(self.err(
                    &format!("{at}.style"),
                    format!("unknown pagination style `{other}`"),
                    "Use one of: none, page, cursor, link.",
                ));
            }
        };
        Ok((paging, max_pages))
    }

    fn rows(&self, r: &RawRead) -> Result<RowSpec, ManifestError> {
        let location = match (&r.location, &r.location_value) {
            (Some(p), None) => LocationField::Path(self.field("read.location", p)?),
            (None, Some(v)) => LocationField::Value(v.clone()),
            _ => {
                return Err(self.err(
                    "read",
                    "`read` needs exactly one of `location` (a path) and `location_value` (a fixed name)",
                    "Use `location: location_id` when the API has locations, or `location_value: default` when it has none.",
                ));
            }
        };
        let mut fields = Vec::new();
        for (k, v) in &r.fields {
            fields.push((k.clone(), self.field(&format!("read.fields.{k}"), v)?));
        }
        let expand = r.expand.as_deref().map(|e| self.path("read.expand", e)).transpose()?;
        Ok(RowSpec {
            records: self.path("read.records", &r.records)?,
            expand,
            sku: self.field("read.sku", &r.sku)?,
            location,
            qty: self.field("read.qty", &r.qty)?,
            skip_incomplete: r.skip_incomplete,
            fields,
        })
    }

    fn limits(&self, l: RawLimits) -> Result<Limits, ManifestError> {
        let batch_size = l.batch_size.unwrap_or(50);
        if batch_size == 0 || batch_size > 100_000 {
            return Err(self.err(
                "limits.batch_size",
                "`batch_size` must be between 1 and 100000",
                "Use the platform's batch limit.",
            ));
        }
        if let Some(r) = l.requests_per_sec
            && !(r.is_finite() && r > 0.0)
        {
            return Err(self.err(
                "limits.requests_per_sec",
                "`requests_per_sec` must be above 0",
                "Leave it out when the platform has no fixed rate.",
            ));
        }
        let millis = match l.retry_after_unit.as_deref() {
            None | Some("s") => false,
            Some("ms") => true,
            Some(other) => {
                return Err(self.err("limits.retry_after_unit", format!("unknown unit `{other}`"), "Use `s` or `ms`."));
            }
        };
        if let Some(h) = &l.retry_after_header {
            check_header_name(h)
                .map_err(|m| self.err("limits.retry_after_header", m, "Use a valid HTTP header name."))?;
        }
        Ok(Limits {
            batch_size,
            requests_per_sec: l.requests_per_sec,
            retry_after: RetryAfter { header: l.retry_after_header, millis },
            timeout: Duration::from_secs(l.timeout_secs.unwrap_or(60).clamp(1, 3600)),
        })
    }

    fn compare(&mut self, c: Option<RawCompare>, per_key: bool) -> Result<Compare, ManifestError> {
        let Some(c) = c else { return Ok(Compare::ReadCompareWrite { settle: Settle::default() }) };
        match c.strategy.as_str() {
            "read-compare-write" => {
                if c.item.is_some() || c.conflict_status.is_some() {
                    return Err(self.err(
                        "compare",
                        "`item` and `conflict_status` belong to the `if-match` strategy",
                        "Remove them, or use `strategy: if-match`.",
                    ));
                }
                let settle = match c.settle {
                    None => Settle::default(),
                    Some(s) => {
                        if s.attempts == 0 || s.attempts > 100 || s.delay_ms > 60_000 {
                            return Err(self.err(
                                "compare.settle",
                                "`settle` needs 1 to 100 `attempts` and a `delay_ms` of at most 60000",
                                "e.g. `settle: { attempts: 5, delay_ms: 500 }` for an asynchronous write endpoint.",
                            ));
                        }
                        Settle { attempts: s.attempts, delay: Duration::from_millis(s.delay_ms) }
                    }
                };
                Ok(Compare::ReadCompareWrite { settle })
            }
            "if-match" => {
                if c.settle.is_some() {
                    return Err(self.err(
                        "compare.settle",
                        "`settle` belongs to the `read-compare-write` strategy",
                        "Remove it: an If-Match write is checked by the platform itself.",
                    ));
                }
                let Some(item) = c.item else {
                    return Err(self.err(
                        "compare",
                        "strategy `if-match` needs `item`: the per-key read that returns the ETag",
                        "Add `item: { request: { path: \"/items/{{ sku | urlencode }}/{{ location | urlencode }}\" }, qty: quantity }`.",
                    ));
                };
                if !per_key {
                    return Err(self.err(
                        "write",
                        "strategy `if-match` writes one key per request: set `write.per: key`",
                        "An ETag guards one resource; add `per: key` to `write`.",
                    ));
                }
                let etag_header = item.etag_header.unwrap_or_else(|| "ETag".into());
                check_header_name(&etag_header)
                    .map_err(|m| self.err("compare.item.etag_header", m, "Use a valid HTTP header name."))?;
                let qty = self.path("compare.item.qty", &item.qty)?;
                let request = self.request("compare.item.request", item.request, Method::GET)?;
                let conflict_status = c.conflict_status.unwrap_or_else(|| vec![412]);
                if conflict_status.iter().any(|s| !(400..500).contains(s)) {
                    return Err(self.err(
                        "compare.conflict_status",
                        "`conflict_status` lists 4xx statuses",
                        "Use the status the platform answers a failed If-Match with, usually 412 (sometimes 409).",
                    ));
                }
                Ok(Compare::IfMatch { item: ItemSpec { request, qty, etag_header }, conflict_status })
            }
            other => Err(self.err(
                "compare.strategy",
                format!("unknown compare strategy `{other}`"),
                "Use `read-compare-write` (any API) or `if-match` (APIs that honour ETags).",
            )),
        }
    }

    fn compile(mut self, mut raw: RawManifest) -> Result<Manifest, ManifestError> {
        if raw.name.trim().is_empty() {
            return Err(self.err("name", "`name` is empty", "Name the platform, e.g. `name: bigcommerce`."));
        }
        for k in raw.headers.keys() {
            check_header_name(k).map_err(|m| self.err(&format!("headers.{k}"), m, "Use a valid HTTP header name."))?;
        }
        let limits = self.limits(raw.limits)?;
        let auth_header = match raw.auth {
            None => None,
            Some(a) => {
                let header = a.header.unwrap_or_else(|| "Authorization".into());
                check_header_name(&header).map_err(|m| self.err("auth.header", m, "Use a valid HTTP header name."))?;
                let value = a.value.unwrap_or_else(|| "Bearer {{ token }}".into());
                self.template("auth.value", &value)?;
                Some(header)
            }
        };
        let (paging, max_pages) = self.paging(raw.read.pagination.take())?;
        let rows = self.rows(&raw.read)?;
        let read = self.request("read.request", raw.read.request, Method::GET)?;
        let lookup = match raw.lookup {
            None => None,
            Some(l) => {
                let max_keys = l.max_keys.unwrap_or(50);
                if max_keys == 0 {
                    return Err(self.err("lookup.max_keys", "`max_keys` must be at least 1", "e.g. `max_keys: 50`."));
                }
                Some((self.request("lookup.request", l.request, Method::GET)?, max_keys))
            }
        };
        let (write, per_key, requires) = match raw.write {
            None => (None, false, vec![]),
            Some(w) => {
                for f in &w.requires_fields {
                    if !raw.read.fields.contains_key(f) {
                        return Err(self.err(
                            "write.requires_fields",
                            format!("`{f}` is not one of `read.fields`"),
                            "List names defined under `read.fields`, whose values the write needs.",
                        ));
                    }
                }
                let per_key = match w.per.as_deref() {
                    None | Some("batch") => false,
                    Some("key") => true,
                    Some(other) => {
                        return Err(self.err("write.per", format!("unknown value `{other}`"), "Use `batch` or `key`."));
                    }
                };
                (Some(self.request("write.request", w.request, Method::POST)?), per_key, w.requires_fields)
            }
        };
        if write.is_none() && raw.compare.is_some() {
            return Err(self.err(
                "compare",
                "`compare` without `write`",
                "Add a `write` section, or remove `compare`.",
            ));
        }
        let compare = self.compare(raw.compare, per_key)?;
        Ok(Manifest {
            name: raw.name,
            description: raw.description,
            file: self.file.to_owned(),
            vars: raw.vars,
            auth_header,
            headers: raw.headers.into_iter().collect(),
            limits,
            read,
            paging,
            max_pages,
            rows,
            lookup,
            write: write.map(|request| WriteSpec { request, per_key, requires }),
            compare,
            templates: self.templates,
        })
    }
}

fn check_header_name(name: &str) -> Result<(), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map(|_| ())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "name: t\nread:\n  request: { path: /items }\n  records: data[*]\n  sku: sku\n  location: loc\n  qty: qty\n";

    fn err(text: &str) -> ManifestError {
        Manifest::parse(text, "providers/t.yaml").unwrap_err()
    }

    #[test]
    fn shipped_manifests_load() {
        for (name, _) in BUILTIN {
            let m = Manifest::load(&PathBuf::from(format!("{BUILTIN_PREFIX}{name}"))).unwrap();
            assert_eq!(&m.name, name);
            assert!(m.write.is_some(), "{name} is writable");
        }
    }

    #[test]
    fn a_minimal_manifest_is_read_only() {
        let m = Manifest::parse(MINIMAL, "t.yaml").unwrap();
        assert!(m.write.is_none());
        assert!(matches!(m.paging, Paging::None));
        assert_eq!(m.limits.batch_size, 50);
    }

    #[test]
    fn unknown_keys_name_file_line_and_column() {
        let e = err(&format!("{MINIMAL}  recrods: x\n"));
        assert_eq!((e.file.as_str(), e.line), ("providers/t.yaml", 8), "{e}");
        assert!(e.col > 0);
        assert!(e.message.contains("unknown field `recrods`"), "{e}");
        assert!(e.to_string().starts_with("providers/t.yaml:8:"), "{e}");
        assert!(e.help().contains("Remove or rename"));
        let e =
            err("name: t\nbogus: 1\nread:\n  request: { path: /x }\n  records: a\n  sku: s\n  location: l\n  qty: q\n");
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn semantic_errors_point_at_the_value() {
        let e = err(&MINIMAL.replace("records: data[*]", "records: data[x]"));
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("read.records"), "{e}");
        let e = err(&format!("{MINIMAL}  pagination: {{ style: pages }}\n"));
        assert!(e.message.contains("unknown pagination style `pages`"), "{e}");
        assert_eq!(e.line, 8);
        let e = err(&format!("{MINIMAL}write:\n  request: {{ method: PUT, path: /x, body: \"{{{{ oops\" }}\n"));
        assert!(e.message.contains("template `write.request.body`"), "{e}");
        assert_eq!(e.line, 9, "{e}");
        let e = err(&format!(
            "{MINIMAL}write:\n  request: {{ method: PUT, path: /x }}\ncompare:\n  strategy: if-match\n  item: {{ request: {{ path: /i }}, qty: q }}\n"
        ));
        assert!(e.message.contains("per: key"), "{e}");
        let e = err(&MINIMAL.replace("  location: loc\n", ""));
        assert!(e.message.contains("location_value"), "{e}");
        let e = err("name: t\nname: u\n");
        assert!(e.message.contains("appears twice"), "{e}");
        let e = err("name: [\n");
        assert!(e.message.contains("YAML syntax"), "{e}");
    }

    #[test]
    fn bare_names_resolve_to_local_files_first() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(manifest_path(d.path(), "bigcommerce"), PathBuf::from("builtin:bigcommerce"));
        assert_eq!(manifest_path(d.path(), "nosuch"), d.path().join("providers/nosuch.yaml"));
        assert_eq!(manifest_path(d.path(), "providers/x.yaml"), d.path().join("providers/x.yaml"));
        std::fs::create_dir_all(d.path().join("providers")).unwrap();
        std::fs::write(d.path().join("providers/bigcommerce.yaml"), MINIMAL).unwrap();
        assert_eq!(manifest_path(d.path(), "bigcommerce"), d.path().join("providers/bigcommerce.yaml"));
        let e = Manifest::load(&d.path().join("providers/nosuch.yaml")).unwrap_err();
        assert!(e.message.contains("cannot read") && e.help().contains("bigcommerce"), "{e}");
    }
}
