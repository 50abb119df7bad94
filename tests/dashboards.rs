//! The Grafana dashboard and the Prometheus rules shipped in docs/ use only the
//! metrics stockshift exposes (SPEC section 8), and promtool accepts them.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

use crate::util::root;

/// SPEC section 8, plus the ignored-topics counter of the receiver.
const METRICS: [&str; 8] = [
    "stockshift_drift_keys",
    "stockshift_drift_ratio",
    "stockshift_webhooks_total",
    "stockshift_webhooks_ignored_total",
    "stockshift_replay_backlog",
    "stockshift_oversells_total",
    "stockshift_writes_total",
    "stockshift_reconcile_duration_seconds",
];

/// The histogram is rendered as a summary, which adds these series.
const SUMMARY: (&str, [&str; 2]) = ("stockshift_reconcile_duration_seconds", ["_sum", "_count"]);

/// Where the metric names are defined.
const SOURCES: [&str; 2] = ["src/events/metrics.rs", "src/ops/reconcile.rs"];

fn exposed() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = METRICS.iter().map(|m| m.to_string()).collect();
    for suffix in SUMMARY.1 {
        names.insert(format!("{}{suffix}", SUMMARY.0));
    }
    names
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ------------------------------------------------------------------ PromQL

const FUNCTIONS: &str = "\
    abs absent absent_over_time avg_over_time ceil changes clamp clamp_max clamp_min count_over_time \
    day_of_month day_of_week days_in_month delta deriv exp floor histogram_quantile holt_winters hour \
    idelta increase irate label_join label_replace last_over_time ln log10 log2 max_over_time \
    min_over_time minute month predict_linear present_over_time quantile_over_time rate resets round \
    scalar sgn sort sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time time timestamp vector \
    year";
const AGGREGATIONS: &str = "avg bottomk count count_values group max min quantile stddev stdvar sum topk";
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];

/// What an expression refers to.
#[derive(Debug, Default)]
struct Refs {
    metrics: BTreeSet<String>,
    numbers: Vec<f64>,
}

/// Replaces Grafana variables (`$name`, `${name}`, `$__rate_interval`) with `sub(name)`.
fn substitute(expr: &str, sub: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
        }
        out.push_str(&sub(&name));
    }
    out
}

/// Skips from an opening bracket to its match, stepping over quoted strings.
fn skip_group(b: &[u8], mut i: usize, open: u8, close: u8) -> usize {
    let mut depth = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    panic!("unbalanced {} in {:?}", open as char, String::from_utf8_lossy(b));
}

/// `word` starts an aggregation: `sum(...)`, `sum by (...) (...)`, `sum without (...) (...)`.
fn aggregation(word: &str, next: Option<u8>, next_word: &str) -> bool {
    AGGREGATIONS.split_whitespace().any(|a| a == word) && (next == Some(b'(') || ["by", "without"].contains(&next_word))
}

/// The metric names and number literals of a PromQL expression (Grafana variables
/// already substituted). Label matchers, ranges and label lists are skipped; an
/// unknown function is an error.
fn promql_refs(expr: &str) -> Result<Refs, String> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut refs = Refs::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'{' => i = skip_group(b, i, b'{', b'}'),
            b'[' => i = skip_group(b, i, b'[', b']'),
            b'0'..=b'9' | b'.' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                if let Ok(n) = expr[start..i].parse::<f64>() {
                    refs.numbers.push(n);
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let next = b.get(j).copied();
                let next_word: String =
                    b[j..].iter().take_while(|c| ident(**c)).map(|c| *c as char).collect::<String>();
                if LABEL_LISTS.contains(&word) {
                    if next == Some(b'(') {
                        i = skip_group(b, j, b'(', b')');
                    }
                } else if word == "offset" {
                    // The duration after it.
                    i = j;
                    while i < b.len() && b[i].is_ascii_alphanumeric() {
                        i += 1;
                    }
                } else if KEYWORDS.contains(&word) || aggregation(word, next, &next_word) {
                    // An operator, or an aggregation such as `sum by (x) (...)`.
                } else if next == Some(b'(') {
                    if !FUNCTIONS.split_whitespace().any(|f| f == word) {
                        return Err(format!("unknown function `{word}` in {expr:?}"));
                    }
                } else {
                    refs.metrics.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    Ok(refs)
}

/// Checks that an expression refers only to exposed metrics.
fn check_expr(expr: &str, what: &str) -> Refs {
    let refs = promql_refs(expr).unwrap_or_else(|e| panic!("{what}: {e}"));
    let allowed = exposed();
    let unknown: Vec<&String> = refs.metrics.iter().filter(|m| !allowed.contains(*m)).collect();
    assert!(unknown.is_empty(), "{what}: {expr:?} refers to {unknown:?}, which stockshift does not expose");
    refs
}

#[test]
fn the_promql_scanner_finds_metric_names() {
    let r = promql_refs(concat!(
        r#"sum by (source, result) (rate(stockshift_webhooks_total{instance=~"$i",result="a{b}"}[5m]))"#,
        " / ignoring (x) up > 0.05 and absent(foo offset 1h)"
    ))
    .unwrap();
    let names: Vec<&str> = r.metrics.iter().map(String::as_str).collect();
    assert_eq!(names, ["foo", "stockshift_webhooks_total", "up"]);
    assert_eq!(r.numbers, [0.05]);
    assert!(promql_refs("no_such_fn(stockshift_drift_ratio)").is_err());
    let s = substitute("rate(x[$__rate_interval]) > ${max} + $min", &|n| format!("<{n}>"));
    assert_eq!(s, "rate(x[<__rate_interval>]) > <max> + <min>");
}

#[test]
fn the_metric_list_matches_the_source() {
    let text: String = SOURCES.iter().map(|f| read(f)).collect();
    for m in METRICS {
        assert!(
            text.contains(&format!("\"{m}\"")),
            "{m} is not defined in {SOURCES:?}: update METRICS, docs/metrics.md, the dashboard and the rules"
        );
    }
    // And every metric name the code uses is in the list (so docs/ hear of new ones).
    let mut used = BTreeSet::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (at, _) in text.match_indices("\"stockshift_") {
                    let name: String =
                        text[at + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if text[at + 1 + name.len()..].starts_with('"') {
                        used.insert((name, path.strip_prefix(root()).unwrap().display().to_string()));
                    }
                }
            }
        }
    }
    assert!(!used.is_empty());
    // The PostgreSQL schemas of the state and the queue share the prefix.
    used.retain(|(name, _)| !["stockshift_state", "stockshift_queue"].contains(&name.as_str()));
    for (name, file) in used {
        assert!(METRICS.contains(&name.as_str()), "{file} uses metric {name}, which tests/dashboards.rs does not list");
    }
    let doc = read("docs/metrics.md");
    for m in METRICS {
        assert!(doc.contains(m), "docs/metrics.md does not describe {m}");
    }
}

// ------------------------------------------------------------------ dashboard

/// Every `expr` in the dashboard, with the panel it belongs to.
fn dashboard_exprs(v: &Json, panel: &str, out: &mut Vec<(String, String)>) {
    match v {
        Json::Object(m) => {
            let title = m.get("title").and_then(Json::as_str).unwrap_or(panel);
            for (k, val) in m {
                if k == "expr" {
                    out.push((title.to_string(), val.as_str().expect("expr is a string").to_string()));
                } else {
                    dashboard_exprs(val, title, out);
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| dashboard_exprs(x, panel, out)),
        _ => {}
    }
}

fn dashboard() -> Json {
    serde_json::from_str(&read("docs/grafana-dashboard.json")).expect("docs/grafana-dashboard.json is JSON")
}

/// Grafana's variables, as values PromQL accepts.
fn grafana_value(name: &str) -> String {
    match name {
        "__rate_interval" | "__interval" => "5m".into(),
        "__range" => "1h".into(),
        "instance" => ".*".into(),
        _ => "1".into(),
    }
}

#[test]
fn the_dashboard_uses_only_exposed_metrics() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion");
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));

    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().expect("panel id")), "duplicate panel id {}", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {} datasource", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {} has no targets", p["title"]));
        assert!(!targets.is_empty(), "panel {} has no targets", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {} target datasource", p["title"]);
        }
    }

    let mut exprs = Vec::new();
    dashboard_exprs(&d["panels"], "", &mut exprs);
    assert!(exprs.len() >= 10, "{} expressions", exprs.len());
    let mut seen = BTreeSet::new();
    for (panel, expr) in &exprs {
        let e = substitute(expr, &|n| grafana_value(n));
        let refs = check_expr(&e, &format!("dashboard panel {panel:?}"));
        // A constant line (`vector(...)`) is the only expression without a metric.
        assert!(
            !refs.metrics.is_empty() || e.trim_start().starts_with("vector("),
            "panel {panel:?}: {expr:?} uses no metric"
        );
        seen.extend(refs.metrics);
    }
    // The panels the brief asks for: drift, backlog, webhooks, writes, oversells, reconcile time.
    for m in METRICS.iter().filter(|m| **m != "stockshift_webhooks_ignored_total") {
        assert!(seen.contains(*m), "no dashboard panel shows {m}");
    }

    // Template variables that query Prometheus too.
    for v in d["templating"]["list"].as_array().expect("templating") {
        if v["type"] != "query" {
            continue;
        }
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}");
        let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str()).expect("query");
        let inner = q.strip_prefix("label_values(").and_then(|s| s.strip_suffix(')')).expect("label_values(...)");
        let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
        check_expr(metric, &format!("variable {}", v["name"]));
    }
}

// ------------------------------------------------------------------ rules

fn rules() -> Yaml {
    serde_yaml::from_str(&read("docs/prometheus-rules.yml")).expect("docs/prometheus-rules.yml is YAML")
}

/// GitHub's anchor for a Markdown heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn the_rules_use_only_exposed_metrics_and_link_the_runbook() {
    let r = rules();
    let groups = r["groups"].as_sequence().expect("groups");
    let runbook = read("docs/runbook.md");
    let anchors: BTreeSet<String> =
        runbook.lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect();
    let mut numbers = Vec::new();
    let mut alerts = BTreeSet::new();
    for g in groups {
        let name = g["name"].as_str().expect("group name");
        for rule in g["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().unwrap_or_else(|| panic!("{name}: a rule without `alert`"));
            assert!(alerts.insert(alert.to_string()), "alert {alert} twice");
            let expr = rule["expr"].as_str().unwrap_or_else(|| panic!("{alert}: no expr"));
            let refs = check_expr(expr, &format!("alert {alert}"));
            assert!(!refs.metrics.is_empty(), "{alert}: no metric");
            numbers.extend(refs.numbers);
            assert!(rule["for"].as_str().is_some(), "{alert}: no `for`");
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(["warning", "critical"].contains(&severity), "{alert}: severity {severity:?}");
            for key in ["summary", "description", "runbook_url"] {
                assert!(rule["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{alert}: no {key}");
            }
            let url = rule["annotations"]["runbook_url"].as_str().unwrap();
            let (file, anchor) = url.split_once('#').unwrap_or_else(|| panic!("{alert}: {url} has no anchor"));
            assert!(file.ends_with("docs/runbook.md"), "{alert}: {url}");
            assert!(anchors.contains(anchor), "{alert}: docs/runbook.md has no heading for #{anchor}");
        }
    }
    // The thresholds of the demo plan (SPEC section 2's defaults) are the alert levels.
    let plan: Yaml = serde_yaml::from_str(&read("plans/demo.yaml")).unwrap();
    for key in ["max_drift_ratio", "max_webhook_failure_rate", "max_replay_backlog"] {
        let v = plan["thresholds"][key].as_f64().unwrap_or_else(|| panic!("plans/demo.yaml thresholds.{key}"));
        assert!(numbers.contains(&v), "no rule alerts at thresholds.{key} = {v}");
    }
    // And the playbook's alert levels: drift 0.1%, webhook failures 1%.
    for v in [0.001, 0.01] {
        assert!(numbers.contains(&v), "no rule alerts at the playbook's level {v}");
    }
}

// ------------------------------------------------------------------ promtool

fn promtool() -> bool {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("note: promtool not found on PATH; skipping `promtool check rules` (apt-get install prometheus)");
    }
    found
}

fn check_rules(path: &Path) {
    let out = std::process::Command::new("promtool").arg("check").arg("rules").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules {} failed:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_and_the_dashboard_queries() {
    if !promtool() {
        return;
    }
    check_rules(&root().join("docs/prometheus-rules.yml"));

    // The dashboard's queries, as recording rules, so promtool parses them too.
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard()["panels"], "", &mut exprs);
    let rules: Vec<Yaml> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            let mut m = serde_yaml::Mapping::new();
            m.insert("record".into(), format!("stockshift:dashboard_query:{i}").into());
            m.insert("expr".into(), substitute(e, &|n| grafana_value(n)).into());
            Yaml::Mapping(m)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut doc = serde_yaml::Mapping::new();
    doc.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboard-queries.yml");
    std::fs::write(&path, serde_yaml::to_string(&Yaml::Mapping(doc)).unwrap()).unwrap();
    check_rules(&path);
}
