//! Scale-out end to end: 3 receivers (`serve` on three ports) and 3 replay
//! workers (`replay --follow`) share one PostgreSQL state and queue; the target
//! is a PostgreSQL table. Signed webhooks (with re-deliveries of earlier ids to
//! other receivers) go round-robin to the receivers; mid-way one receiver and
//! one worker are killed with SIGKILL. At the end the target must equal the
//! snapshot plus every distinct event, through a merge and a bundle, and every
//! acknowledged event must be queued exactly once.
//!
//! `STOCKSHIFT_SCALE_OUT_EVENTS` sets the number of webhooks (default 100,000).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockshift::events::signature::{SecretKey, sign_standard};

use crate::pg::{self, Client};
use crate::util::{run, serve_address, stockshift};

const SECRET_ENV: &str = "STOCKSHIFT_SCALE_ERP_SECRET";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const URL_ENV: &str = "STOCKSHIFT_SCALE_PG_URL";
/// Plain SKUs besides the merged and bundled ones.
const PLAIN: usize = 2_000;
const START_QTY: i64 = 1_000_000;

/// A keep-alive HTTP/1.1 connection that sends one signed webhook at a time.
struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: &str) -> Conn {
        Conn { addr: addr.to_owned(), stream: None, buf: Vec::new() }
    }

    /// The status code, or an error when the receiver is unreachable or the
    /// connection broke before an answer (then the webhook was not acknowledged).
    fn post(&mut self, key: &SecretKey, id: &str, body: &str) -> std::io::Result<u16> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sig = sign_standard(key, id, ts, body.as_bytes());
        let req = format!(
            "POST /webhooks/erp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let res = self.exchange(req.as_bytes());
        if res.is_err() {
            self.stream = None;
        }
        res
    }

    fn exchange(&mut self, req: &[u8]) -> std::io::Result<u16> {
        let s = self.stream.as_mut().expect("connected");
        s.write_all(req)?;
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).map_err(|_| bad("head"))?.to_owned();
                let status: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad("status"))?;
                let len = head
                    .split("\r\n")
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
                    })
                    .ok_or_else(|| bad("length"))?;
                while self.buf.len() < end + 4 + len {
                    let n = s.read(&mut chunk)?;
                    if n == 0 {
                        return Err(bad("closed"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                self.buf.drain(..end + 4 + len);
                return Ok(status);
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                return Err(bad("closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// One distinct event: id, source SKU, delta.
type Ev = (String, String, i64);

fn events(n: usize) -> (Vec<Ev>, Vec<usize>) {
    let mut rng = Rng(0x5ca1e);
    let mut skus: Vec<String> = (0..PLAIN).map(|i| format!("P-{i}")).collect();
    skus.extend(["OLD-1", "OLD-2", "COMP-A", "COMP-B"].map(String::from));
    let mut distinct: Vec<Ev> = Vec::new();
    let mut sends: Vec<usize> = Vec::with_capacity(n);
    for i in 0..n {
        if !distinct.is_empty() && rng.below(10) == 0 {
            sends.push(rng.below(distinct.len() as u64) as usize); // a re-delivery
            continue;
        }
        // A fifth of the events hit the merged and bundled SKUs, which tie
        // several keys into one partition.
        let sku = if rng.below(5) == 0 {
            skus[PLAIN + rng.below(4) as usize].clone()
        } else {
            skus[rng.below(PLAIN as u64) as usize].clone()
        };
        let delta = [-3, -2, -1, 1, 2][rng.below(5) as usize];
        distinct.push((format!("e-{i}"), sku, delta));
        sends.push(distinct.len() - 1);
    }
    (distinct, sends)
}

fn plan_yaml() -> String {
    format!(
        "version: 1
name: scale-out
source: {{ provider: csv, path: source.csv }}
target: {{ provider: postgres, url_env: {URL_ENV}, table: inventory }}
mapping:
  skus: {{ OLD-1: MERGED, OLD-2: MERGED }}
  bundles:
    KIT: {{ components: {{ COMP-A: 1, COMP-B: 2 }} }}
state: {{ backend: postgres, url_env: {URL_ENV} }}
events:
  queue: {{ backend: postgres, url_env: {URL_ENV} }}
  listen: 127.0.0.1:0
  sources:
    - {{ name: erp, kind: standard, secret_env: {SECRET_ENV} }}
limits: {{ max_writes: 1000000 }}
"
    )
}

fn command(dir: &Path, url: &str) -> std::process::Command {
    let mut c = stockshift();
    c.current_dir(dir).env(URL_ENV, url).env(SECRET_ENV, SECRET);
    c
}

struct Killed(Vec<Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pending(db: &mut Client) -> i64 {
    db.text_rows("SELECT count(*) FROM stockshift_queue.pending")[0][0].as_deref().unwrap().parse().unwrap()
}

#[test]
fn three_receivers_and_three_workers_survive_sigkill_and_end_exactly_right() {
    let Some(server) = pg::available() else { return };
    let n: usize = std::env::var("STOCKSHIFT_SCALE_OUT_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let url = server.create_database();
    let mut db = Client::connect(&url).unwrap();
    db.execute("CREATE TABLE inventory (sku text NOT NULL, location text NOT NULL, qty bigint NOT NULL, PRIMARY KEY (sku, location))");

    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("sku,location,qty\n");
    let mut snapshot: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..PLAIN {
        snapshot.insert(format!("P-{i}"), START_QTY);
    }
    for s in ["OLD-1", "OLD-2", "COMP-A", "COMP-B"] {
        snapshot.insert(s.to_owned(), START_QTY);
    }
    for (s, q) in &snapshot {
        csv.push_str(&format!("{s},WH,{q}\n"));
    }
    std::fs::write(dir.path().join("source.csv"), csv).unwrap();
    std::fs::write(dir.path().join("plan.yaml"), plan_yaml()).unwrap();

    let (code, _, stderr) = run(command(dir.path(), &url).args(["validate", "plan.yaml"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = run(command(dir.path(), &url).args(["apply", "plan.yaml", "--auto-approve"]));
    assert_eq!(code, 0, "{stdout}{stderr}");

    // Three receivers.
    let mut receivers = Killed(Vec::new());
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let mut c = command(dir.path(), &url)
            .args(["serve", "plan.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (addr, log) = serve_address(&mut c);
        let addr = addr.unwrap_or_else(|| panic!("serve did not start: {}", log.lock().unwrap()));
        addrs.push(addr);
        receivers.0.push(c);
    }
    // Three replay workers.
    let mut workers = Killed(Vec::new());
    for _ in 0..3 {
        let c = command(dir.path(), &url)
            .args(["replay", "plan.yaml", "--follow", "--interval", "100ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        workers.0.push(c);
    }

    let (distinct, sends) = events(n);
    let distinct = Arc::new(distinct);
    let sends = Arc::new(sends);
    let next = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<HashSet<usize>>> = Arc::new(Mutex::new(HashSet::new()));
    let done = Arc::new(AtomicUsize::new(0));
    const THREADS: usize = 12;
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (distinct, sends, next, acked, done, addrs) =
            (distinct.clone(), sends.clone(), next.clone(), acked.clone(), done.clone(), addrs.clone());
        handles.push(std::thread::spawn(move || {
            let key = SecretKey::standard(SECRET).unwrap();
            let mut conns: Vec<Conn> = addrs.iter().map(|a| Conn::new(a)).collect();
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&e) = sends.get(i) else { break };
                let (id, sku, delta) = &distinct[e];
                let body = format!(
                    r#"{{"id":"{id}","sku":"{sku}","location":"WH","delta":{delta},"sequence":{e},"occurred_at":"2026-11-27T10:00:00Z"}}"#
                );
                // Round-robin; a receiver that does not answer is skipped, like a
                // load balancer would, and the webhook is sent again elsewhere.
                let mut r = (i + t) % conns.len();
                let mut tries = 0;
                loop {
                    match conns[r].post(&key, id, &body) {
                        Ok(200) => {
                            mine.push(e);
                            break;
                        }
                        Ok(status) => panic!("receiver {r} answered {status} to {id}"),
                        Err(_) => {
                            tries += 1;
                            assert!(tries < 50, "no receiver accepts {id}");
                            r = (r + 1) % conns.len();
                            if tries % 3 == 0 {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            acked.lock().unwrap().extend(mine);
        }));
    }
    // Mid-way: SIGKILL one receiver, then one worker.
    let started = Instant::now();
    let wait_for = |share: usize| {
        while done.load(Ordering::Relaxed) < n * share / 100 {
            assert!(started.elapsed() < Duration::from_secs(900), "sending stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_for(30);
    receivers.0[0].kill().unwrap();
    receivers.0[0].wait().unwrap();
    wait_for(50);
    let replayed_before_kill = db.text_rows(
        "SELECT (SELECT count(*) FROM stockshift_queue.event_log) - (SELECT count(*) FROM stockshift_queue.pending)",
    )[0][0]
        .clone()
        .unwrap();
    workers.0[0].kill().unwrap();
    workers.0[0].wait().unwrap();
    for h in handles {
        h.join().unwrap();
    }
    let send_secs = started.elapsed().as_secs_f64();

    // Every distinct event was acknowledged (retried elsewhere when a receiver died).
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), distinct.len(), "every distinct event acknowledged at least once");
    // ... and stored exactly once.
    let stored = db.text_rows("SELECT id, count(*) FROM stockshift_queue.event_log GROUP BY id");
    assert_eq!(stored.len(), distinct.len(), "every acknowledged event is in the queue");
    assert!(stored.iter().all(|r| r[1].as_deref() == Some("1")), "no event stored twice");

    // The two remaining workers drain the queue, including the killed one's partitions.
    let deadline = Instant::now() + Duration::from_secs(600);
    while pending(&mut db) > 0 {
        assert!(Instant::now() < deadline, "the workers did not drain the queue: {} pending", pending(&mut db));
        std::thread::sleep(Duration::from_millis(100));
    }
    let drain_secs = started.elapsed().as_secs_f64();
    drop(workers);
    drop(receivers);

    // Expected target: snapshot plus every distinct delta, through the mapping.
    let mut source = snapshot.clone();
    for (_, sku, delta) in distinct.iter() {
        *source.get_mut(sku).unwrap() += delta;
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for (s, q) in &source {
        match s.as_str() {
            "OLD-1" | "OLD-2" => *expected.entry("MERGED".into()).or_insert(0) += q,
            _ => {
                expected.insert(s.clone(), *q);
            }
        }
    }
    expected.insert("KIT".into(), (source["COMP-A"]).min(source["COMP-B"] / 2));
    let actual: BTreeMap<String, i64> = db
        .text_rows("SELECT sku, qty::text FROM inventory WHERE location = 'WH'")
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].as_deref().unwrap().parse().unwrap()))
        .collect();
    let wrong: Vec<_> = expected.iter().filter(|(k, v)| actual.get(*k) != Some(v)).take(10).collect();
    assert!(wrong.is_empty(), "wrong target values (expected): {wrong:?}");
    assert_eq!(actual.len(), expected.len());
    eprintln!(
        "scale-out: {n} webhooks ({} distinct) through 3 receivers in {send_secs:.1} s, drained by {drain_secs:.1} s; \
         {replayed_before_kill} events replayed when a worker was killed",
        distinct.len()
    );
}
