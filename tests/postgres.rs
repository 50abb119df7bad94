//! The `postgres` provider against a real server (`tests/pg.rs`): query templates
//! and their bound parameters, bad rows, clear errors, transient failures,
//! secrets, table and column variants, and the example plan end to end. The
//! conditional-write semantics are in the conformance suite
//! (`tests/conformance/postgres.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use stockshift::config::model::PostgresProviderConfig;
use stockshift::provider::postgres::PostgresProvider;
use stockshift::provider::{Provider, ProviderError, RowSink, Write, WriteOutcome};

use crate::pg::{self, Client};
use crate::util::{copy_dir, root, run, stockshift};

fn cfg(json: serde_json::Value) -> PostgresProviderConfig {
    let mut j = json;
    j.as_object_mut().unwrap().entry("url_env").or_insert("UNUSED_IN_THESE_TESTS".into());
    serde_json::from_value(j).unwrap()
}

fn open(url: &str, json: serde_json::Value) -> PostgresProvider {
    PostgresProvider::new(url, &cfg(json)).unwrap()
}

#[derive(Default, Debug)]
struct Collect {
    rows: Vec<(String, String, i64, u64)>,
    problems: Vec<(u64, String)>,
}

impl RowSink for Collect {
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64) {
        self.rows.push((sku.into(), location.into(), qty, line));
    }
    fn problem(&mut self, line: u64, _col: usize, summary: String, _help: String) {
        self.problems.push((line, summary));
    }
}

fn read_all(p: &mut dyn Provider) -> Collect {
    let mut c = Collect::default();
    p.read(&mut c).unwrap();
    c
}

/// A fresh database with a `stock` table (several warehouses) and its client.
fn stock_db() -> Option<(String, Client)> {
    let url = pg::available()?.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(
        "CREATE TABLE stock (item text, wh text, on_hand int, company text);
         INSERT INTO stock VALUES ('A', 'EAST', 5, 'ACME'), ('B', 'EAST', 7, 'ACME'), ('C', 'WEST', 2, 'ACME'),
                                  ('D', 'EAST', 9, 'OTHER'), ('E', 'NORTH', 1, 'ACME');",
    );
    Some((url, c))
}

#[test]
fn a_query_template_reads_with_bound_parameters() {
    let Some((url, _c)) = stock_db() else { return };
    let mut p = open(
        &url,
        serde_json::json!({
            "query": "SELECT item AS sku, wh AS location, on_hand AS qty FROM stock
                      WHERE company = {{ bind(params.company) }}
                      {% if params.warehouses %}AND wh = ANY({{ bind(params.warehouses) }}){% endif %}
                      AND on_hand >= {{ bind(params.min) }}
                      ORDER BY item;",
            "params": {"company": "ACME", "warehouses": ["EAST", "WEST"], "min": 2}
        }),
    );
    let got = read_all(&mut p);
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let rows: Vec<_> = got.rows.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2, r.3)).collect();
    assert_eq!(rows, vec![("A", "EAST", 5, 1), ("B", "EAST", 7, 2), ("C", "WEST", 2, 3)]);
    // A query source is read-only.
    let e =
        p.write_batch(&[Write { sku: "A".into(), location: "EAST".into(), expected: Some(5), new: 6 }]).unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    assert_eq!(p.read_keys(&[("C".into(), "WEST".into()), ("Z".into(), "EAST".into())]).unwrap(), vec![Some(2), None]);
}

#[test]
fn an_injection_attempt_in_a_parameter_stays_a_value() {
    let Some((url, mut c)) = stock_db() else { return };
    for evil in ["ACME' OR '1'='1", "x'; DROP TABLE stock; --", "ACME\\' OR 1=1 --", "$1"] {
        let mut p = open(
            &url,
            serde_json::json!({
                "query": "SELECT item AS sku, wh AS location, on_hand AS qty FROM stock WHERE company = {{ bind(params.company) }}",
                "params": {"company": evil}
            }),
        );
        let got = read_all(&mut p);
        assert!(got.rows.is_empty(), "{evil:?} matched rows: {:?}", got.rows);
    }
    assert_eq!(c.text_rows("SELECT count(*) FROM stock")[0][0].as_deref(), Some("5"), "the table is intact");
    // Writing a value straight into the SQL text is refused before anything runs.
    let e = PostgresProvider::new(
        &url,
        &cfg(serde_json::json!({
            "query": "SELECT item AS sku, wh AS location, on_hand AS qty FROM stock WHERE company = '{{ params.company }}'",
            "params": {"company": "x'; DROP TABLE stock; --"}
        })),
    )
    .err()
    .expect("refused");
    let msg = e.to_string();
    assert!(msg.contains("bind("), "{msg}");
    assert!(!msg.contains("DROP TABLE"), "the value is not echoed: {msg}");
}

#[test]
fn bad_rows_are_problems_with_their_row_number() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(
        "CREATE TABLE inventory (sku text, location text, qty numeric);
         INSERT INTO inventory VALUES ('OK-1', 'L', 3), ('NULL-QTY', 'L', NULL), ('HALF', 'L', 1.5),
           ('HUGE', 'L', 99999999999999999999), (NULL, 'L', 1), ('OK-2', 'L', -4), ('WHOLE', 'L', 2.0);",
    );
    let mut p = open(&url, serde_json::json!({}));
    let got = read_all(&mut p);
    let rows: Vec<_> = got.rows.iter().map(|r| (r.0.as_str(), r.2, r.3)).collect();
    assert_eq!(rows, vec![("OK-1", 3, 1), ("OK-2", -4, 6)]);
    let lines: Vec<u64> = got.problems.iter().map(|p| p.0).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 7], "{:?}", got.problems);
    assert!(got.problems[0].1.contains("NULL-QTY") && got.problems[0].1.contains("NULL"), "{:?}", got.problems);
    assert!(got.problems[2].1.contains("99999999999999999999"), "{:?}", got.problems);

    // Through the CLI: the plan fails, naming every bad row, and writes nothing.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("src.csv"), "sku,location,qty\nOK-1,L,3\n").unwrap();
    std::fs::write(
        dir.path().join("plan.yaml"),
        "version: 1\nname: bad\nsource: { provider: csv, path: src.csv }\ntarget: { provider: postgres, url_env: PG_URL }\n",
    )
    .unwrap();
    let (code, out, err) = run(stockshift().current_dir(dir.path()).env("PG_URL", &url).args(["plan", "plan.yaml"]));
    assert_eq!(code, 1, "{out}{err}");
    for needle in ["NULL-QTY", "HALF", "HUGE", "rowid 5"] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn a_missing_table_or_column_is_a_clear_error() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    Client::connect(&url).unwrap().execute("CREATE TABLE stock (sku text, location text, quantity int)");
    let mut p = open(&url, serde_json::json!({"table": "nosuch"}));
    match p.read(&mut Collect::default()) {
        Err(ProviderError::Invalid { message, .. }) => assert!(message.contains("no table `nosuch`"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut p = open(&url, serde_json::json!({"table": "stock"}));
    let e = p.write_batch(&[Write { sku: "A".into(), location: "L".into(), expected: None, new: 1 }]).unwrap_err();
    assert!(e.to_string().contains("no column(s) qty") && e.to_string().contains("quantity"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("src.csv"), "sku,location,qty\nA,L,3\n").unwrap();
    std::fs::write(
        dir.path().join("plan.yaml"),
        "version: 1\nname: missing\nsource: { provider: csv, path: src.csv }\ntarget: { provider: postgres, url_env: PG_URL, table: shop.nosuch }\n",
    )
    .unwrap();
    let (code, _, err) = run(stockshift().current_dir(dir.path()).env("PG_URL", &url).args(["plan", "plan.yaml"]));
    assert_eq!(code, 1);
    assert!(err.contains("no table `shop.nosuch`"), "{err}");
    // A query naming a missing table says so too.
    let mut p = open(&url, serde_json::json!({"query": "SELECT sku, location, qty FROM nowhere"}));
    let e = p.read(&mut Collect::default()).unwrap_err().to_string();
    assert!(e.contains("\"nowhere\" does not exist"), "{e}");
    let mut p = open(&url, serde_json::json!({"query": "SELECT sku, location FROM stock"}));
    let e = p.read(&mut Collect::default()).unwrap_err().to_string();
    assert!(e.contains("must return the columns sku, location, qty"), "{e}");
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn connection_refused_is_unavailable() {
    // No server needed: nothing listens on the port.
    let url = format!("postgres://postgres@127.0.0.1:{}/db", closed_port());
    let mut p = open(&url, serde_json::json!({}));
    match p.read(&mut Collect::default()) {
        Err(ProviderError::Unavailable { message, .. }) => assert!(message.contains("cannot connect"), "{message}"),
        other => panic!("{other:?}"),
    }
    let w = Write { sku: "A".into(), location: "L".into(), expected: None, new: 1 };
    assert!(matches!(p.write_batch(&[w]), Err(ProviderError::Unavailable { .. })));
}

#[test]
fn the_password_is_never_printed() {
    const PW: &str = "Sup3r-Secret_pw";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("src.csv"), "sku,location,qty\nA,L,3\n").unwrap();
    std::fs::write(
        dir.path().join("plan.yaml"),
        "version: 1\nname: secret\nsource: { provider: csv, path: src.csv }\ntarget: { provider: postgres, url_env: PG_URL, table: nosuch }\n",
    )
    .unwrap();
    let mut urls = vec![
        format!("postgres://app:{PW}@127.0.0.1:{}/db", closed_port()),
        format!("postgres://app:{PW}@127.0.0.1:notaport/db"),
        format!("postgres://app@127.0.0.1:{}/db?password={PW}", closed_port()),
        format!("postgres://app:{PW}@127.0.0.1:{}/db?sslmode=bogus", closed_port()),
    ];
    // A real server too (it trusts local connections, so the password is accepted
    // and the error is about the missing table).
    if let Some(pg) = pg::available() {
        let real = pg.create_database();
        urls.push(real.replacen("postgres://postgres@", &format!("postgres://postgres:{PW}@"), 1));
    }
    for url in &urls {
        for args in [&["plan", "plan.yaml"][..], &["-v", "apply", "plan.yaml", "--auto-approve"][..]] {
            let (code, out, err) = run(stockshift().current_dir(dir.path()).env("PG_URL", url).args(args));
            assert_eq!(code, 1, "{url}: {out}{err}");
            assert!(!out.contains(PW) && !err.contains(PW), "{url} {args:?} printed the password:\n{out}{err}");
            assert!(err.contains("error"), "{err}");
        }
    }
}

#[test]
fn writes_handle_schemas_renamed_columns_key_types_and_repeated_keys() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(
        "CREATE SCHEMA shop;
         CREATE TABLE shop.\"Stock\" (item varchar(20) NOT NULL, site varchar(10) NOT NULL, units int NOT NULL,
                                     PRIMARY KEY (item, site));
         INSERT INTO shop.\"Stock\" VALUES ('A', 'L1', 5), ('B', 'L1', 0);",
    );
    let mut p = open(
        &url,
        serde_json::json!({"table": "shop.Stock", "columns": {"sku": "item", "location": "site", "qty": "units"}}),
    );
    let w = |s: &str, e: Option<i64>, n: i64| Write { sku: s.into(), location: "L1".into(), expected: e, new: n };
    let out = p
        .write_batch(&[
            w("A", Some(5), 6),
            w("C", None, 2),
            w("A", Some(6), 7), // the same key again: made after the first, in order
            w("C", Some(2), 3),
            w("B", Some(1), 4),
            w("D", Some(1), 4),
        ])
        .unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Applied,
            WriteOutcome::Applied,
            WriteOutcome::Applied,
            WriteOutcome::Applied,
            WriteOutcome::Conflict { found: Some(0) },
            WriteOutcome::Conflict { found: None },
        ]
    );
    let rows = c.text_rows("SELECT item, site, units FROM shop.\"Stock\" ORDER BY item");
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.into_iter().map(Option::unwrap).collect()).collect();
    assert_eq!(rows, vec![vec!["A", "L1", "7"], vec!["B", "L1", "0"], vec!["C", "L1", "3"]]);
    // A key longer than the column is an error, never silently cut to another key.
    let long = "X".repeat(25);
    assert!(p.write_batch(&[w(&long, None, 1)]).is_err());
    assert!(p.write_batch(&[w(&"A".repeat(25), Some(7), 1)]).unwrap() == vec![WriteOutcome::Conflict { found: None }]);
    assert_eq!(
        p.read_keys(&[("A".into(), "L1".into()), ("Q".into(), "L1".into()), ("C".into(), "L1".into())]).unwrap(),
        vec![Some(7), None, Some(3)]
    );
}

#[test]
fn the_version_column_counts_writes() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(
        "CREATE TABLE inventory (sku text, location text, qty bigint, version bigint NOT NULL DEFAULT 0,
                                 PRIMARY KEY (sku, location));
         INSERT INTO inventory VALUES ('A', 'L', 1, 4);",
    );
    let mut p = open(&url, serde_json::json!({}));
    let w = |s: &str, e: Option<i64>, n: i64| Write { sku: s.into(), location: "L".into(), expected: e, new: n };
    assert_eq!(
        p.write_batch(&[w("A", Some(1), 2), w("B", None, 1)]).unwrap(),
        vec![WriteOutcome::Applied, WriteOutcome::Applied]
    );
    // Already applied: neither the quantity nor the version moves.
    assert_eq!(
        p.write_batch(&[w("A", Some(1), 2), w("B", None, 1)]).unwrap(),
        vec![WriteOutcome::AlreadyApplied, WriteOutcome::AlreadyApplied]
    );
    let v = c.text_rows("SELECT sku, version FROM inventory ORDER BY sku");
    assert_eq!(v, vec![vec![Some("A".into()), Some("5".into())], vec![Some("B".into()), Some("1".into())]]);
}

fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("plans/postgres.yaml"), dir.path().join("postgres.yaml")).unwrap();
    copy_dir(&root().join("plans/postgres"), &dir.path().join("postgres"));
    dir
}

#[test]
fn the_example_plan_validates_when_its_variable_is_set() {
    let dir = example_copy();
    let (code, out, err) = run(stockshift()
        .current_dir(dir.path())
        .env("INVENTORY_DB_URL", "postgres://stockshift@db.internal:5432/shop")
        .args(["validate", "postgres.yaml"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("Success!"), "{out}");
    let (code, _, err) =
        run(stockshift().current_dir(dir.path()).env_remove("INVENTORY_DB_URL").args(["validate", "postgres.yaml"]));
    assert_eq!(code, 1);
    assert!(err.contains("INVENTORY_DB_URL"), "{err}");
    // The query in the plan's comment is a working template.
    let text = std::fs::read_to_string(dir.path().join("postgres.yaml")).unwrap();
    let commented: String = text
        .lines()
        .skip_while(|l| !l.starts_with("#   source:"))
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.strip_prefix("# ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let y: serde_yaml::Value = serde_yaml::from_str(&commented).unwrap();
    let src = &y["source"];
    let params: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(serde_json::to_value(&src["params"]).unwrap()).unwrap();
    let r = stockshift::provider::postgres::template::render(src["query"].as_str().unwrap(), &params).unwrap();
    assert!(r.sql.contains("company = $1") && r.sql.contains("ANY($2)"), "{}", r.sql);
    assert_eq!(r.binds.len(), 2);
}

fn table(c: &mut Client) -> Vec<(String, String, i64)> {
    c.text_rows("SELECT sku, location, qty FROM inventory ORDER BY location, sku")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap(), r[2].clone().unwrap().parse().unwrap()))
        .collect()
}

#[test]
fn the_example_plan_applies_and_rolls_back_against_a_real_server() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    let mut c = Client::connect(&url).unwrap();
    c.execute(&std::fs::read_to_string(root().join("plans/postgres/schema.sql")).unwrap());
    let before = table(&mut c);
    let dir = example_copy();
    let cli = |args: &[&str]| run(stockshift().current_dir(dir.path()).env("INVENTORY_DB_URL", &url).args(args));
    let (code, out, err) = cli(&["plan", "postgres.yaml", "--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("Plan: 3 to create, 4 to update, 4 unchanged."), "{out}");
    let (code, out, err) = cli(&["apply", "postgres.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("Apply complete: 7 applied, 0 already applied, 0 conflicts, 0 failed.\n"), "{out}");
    let s = |a: &str, b: &str, q: i64| (a.to_owned(), b.to_owned(), q);
    assert_eq!(
        table(&mut c),
        vec![
            s("A", "loc-1", 9),
            s("B", "loc-1", 3),
            s("EACH-1", "loc-1", 36),
            s("GONE-1", "loc-1", 0),
            s("HOT-1", "loc-1", 7),
            s("KIT-1", "loc-1", 3),
            s("NEW-1", "loc-1", 7),
            s("SAME-1", "loc-1", 20),
            s("TEE-BLUE-S", "loc-1", 10),
            s("A", "loc-2", 5),
            s("KIT-1", "loc-2", 0),
        ]
    );
    let (code, out, _) = cli(&["plan", "postgres.yaml", "--detailed-exitcode"]);
    assert_eq!(code, 0, "no changes after the apply: {out}");
    let (code, out, err) = cli(&["reconcile", "postgres.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["rollback", "postgres.yaml", "--auto-approve"]);
    assert_eq!(code, 0, "{out}{err}");
    let after: BTreeMap<_, _> = table(&mut c).into_iter().map(|(s, l, q)| ((s, l), q)).collect();
    for (s, l, q) in &before {
        assert_eq!(after.get(&(s.clone(), l.clone())), Some(q), "{s} {l} restored");
    }
}

#[test]
fn a_postgres_source_plans_into_a_sqlite_target() {
    let Some((url, _c)) = stock_db() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL,
                                 version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));
         INSERT INTO inventory (sku, location, qty) VALUES ('A', 'EAST', 1);",
    )
    .unwrap();
    write_plan(
        dir.path(),
        &format!(
            "version: 1\nname: pg-source\nsource:\n  provider: postgres\n  url_env: ERP_URL\n  query: |\n    {}\n  params: {{ company: ACME }}\ntarget: {{ provider: sqlite, path: t.db }}\n",
            "SELECT item AS sku, wh AS location, on_hand AS qty FROM stock WHERE company = {{ bind(params.company) }}"
        ),
    );
    let (code, out, err) =
        run(stockshift().current_dir(dir.path()).env("ERP_URL", &url).args(["plan", "plan.yaml", "--format", "json"]));
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"], serde_json::json!({"create": 3, "update": 1, "unchanged": 0}), "{out}");
}

fn write_plan(dir: &Path, text: &str) {
    std::fs::write(dir.join("plan.yaml"), text).unwrap();
}

#[test]
fn validate_refuses_a_query_that_splices_a_value_or_names_an_undefined_param() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), "sku,location,qty\n").unwrap();
    for (query, needle) in [
        ("SELECT sku, location, qty FROM stock WHERE company = '{{ params.company }}'", "bind("),
        ("SELECT sku, location, qty FROM stock WHERE company = {{ bind(params.compnay) }}", "undefined"),
        ("SELECT sku, location, qty FROM stock WHERE company = {{ bind(params.company }}", "syntax"),
    ] {
        write_plan(
            dir.path(),
            &format!(
                "version: 1\nname: q\nsource:\n  provider: postgres\n  url_env: ERP_URL\n  query: \"{query}\"\n  params: {{ company: \"ACME' OR 1=1\" }}\ntarget: {{ provider: csv, path: t.csv }}\n"
            ),
        );
        let (code, out, err) =
            run(stockshift().current_dir(dir.path()).env("ERP_URL", "postgres://h/db").args(["validate", "plan.yaml"]));
        assert_eq!(code, 1, "{query}: {out}{err}");
        assert!(err.contains("plan.yaml:6:") && err.contains(needle), "{query}: {err}");
        assert!(!err.contains("OR 1=1"), "the value is not echoed: {err}");
    }
}

#[test]
fn a_text_quantity_column_is_read_but_not_written() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    Client::connect(&url).unwrap().execute(
        "CREATE TABLE inventory (sku text PRIMARY KEY, location text, qty text);
         INSERT INTO inventory VALUES ('A', 'L', ' 5 '), ('B', 'L', 'five');",
    );
    let mut p = open(&url, serde_json::json!({}));
    let got = read_all(&mut p);
    assert_eq!(got.rows, vec![("A".to_owned(), "L".to_owned(), 5, 1)]);
    assert_eq!(got.problems.len(), 1, "{:?}", got.problems);
    assert!(got.problems[0].1.contains("`five`"), "{:?}", got.problems);
    let e = p.write_batch(&[Write { sku: "A".into(), location: "L".into(), expected: Some(5), new: 6 }]).unwrap_err();
    assert!(e.to_string().contains("numeric column"), "{e}");
}
