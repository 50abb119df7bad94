//! The conformance suite against the `postgres` provider, on a real PostgreSQL
//! server (see `tests/pg.rs`). Each test has a database of its own.
//!
//! **Transient failure.** `fail_next_writes(n)` installs a statement trigger on
//! the inventory table that makes the next `n` write statements fail, alternately
//! with a serialization failure (SQLSTATE 40001, what a busy SERIALIZABLE
//! database answers) and by terminating the provider's own connection from inside
//! the statement (`pg_terminate_backend(pg_backend_pid())`: the client sees
//! SQLSTATE 57P01 or a reset connection, as when a server restarts or a proxy drops
//! the link). The counter is a sequence, so it advances although the failed
//! transactions roll back. The provider reports both as `Unavailable`, drops the
//! connection, and the apply loop retries the batch on a new one.

use std::path::Path;
use std::sync::Mutex;

use stockshift::config::model::PostgresProviderConfig;
use stockshift::provider::Provider;
use stockshift::provider::postgres::PostgresProvider;

use super::{Contents, Subject};
use crate::pg::{self, Client};

/// The environment variable the plans name for the URL.
const URL_ENV: &str = "STOCKSHIFT_CONFORMANCE_PG_URL";

pub struct Postgres {
    url: String,
    client: Mutex<Client>,
}

fn make(_dir: &Path) -> Option<Postgres> {
    let pg = pg::available()?;
    let url = pg.create_database();
    let client = Mutex::new(Client::connect(&url).unwrap());
    Some(Postgres { url, client })
}

/// The provider settings a plan with `target_yaml` gives.
pub fn config(url_env: &str, batch: usize) -> PostgresProviderConfig {
    serde_json::from_value(serde_json::json!({ "url_env": url_env, "batch_size": batch })).unwrap()
}

impl Postgres {
    fn client(&self) -> std::sync::MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Subject for Postgres {
    fn target_yaml(&self, _dir: &Path, batch: usize) -> String {
        format!("{{ provider: postgres, url_env: {URL_ENV}, batch_size: {batch} }}")
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![(URL_ENV.to_owned(), self.url.clone())]
    }

    fn seed(&self, _dir: &Path, rows: &[(String, String, i64)]) {
        let mut c = self.client();
        c.execute(
            "DROP TABLE IF EXISTS inventory;
             CREATE TABLE inventory (sku text NOT NULL, location text NOT NULL, qty bigint NOT NULL,
                                     version bigint NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));",
        );
        c.insert_rows("inventory", rows);
    }

    fn contents(&self, _dir: &Path) -> Contents {
        let rows = self.client().text_rows("SELECT sku, location, qty FROM inventory");
        rows.into_iter()
            .map(|r| {
                let s = |i: usize| r[i].clone().unwrap();
                ((s(0), s(1)), s(2).parse().unwrap())
            })
            .collect()
    }

    fn poke(&self, _dir: &Path, sku: &str, location: &str, qty: i64) {
        let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
        self.client().execute(&format!(
            "UPDATE inventory SET qty = {qty} WHERE sku = {} AND location = {}",
            lit(sku),
            lit(location)
        ));
    }

    fn fail_next_writes(&self, _dir: &Path, n: usize) {
        self.client().execute(&format!(
            "DROP TABLE IF EXISTS fault_budget;
             CREATE TABLE fault_budget (n bigint NOT NULL);
             INSERT INTO fault_budget VALUES ({n});
             DROP SEQUENCE IF EXISTS fault_seq;
             CREATE SEQUENCE fault_seq;
             CREATE OR REPLACE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$
             DECLARE k bigint;
             BEGIN
               IF (SELECT n FROM fault_budget) < 1 THEN RETURN NULL; END IF;
               k := nextval('fault_seq');
               IF k <= (SELECT n FROM fault_budget) THEN
                 IF k % 2 = 1 THEN
                   RAISE EXCEPTION 'injected fault %: could not serialize access', k USING ERRCODE = '40001';
                 END IF;
                 PERFORM pg_terminate_backend(pg_backend_pid());
                 PERFORM pg_sleep(10);
               END IF;
               RETURN NULL;
             END $$;
             DROP TRIGGER IF EXISTS inject_fault ON inventory;
             CREATE TRIGGER inject_fault BEFORE UPDATE ON inventory
               FOR EACH STATEMENT EXECUTE FUNCTION inject_fault();"
        ));
    }

    fn open(&self, _dir: &Path) -> Box<dyn Provider> {
        Box::new(PostgresProvider::new(&self.url, &config(URL_ENV, 2000)).unwrap())
    }
}

/// The suite's cases, each skipped (with a note) under `STOCKSHIFT_SKIP_PG=1`.
macro_rules! cases {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let d = tempfile::tempdir().unwrap();
            let Some(s) = make(d.path()) else { return };
            super::$name(&s, d.path());
        }
    )*};
}

cases!(create, update, conflict, already_applied, retry_after_transient_failure, resume_after_kill, rollback);

/// The injected faults really happen and are survived: the provider reports
/// `Unavailable` for each, then writes on a new connection.
#[test]
fn injected_faults_are_unavailable_then_recovered() {
    let d = tempfile::tempdir().unwrap();
    let Some(s) = make(d.path()) else { return };
    s.seed(d.path(), &[("A".into(), "W".into(), 1)]);
    s.fail_next_writes(d.path(), 2);
    let mut p = s.open(d.path());
    let w = stockshift::provider::Write { sku: "A".into(), location: "W".into(), expected: Some(1), new: 2 };
    for kind in ["40001", "57P01"] {
        match p.write_batch(std::slice::from_ref(&w)) {
            Err(stockshift::provider::ProviderError::Unavailable { message, .. }) => {
                assert!(message.contains(kind) || message.to_lowercase().contains("connection"), "{kind}: {message}")
            }
            other => panic!("expected Unavailable ({kind}), got {other:?}"),
        }
    }
    assert_eq!(p.write_batch(&[w]).unwrap(), vec![stockshift::provider::WriteOutcome::Applied]);
    assert_eq!(s.contents(d.path())[&super::key("A", "W")], 2);
}
