//! Checks that need more than the plan's shape: files it names, the SKU map file,
//! bundles, freeze window, event sources. The result is a [`Plan`] whose mapping
//! is compiled and whose paths are resolved against the plan's folder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::load::{Loaded, load_file};
use super::model::{
    EventSourceKind, PlanConfig, ProviderConfig, SkuMapConfig, SkuTarget, StoreBackend, UnmappedPolicy,
};
use super::spans::{Pos, Seg};
use crate::artifact::InputDigest;
use crate::diag::{Diagnostic, Diagnostics};
use crate::mapping::{Mapping, MappingBuilder};

/// A checked plan, ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The plan file as the user named it.
    pub file: String,
    pub path: PathBuf,
    /// The plan's folder; relative paths resolve against it.
    pub dir: PathBuf,
    pub config: PlanConfig,
    /// SHA-256 of the plan file's bytes.
    pub sha256: String,
    pub mapping: Mapping,
    /// Mapping files read while checking (the SKU map).
    pub inputs: Vec<InputDigest>,
    /// Non-fatal findings.
    pub warnings: Diagnostics,
}

impl Plan {
    /// A path from the plan, resolved against the plan's folder.
    pub fn resolve(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    /// The state folder: `--state DIR` when given, else `.stockshift/` beside the plan.
    pub fn state_dir(&self, over: Option<&Path>) -> PathBuf {
        over.map(Path::to_path_buf).unwrap_or_else(|| self.dir.join(".stockshift"))
    }

    /// Where the state store lives (`state:` in the plan), its local files in
    /// the state folder.
    pub fn state_at(&self, over: Option<&Path>) -> Result<crate::db::StoreAt, crate::db::DbError> {
        crate::db::StoreAt::from_config(self.state_dir(over), &self.config.state, "state")
    }

    /// Where the event queue lives (`events.queue:`; SQLite when there is no
    /// `events:` block).
    pub fn queue_at(&self, over: Option<&Path>) -> Result<crate::db::StoreAt, crate::db::DbError> {
        match &self.config.events {
            Some(ev) => crate::db::StoreAt::from_config(self.state_dir(over), &ev.queue, "events.queue"),
            None => Ok(crate::db::StoreAt::sqlite(self.state_dir(over))),
        }
    }

    /// How to show a path from the plan in messages (relative to where the user is).
    pub fn shown(&self, p: &str) -> String {
        display_join(&self.dir, p)
    }
}

fn display_join(dir: &Path, p: &str) -> String {
    let joined = dir.join(p);
    joined.strip_prefix("./").unwrap_or(&joined).display().to_string()
}

fn k(s: &str) -> Seg {
    Seg::Key(s.to_owned())
}

struct Checker<'a> {
    file: &'a str,
    loaded: &'a Loaded,
    dir: &'a Path,
    diags: Diagnostics,
}

impl Checker<'_> {
    fn at(&self, path: &[Seg]) -> Pos {
        self.loaded.spans.locate(path)
    }
    fn key_at(&self, path: &[Seg]) -> Pos {
        self.loaded.spans.locate_key(path)
    }
    fn error(&mut self, pos: Pos, summary: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::error(self.file, pos.line, pos.col, summary).help(help));
    }
    fn warning(&mut self, pos: Pos, summary: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diagnostic::warning(self.file, pos.line, pos.col, summary).help(help));
    }

    fn file_exists(&mut self, path: &[Seg], rel: &str, what: &str) -> bool {
        let full = self.dir.join(rel);
        if full.is_file() {
            return true;
        }
        let shown = display_join(self.dir, rel);
        let pos = self.at(path);
        self.error(
            pos,
            format!("{what} `{rel}` not found (looked for {shown})"),
            "Paths in a plan are relative to the plan file's folder; fix the path or create the file.",
        );
        false
    }

    fn provider(&mut self, role: &str, cfg: &ProviderConfig) {
        match cfg {
            ProviderConfig::Csv(c) => {
                self.file_exists(&[k(role), k("path")], &c.path, "File");
            }
            ProviderConfig::Sqlite(c) => {
                self.file_exists(&[k(role), k("path")], &c.path, "Database file");
            }
            ProviderConfig::Postgres(c) => {
                if let Some(q) = &c.query
                    && !q.trim_start().to_ascii_lowercase().starts_with("select")
                    && !q.trim_start().to_ascii_lowercase().starts_with("with")
                {
                    let pos = self.at(&[k(role), k("query")]);
                    self.error(
                        pos,
                        "`query` must be a SELECT",
                        "Write a query that returns the columns sku, location, qty, e.g. `SELECT sku, location, qty FROM stock WHERE warehouse = {{ bind(params.warehouse) }}`.",
                    );
                } else if let Some(q) = &c.query
                    && let Err(e) = crate::provider::postgres::template::render(q, &c.params)
                {
                    let pos = self.at(&[k(role), k("query")]);
                    self.error(
                        pos,
                        format!("`query` template: {e}"),
                        "Pass every value as `{{ bind(params.NAME) }}` (a bound parameter) and define NAME under `params:`.",
                    );
                }
            }
            ProviderConfig::Shopify(c) => {
                if !super::model::SHOPIFY_API_VERSIONS.contains(&c.api_version.as_str()) {
                    let pos = self.at(&[k(role), k("api_version")]);
                    self.error(
                        pos,
                        format!("Unknown Shopify API version `{}`", c.api_version),
                        format!(
                            "Use one of {} (versions that support `changeFromQuantity` compare-and-set).",
                            super::model::SHOPIFY_API_VERSIONS.join(", ")
                        ),
                    );
                }
                if let Some(e) = &c.endpoint {
                    self.url(&[k(role), k("endpoint")], e);
                }
            }
            ProviderConfig::Magento(c) => {
                self.url(&[k(role), k("base_url")], &c.base_url);
                if c.source_codes.is_empty() {
                    let pos = self.at(&[k(role), k("source_codes")]);
                    self.error(
                        pos,
                        "`source_codes` is empty",
                        "Map each MSI source code to a location name, e.g. `source_codes: { default: WH-EAST }`.",
                    );
                }
                self.one_to_one(&[k(role), k("source_codes")], &c.source_codes, "MSI source");
            }
            ProviderConfig::Http(c) => {
                self.url(&[k(role), k("base_url")], &c.base_url);
                self.one_to_one(&[k(role), k("locations")], &c.locations, "platform location");
                let path = crate::provider::http::manifest_path(self.dir, &c.manifest);
                match crate::provider::http::Manifest::load(&path) {
                    Ok(m) => {
                        if let (Some(header), None) = (&m.auth_header, &c.token_env) {
                            let pos = self.at(&[k(role), k("manifest")]);
                            self.error(
                                pos,
                                format!(
                                    "Manifest `{}` sends a credential in `{header}` but `token_env` is not set",
                                    c.manifest
                                ),
                                "Add `token_env: NAME`, the environment variable holding the API token.",
                            );
                        }
                    }
                    Err(e) => {
                        let pos = self.at(&[k(role), k("manifest")]);
                        self.error(pos, format!("Manifest `{}`: {e}", c.manifest), e.help());
                    }
                }
            }
        }
        for (key, var) in cfg.env_vars() {
            if looks_like_secret(var) {
                continue; // reported with the other `*_env` keys
            }
            if std::env::var_os(var).is_none_or(|v| v.is_empty()) {
                let pos = self.at(&[k(role), k(key)]);
                self.error(
                    pos,
                    format!("Environment variable `{var}` (named by `{role}.{key}`) is not set"),
                    format!(
                        "Export it before running stockshift, e.g. `export {var}=...`; its value is never printed."
                    ),
                );
            }
        }
    }

    /// A map from platform ids to plan locations must not send two ids to one location.
    fn one_to_one(&mut self, path: &[Seg], map: &BTreeMap<String, String>, what: &str) {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (remote, local) in map {
            if let Some(first) = seen.insert(local.as_str(), remote.as_str()) {
                let mut at = path.to_vec();
                at.push(Seg::Key(remote.clone()));
                let pos = self.at(&at);
                self.error(
                    pos,
                    format!("Location `{local}` is named by two of the {what}s: `{first}` and `{remote}`"),
                    format!("Give each {what} its own location name, so writes to `{local}` have one place to go."),
                );
            }
        }
    }

    fn url(&mut self, path: &[Seg], value: &str) {
        if !(value.starts_with("https://") || value.starts_with("http://")) || value.len() < 10 {
            let pos = self.at(path);
            self.error(
                pos,
                format!("`{value}` is not an http(s) URL"),
                "Write the full URL with its scheme, e.g. `https://shop.example.com/rest`.",
            );
        }
    }
}

/// Loads and checks a plan file.
pub fn check_file(path: &Path) -> Result<Plan, Diagnostics> {
    let file = path.display().to_string();
    let loaded = load_file(path, &file)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
    let sha256 = hex::encode(Sha256::digest(loaded.text.as_bytes()));
    let mut ck = Checker { file: &file, loaded: &loaded, dir: &dir, diags: Diagnostics::new() };
    let cfg = &loaded.config;

    ck.provider("source", &cfg.source);
    ck.provider("target", &cfg.target);
    if let (ProviderConfig::Sqlite(s), ProviderConfig::Sqlite(t)) = (&cfg.source, &cfg.target)
        && dir.join(&s.path) == dir.join(&t.path)
        && s.table == t.table
    {
        let pos = ck.at(&[k("target"), k("path")]);
        ck.error(
            pos,
            "Source and target are the same table",
            "A plan copies stock from one system to another; point the target at a different file or table.",
        );
    }

    let mut builder = MappingBuilder::new();
    let mut inputs = Vec::new();
    let m = &cfg.mapping;
    match &m.skus {
        None => {}
        Some(SkuMapConfig::Inline(map)) => {
            for (old, t) in map {
                let (new, factor) = match t {
                    SkuTarget::Name(n) => (n.as_str(), 1),
                    SkuTarget::WithFactor(w) => (w.sku.as_str(), w.factor),
                };
                builder.rename(old, new, factor.min(i64::MAX as u64) as i64);
            }
        }
        Some(SkuMapConfig::File(f)) => {
            let sku_path = [k("mapping"), k("skus"), k("file")];
            if ck.file_exists(&sku_path, &f.file, "SKU map file") {
                let shown = display_join(&dir, &f.file);
                match read_sku_map(&dir.join(&f.file), &shown, &mut builder) {
                    Ok(sha) => inputs.push(InputDigest { role: "sku_map".into(), path: f.file.clone(), sha256: sha }),
                    Err(d) => ck.diags.extend(d),
                }
            }
        }
    }
    builder.unmapped_skus(m.unmapped_skus);
    let loc_policy = m.unmapped_locations.unwrap_or(if m.locations.is_some() {
        UnmappedPolicy::Error
    } else {
        UnmappedPolicy::Passthrough
    });
    builder.locations(m.locations.clone().map(|l| l.into_iter().collect::<Vec<_>>()));
    builder.unmapped_locations(loc_policy);

    // Bundles: components must not be bundles; a bundle needs components.
    for (bundle, b) in &m.bundles {
        if b.components.is_empty() {
            let pos = ck.at(&[k("mapping"), k("bundles"), k(bundle), k("components")]);
            ck.error(
                pos,
                format!("Bundle `{bundle}` has no components"),
                "List its components with units per bundle, e.g. `components: { A: 2, B: 1 }`.",
            );
        }
        for comp in b.components.keys() {
            if m.bundles.contains_key(comp) {
                let pos = ck.key_at(&[k("mapping"), k("bundles"), k(bundle), k("components"), k(comp)]);
                ck.error(
                    pos,
                    format!("Component `{comp}` of bundle `{bundle}` is itself a bundle"),
                    format!(
                        "Nested bundles are not supported: list the components of `{comp}` in `{bundle}` directly."
                    ),
                );
            }
        }
        builder.bundle(bundle, b.components.iter().map(|(c, u)| (c.clone(), u.0.min(i64::MAX as u64) as i64)));
    }
    for sku in m.safety_stock.per_sku.keys() {
        if m.bundles.contains_key(sku) {
            let pos = ck.key_at(&[k("mapping"), k("safety_stock"), k("per_sku"), k(sku)]);
            ck.error(
                pos,
                format!("Safety stock for bundle `{sku}`"),
                "A bundle's stock is derived from its components after safety stock is taken; hold stock back on the components instead.",
            );
        }
    }
    let clamp = |v: u64| v.min(i64::MAX as u64) as i64;
    builder.safety_stock(
        clamp(m.safety_stock.default),
        m.safety_stock.per_sku.iter().map(|(s, v)| (s.clone(), clamp(*v))),
    );
    builder.orphans(m.orphans);
    let mapping = builder.build();

    // SKU names used in safety stock and bundles that look like source names.
    let renamed_away: HashMap<&str, &str> =
        mapping.renames().iter().filter(|r| r.old != r.new).map(|r| (&*r.old, &*r.new)).collect();
    let new_names: std::collections::HashSet<&str> = mapping.renames().iter().map(|r| &*r.new).collect();
    for sku in m.safety_stock.per_sku.keys() {
        if let Some(new) = renamed_away.get(sku.as_str()).filter(|_| !new_names.contains(sku.as_str())) {
            let pos = ck.key_at(&[k("mapping"), k("safety_stock"), k("per_sku"), k(sku)]);
            ck.warning(
                pos,
                format!("`{sku}` is an old SKU; safety stock names target SKUs"),
                format!("`{sku}` is renamed to `{new}`, so this entry matches nothing; write `{new}` instead."),
            );
        }
    }

    // `*_env` keys name variables; a value shaped like a credential is a leaked secret.
    let mut envs: Vec<(Vec<Seg>, &str)> = vec![];
    if let Some(u) = &cfg.state.url_env {
        envs.push((vec![k("state"), k("url_env")], u));
    }
    if let Some(ev) = &cfg.events {
        if let Some(u) = &ev.queue.url_env {
            envs.push((vec![k("events"), k("queue"), k("url_env")], u));
        }
        for (i, s) in ev.sources.iter().enumerate() {
            if let Some(v) = &s.secret_env {
                envs.push((vec![k("events"), k("sources"), Seg::Index(i), k("secret_env")], v));
            }
        }
    }
    if let Some(a) = &cfg.admin {
        envs.push((vec![k("admin"), k("token_env")], &a.token_env));
    }
    for (role, p) in [("source", &cfg.source), ("target", &cfg.target)] {
        for (key, var) in p.env_vars() {
            envs.push((vec![k(role), k(key)], var));
        }
    }
    for (path, value) in envs {
        if looks_like_secret(value) {
            let pos = ck.at(&path);
            let key = crate::config::spans::display_path(&path);
            ck.error(
                pos,
                format!("`{key}` holds what looks like a secret, not a variable name"),
                "Put the secret in an environment variable and write only the variable's name here, e.g. `ERP_WEBHOOK_SECRET` (and rotate the secret if this file was committed).",
            );
        }
    }

    if let Some(f) = &cfg.freeze {
        if f.start.parse::<jiff::Timestamp>().is_err() {
            let pos = ck.at(&[k("freeze"), k("start")]);
            ck.error(
                pos,
                format!("Invalid freeze start `{}`", f.start),
                "Use an RFC 3339 timestamp with a zone, e.g. `2026-12-01T02:00:00Z`.",
            );
        }
        match f.duration.parse::<jiff::SignedDuration>() {
            Ok(d) if d.is_positive() => {}
            _ => {
                let pos = ck.at(&[k("freeze"), k("duration")]);
                ck.error(
                    pos,
                    format!("Invalid freeze duration `{}`", f.duration),
                    "Use a positive duration such as `15m`, `1h` or `90s`.",
                );
            }
        }
    }

    for (name, store) in [("state", Some(&cfg.state)), ("events.queue", cfg.events.as_ref().map(|e| &e.queue))] {
        let Some(s) = store else { continue };
        let at = |key: &str| -> Vec<Seg> { name.split('.').map(k).chain([k(key)]).collect() };
        if s.backend == StoreBackend::Postgres {
            match s.url_env.as_deref() {
                None => {
                    let pos = ck.at(&at("backend"));
                    ck.error(
                        pos,
                        format!("`{name}.backend: postgres` needs `url_env`"),
                        format!(
                            "Add `url_env: STOCKSHIFT_{}_URL` naming the environment variable that holds the connection URL.",
                            if name == "state" { "STATE" } else { "QUEUE" }
                        ),
                    );
                }
                Some(var) if looks_like_secret(var) => {} // reported with the other `*_env` keys
                Some(var) if std::env::var_os(var).is_none_or(|v| v.is_empty()) => {
                    let pos = ck.at(&at("url_env"));
                    ck.error(
                        pos,
                        format!("Environment variable `{var}` (named by `{name}.url_env`) is not set"),
                        format!(
                            "Export it before running stockshift, e.g. `export {var}=postgres://user@host/db`; its value is never printed."
                        ),
                    );
                }
                Some(_) => {}
            }
        } else if s.url_env.is_some() {
            let pos = ck.at(&at("url_env"));
            ck.warning(
                pos,
                format!("`{name}.url_env` is ignored with the sqlite backend"),
                "Remove it, or use it with `backend: postgres`.",
            );
        }
    }

    if let Some(ev) = &cfg.events {
        if ev.listen.parse::<std::net::SocketAddr>().is_err() {
            let pos = ck.at(&[k("events"), k("listen")]);
            ck.error(
                pos,
                format!("Invalid listen address `{}`", ev.listen),
                "Use host:port with an IP address, e.g. `127.0.0.1:8088`.",
            );
        } else if ev.listen.parse::<std::net::SocketAddr>().is_ok_and(|a| !a.ip().is_loopback()) {
            let pos = ck.at(&[k("events"), k("listen")]);
            ck.warning(
                pos,
                format!("`events.listen` is {}, reachable from other machines", ev.listen),
                "Keep the receiver on 127.0.0.1 behind a TLS-terminating proxy unless it must be reached directly.",
            );
        }
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, s) in ev.sources.iter().enumerate() {
            if let Some(first) = seen.insert(&s.name, i) {
                let pos = ck.at(&[k("events"), k("sources"), Seg::Index(i), k("name")]);
                ck.error(
                    pos,
                    format!("Duplicate event source name `{}`", s.name),
                    format!("Source {first} already uses this name; names appear in webhook URLs and must be unique."),
                );
            }
            event_source_keys(&mut ck, i, s);
            if let Some(map) = s.inventory_map.as_ref().filter(|_| s.kind.is_webhook()) {
                ck.file_exists(
                    &[k("events"), k("sources"), Seg::Index(i), k("inventory_map")],
                    map,
                    "Inventory map file",
                );
            } else if s.kind == EventSourceKind::Shopify {
                let pos = ck.at(&[k("events"), k("sources"), Seg::Index(i)]);
                ck.warning(
                    pos,
                    format!("Shopify source `{}` has no `inventory_map`", s.name),
                    "inventory_levels/update webhooks name inventory item and location ids; without a map file they cannot be resolved to SKUs and are rejected.",
                );
            }
        }
    }

    if ck.diags.has_errors() {
        let mut d = ck.diags;
        d.sort();
        return Err(d);
    }
    let mut warnings = ck.diags;
    warnings.sort();
    Ok(Plan {
        file: file.clone(),
        path: path.to_path_buf(),
        dir: dir.clone(),
        config: loaded.config,
        sha256,
        mapping,
        inputs,
        warnings,
    })
}

/// The keys an event source needs and may have for its kind: webhook kinds need
/// `secret_env` and take no Kafka keys; `kafka` needs `brokers` (`host:port`) and
/// `topic`, and takes neither a secret nor an inventory map.
fn event_source_keys(ck: &mut Checker<'_>, i: usize, s: &super::model::EventSourceConfig) {
    let at = |key: &str| vec![k("events"), k("sources"), Seg::Index(i), k(key)];
    let whole = [k("events"), k("sources"), Seg::Index(i)];
    let kind = s.kind.as_str();
    if s.kind.is_webhook() {
        if s.secret_env.is_none() {
            let pos = ck.at(&whole);
            ck.error(
                pos,
                format!("Source `{}` (kind {kind}) has no `secret_env`", s.name),
                "Webhook sources are signed: name the environment variable holding the signing secret, e.g. `secret_env: ERP_WEBHOOK_SECRET`.",
            );
        }
        for (key, given) in
            [("brokers", !s.brokers.is_empty()), ("topic", s.topic.is_some()), ("group", s.group.is_some())]
        {
            if given {
                let pos = ck.key_at(&at(key));
                ck.error(
                    pos,
                    format!("`{key}` is only for `kind: kafka` sources; `{}` is a {kind} webhook source", s.name),
                    format!("Remove `{key}`, or set `kind: kafka` to consume events from a Kafka topic."),
                );
            }
        }
        return;
    }
    if s.brokers.is_empty() {
        // At `brokers: []` when written, else at the source.
        let pos = ck.at(&at("brokers"));
        ck.error(
            pos,
            format!("Kafka source `{}` has no `brokers`", s.name),
            "List the bootstrap brokers as host:port, e.g. `brokers: [\"127.0.0.1:9092\"]`.",
        );
    }
    for (j, b) in s.brokers.iter().enumerate() {
        let port_ok = b.rsplit_once(':').is_some_and(|(host, port)| {
            !host.trim().is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            let pos = ck.at(&[k("events"), k("sources"), Seg::Index(i), k("brokers"), Seg::Index(j)]);
            ck.error(
                pos,
                format!("Invalid Kafka broker `{b}`"),
                "Write host:port without a scheme, e.g. `127.0.0.1:9092` or `kafka-1.internal:9092`.",
            );
        }
    }
    if s.topic.is_none() {
        let pos = ck.at(&whole);
        ck.error(
            pos,
            format!("Kafka source `{}` has no `topic`", s.name),
            "Name the topic of normalized events to consume, e.g. `topic: inventory-events`.",
        );
    }
    for (key, given) in [("secret_env", s.secret_env.is_some()), ("inventory_map", s.inventory_map.is_some())] {
        if given {
            let pos = ck.key_at(&at(key));
            ck.error(
                pos,
                format!("`{key}` does not apply to Kafka source `{}`", s.name),
                format!(
                    "Remove `{key}`: Kafka records carry normalized events, neither signed nor in Shopify's format."
                ),
            );
        }
    }
}

/// Reads a SKU map CSV (`old_sku,new_sku[,factor]`) into `builder`, naming every
/// bad line. Returns the file's SHA-256.
fn read_sku_map(path: &Path, shown: &str, builder: &mut MappingBuilder) -> Result<String, Diagnostics> {
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostics::from(Diagnostic::error(shown, 0, 0, format!("Cannot read: {e}"))))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let mut diags = Diagnostics::new();
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes.as_slice());
    let headers: Vec<String> = match rdr.headers() {
        Ok(h) => h.iter().map(|s| s.trim().to_owned()).collect(),
        Err(e) => {
            diags.push(
                Diagnostic::error(shown, 1, 1, format!("Unreadable header: {e}"))
                    .help("The first line must be `old_sku,new_sku[,factor]`."),
            );
            return Err(diags);
        }
    };
    let col = |n: &str| headers.iter().position(|h| h == n);
    let (Some(ci_old), Some(ci_new)) = (col("old_sku"), col("new_sku")) else {
        diags.push(
            Diagnostic::error(shown, 1, 1, format!("Header `{}` lacks old_sku or new_sku", headers.join(",")))
                .help("The first line must be `old_sku,new_sku` or `old_sku,new_sku,factor`."),
        );
        return Err(diags);
    };
    let ci_factor = col("factor");
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line()) as usize;
                diags.push(
                    Diagnostic::error(shown, line, 1, format!("Unreadable row: {e}"))
                        .help("Fix the quoting or encoding of this line."),
                );
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let old = rec.get(ci_old).unwrap_or("").trim();
        let new = rec.get(ci_new).unwrap_or("").trim();
        if old.is_empty() || new.is_empty() {
            diags.push(
                Diagnostic::error(shown, line as usize, 1, "Empty SKU")
                    .help("Both old_sku and new_sku must be filled in; delete the line if it is not needed."),
            );
            continue;
        }
        let factor = match ci_factor.and_then(|i| rec.get(i)).map(str::trim).filter(|s| !s.is_empty()) {
            None => 1,
            Some(f) => match f.parse::<i64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    diags.push(
                        Diagnostic::error(shown, line as usize, 1, format!("Invalid factor `{f}` for `{old}`")).help(
                            "A factor is a positive whole number: target units per source unit (a case of 12 is 12).",
                        ),
                    );
                    continue;
                }
            },
        };
        if let Some(first) = first_line.get(old) {
            diags.push(
                Diagnostic::error(shown, line as usize, 1, format!("Old SKU `{old}` is mapped twice"))
                    .help(format!("Line {first} already maps `{old}`; keep one line per old SKU.")),
            );
            continue;
        }
        first_line.insert(old.to_owned(), line);
        builder.rename(old, new, factor);
    }
    if diags.has_errors() { Err(diags) } else { Ok(sha) }
}

/// True when a value given as an environment variable's name looks like a credential.
fn looks_like_secret(v: &str) -> bool {
    const PREFIXES: &[&str] =
        &["whsec_", "shpss_", "shpat_", "shpca_", "shppa_", "sk_live_", "sk_test_", "ghp_", "xoxb-", "AKIA"];
    if PREFIXES.iter().any(|p| v.starts_with(p)) {
        return true;
    }
    let lower = v.chars().any(|c| c.is_ascii_lowercase());
    let digits = v.chars().filter(|c| c.is_ascii_digit()).count();
    v.len() >= 24 && lower && digits >= 4
}

#[cfg(test)]
mod tests {
    use super::looks_like_secret;

    #[test]
    fn env_names_versus_secrets() {
        for ok in ["SHOPIFY_WEBHOOK_SECRET", "ERP_SECRET", "DATABASE_URL", "shop_secret"] {
            assert!(!looks_like_secret(ok), "{ok}");
        }
        for bad in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "shpss_0123", "a8f3k2l9d8s7f6g5h4j3k2l1"] {
            assert!(looks_like_secret(bad), "{bad}");
        }
    }
}
