//! `serve` and `freeze` end to end: the real binary over real HTTP on 127.0.0.1,
//! with a tiny HTTP/1.1 client over `std::net::TcpStream`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stockshift::events::queue::{Queue, Status};
use stockshift::events::signature::{SecretKey, sign_shopify, sign_standard};
use stockshift::events::{Change, Event};

use crate::util::{copy_dir, root, run, stockshift};

const SHOP_ENV: &str = "STOCKSHIFT_TEST_SHOPIFY_SECRET";
const ERP_ENV: &str = "STOCKSHIFT_TEST_ERP_SECRET";
const SHOP_SECRET: &str = "hush-shopify-test-secret";
const ERP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

// ---------------------------------------------------------------- fixtures

/// A copy of `tests/fixtures/events` in a temporary folder, with its state under `state/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join("tests/fixtures/events"), dir.path());
        Fixture { dir }
    }
    fn plan(&self) -> PathBuf {
        self.dir.path().join("plan.yaml")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn queue(&self) -> Queue {
        Queue::open(&self.state().join("events.db")).unwrap()
    }
    fn all_events(&self) -> Vec<Event> {
        self.queue().events_after(0, 1_000_000).unwrap().into_iter().map(|q| q.event).collect()
    }
    fn serve(&self) -> Server {
        Server::start(&self.plan(), &self.state(), &[(SHOP_ENV, SHOP_SECRET), (ERP_ENV, ERP_SECRET)])
    }
}

fn shopify_fixture(name: &str) -> Vec<u8> {
    std::fs::read(root().join("tests/fixtures/events/shopify").join(name)).unwrap()
}

// ---------------------------------------------------------------- the server process

struct Server {
    child: Option<Child>,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(plan: &Path, state: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = stockshift();
        cmd.arg("serve").arg(plan).arg("--state").arg(state).args(["--listen", "127.0.0.1:0"]);
        cmd.env_remove(SHOP_ENV).env_remove(ERP_ENV);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start serve");
        let (addr, stderr) = crate::util::serve_address(&mut child);
        let addr = match addr {
            Some(a) => a,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not print its address; stderr:\n{}", stderr.lock().unwrap());
            }
        };
        assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");
        Server { child: Some(child), addr, stderr }
    }

    fn post(&self, path: &str, headers: &[(&str, String)], body: &[u8]) -> Resp {
        http(&self.addr, "POST", path, headers, body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn get(&self, path: &str) -> Resp {
        http(&self.addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait; returns the exit code and stderr.
    fn terminate(mut self) -> (Option<i32>, String) {
        let mut c = self.child.take().unwrap();
        // SAFETY: sending a signal to our own child process by its id.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return (status.code(), self.stderr.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                c.kill().unwrap();
                panic!("serve did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------- a tiny HTTP/1.1 client

#[derive(Debug)]
struct Resp {
    status: u16,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// An error answer: JSON `{"error": "..."}`; returns the message.
    fn error(&self) -> String {
        let v = self.json();
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only `error`: {v}");
        v["error"].as_str().expect("error is a string").to_owned()
    }
}

fn http(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    // The server may answer (413) and close before reading a large body; keep reading.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("empty response"))?;
    let status: u16 = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| bad(status_line))?;
    let mut length = None;
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| bad(l))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| bad("chunk size"))?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap().trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 2 + size + 2..];
        }
        body = out;
    } else if let Some(n) = length {
        if body.len() < n {
            return Err(bad("short body"));
        }
        body.truncate(n);
    }
    Ok(Resp { status, body: String::from_utf8_lossy(&body).into_owned() })
}

// ---------------------------------------------------------------- signed deliveries

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn shopify_headers(topic: &str, webhook_id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = SecretKey::shopify(SHOP_SECRET).unwrap();
    vec![
        ("X-Shopify-Topic", topic.to_owned()),
        ("X-Shopify-Hmac-Sha256", sign_shopify(&key, body)),
        ("X-Shopify-Webhook-Id", webhook_id.to_owned()),
        ("X-Shopify-Triggered-At", "2026-11-27T10:00:00.250Z".to_owned()),
        ("X-Shopify-Shop-Domain", "test.myshopify.com".to_owned()),
    ]
}

fn standard_headers(id: &str, ts: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let key = SecretKey::standard(ERP_SECRET).unwrap();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", sign_standard(&key, id, ts, body)),
    ]
}

fn erp_event(id: Option<&str>, sku: &str, delta: i64, sequence: i64) -> String {
    let id = id.map(|i| format!(r#""id":"{i}","#)).unwrap_or_default();
    format!(
        r#"{{{id}"sku":"{sku}","location":"WH-EAST","delta":{delta},"sequence":{sequence},"occurred_at":"2026-11-27T10:00:00Z"}}"#
    )
}

// ---------------------------------------------------------------- Shopify

#[test]
fn shopify_orders_create_queues_one_negative_delta_per_line_item() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let body = shopify_fixture("orders_create.json");
    let r = srv.post("/webhooks/shop", &shopify_headers("orders/create", "wh-order-1", &body), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        (v["result"].as_str(), v["accepted"].as_u64(), v["duplicate"].as_u64()),
        (Some("accepted"), Some(2), Some(0))
    );
    assert!(v["skipped"][0].as_str().unwrap().contains("has no SKU"), "{v}");
    let ev = fx.all_events();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (ev[0].id.as_str(), ev[0].source.as_str(), ev[0].sku.as_str()),
        ("wh-order-1:1", "shop", "IPOD2008PINK")
    );
    assert_eq!((ev[0].location.as_str(), ev[0].change), ("WH-EAST", Change::Delta(-2)));
    assert_eq!((ev[1].id.as_str(), ev[1].change), ("wh-order-1:3", Change::Delta(-1)));
    // Ordered by X-Shopify-Triggered-At, in milliseconds.
    assert_eq!(ev[0].sequence, "2026-11-27T10:00:00.250Z".parse::<jiff::Timestamp>().unwrap().as_millisecond());
    let q = fx.queue().get("shop", "wh-order-1:1").unwrap().unwrap();
    assert_eq!(q.status, Status::Queued);
    assert_eq!(fx.queue().raw(q.delivery.unwrap()).unwrap().unwrap(), body, "the raw body is kept");

    // The same delivery again (Shopify retries with the same webhook id): 200, not queued twice.
    let r = srv.post("/webhooks/shop", &shopify_headers("orders/create", "wh-order-1", &body), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.json()["result"].as_str(), r.json()["duplicate"].as_u64()), (Some("duplicate"), Some(2)));
    assert_eq!(fx.all_events().len(), 2);

    // Refund with restock, cancellation, inventory level.
    for (topic, file, id) in [
        ("refunds/create", "refunds_create.json", "wh-refund-1"),
        ("orders/cancelled", "orders_cancelled.json", "wh-cancel-1"),
        ("inventory_levels/update", "inventory_levels_update.json", "wh-level-1"),
    ] {
        let body = shopify_fixture(file);
        let r = srv.post("/webhooks/shop", &shopify_headers(topic, id, &body), &body);
        assert_eq!(r.status, 200, "{topic}: {}", r.body);
    }
    let level = fx.queue().get("shop", "wh-level-1").unwrap().unwrap().event;
    assert_eq!(
        (level.sku.as_str(), level.location.as_str(), level.change),
        ("IPOD2008PINK", "WH-WEST", Change::Qty(6))
    );
    assert_eq!(fx.queue().get("shop", "wh-refund-1:3").unwrap().unwrap().event.change, Change::Delta(3));
    assert_eq!(fx.all_events().len(), 2 + 2 + 2 + 1);

    // A topic stockshift does not use: 200 (so Shopify keeps the subscription), nothing queued.
    let r = srv.post("/webhooks/shop", &shopify_headers("products/update", "wh-p", b"{}"), b"{}");
    assert_eq!((r.status, r.json()["result"].as_str()), (200, Some("ignored")));
    assert_eq!(fx.all_events().len(), 7);
}

#[test]
fn shopify_bad_signatures_and_bodies_are_refused_and_never_queued() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let body = shopify_fixture("orders_create.json");
    let mut tampered = body.clone();
    let at = tampered.windows(10).position(|w| w == br#""quantity""#).unwrap();
    tampered[at + 12] = b'9';
    let r = srv.post("/webhooks/shop", &shopify_headers("orders/create", "wh-1", &body), &tampered);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.error().contains("signature does not match"), "{}", r.body);

    let mut no_sig = shopify_headers("orders/create", "wh-1", &body);
    no_sig.retain(|(k, _)| *k != "X-Shopify-Hmac-Sha256");
    let r = srv.post("/webhooks/shop", &no_sig, &body);
    assert_eq!(r.status, 401);
    assert!(r.error().contains("missing X-Shopify-Hmac-Sha256"), "{}", r.body);

    // Signed with another secret.
    let other = SecretKey::shopify("not-the-secret").unwrap();
    let mut h = shopify_headers("orders/create", "wh-1", &body);
    h[1].1 = sign_shopify(&other, &body);
    assert_eq!(srv.post("/webhooks/shop", &h, &body).status, 401);

    // Correctly signed but invalid: 400 with a message naming the problem.
    let unknown = br#"{"inventory_item_id":111,"location_id":222,"available":5}"#;
    let r = srv.post("/webhooks/shop", &shopify_headers("inventory_levels/update", "wh-2", unknown), unknown);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("inventory_item_id 111 at location_id 222 is not in the inventory map"), "{}", r.body);
    let r = srv.post("/webhooks/shop", &shopify_headers("orders/create", "wh-3", b"{nope"), b"{nope");
    assert_eq!(r.status, 400);
    assert!(r.error().contains("malformed JSON"), "{}", r.body);
    let mut no_id = shopify_headers("orders/create", "wh-4", &body);
    no_id.retain(|(k, _)| *k != "X-Shopify-Webhook-Id");
    let r = srv.post("/webhooks/shop", &no_id, &body);
    assert_eq!(r.status, 400);
    assert!(r.error().contains("X-Shopify-Webhook-Id"), "{}", r.body);

    assert!(fx.all_events().is_empty(), "nothing invalid is queued");
    let (code, stderr) = srv.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains(SHOP_SECRET), "the secret is never printed");
}

// ---------------------------------------------------------------- Standard Webhooks

#[test]
fn standard_webhooks_signatures_timestamps_and_bodies() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let ts = now();

    // A single event without id takes the webhook-id.
    let body = erp_event(None, "OLD-1", -2, 17);
    let r = srv.post("/webhooks/erp", &standard_headers("msg_1", ts, body.as_bytes()), body.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["events"][0]["id"], "msg_1");

    // Same webhook-id again (a retry, fresh timestamp): duplicate, not queued twice.
    let r = srv.post("/webhooks/erp", &standard_headers("msg_1", ts + 1, body.as_bytes()), body.as_bytes());
    assert_eq!((r.status, r.json()["result"].as_str()), (200, Some("duplicate")));

    // An array, with a `source` equal to the URL's.
    let arr = format!(
        "[{},{}]",
        erp_event(Some("a-1"), "A", 3, 1),
        r#"{"id":"a-2","source":"erp","sku":"B","location":"WH-EAST","qty":40,"sequence":2,"occurred_at":"2026-11-27T10:00:00+01:00"}"#
    );
    let r = srv.post("/webhooks/erp", &standard_headers("msg_2", ts, arr.as_bytes()), arr.as_bytes());
    assert_eq!((r.status, r.json()["accepted"].as_u64()), (200, Some(2)), "{}", r.body);
    assert_eq!(fx.queue().get("erp", "a-2").unwrap().unwrap().event.change, Change::Qty(40));

    // Several signatures, one valid (key rotation).
    let body = erp_event(Some("rot-1"), "A", 1, 3);
    let mut h = standard_headers("msg_3", ts, body.as_bytes());
    h[2].1 = format!("v1,Zm9vYmFy v1a,c29tZXRoaW5n {} v1,YmF6", h[2].1);
    assert_eq!(srv.post("/webhooks/erp", &h, body.as_bytes()).status, 200);

    // Refusals: wrong signature, wrong key, expired or future timestamp, missing headers.
    let body = erp_event(Some("bad-1"), "A", 1, 4);
    let mut h = standard_headers("msg_4", ts, body.as_bytes());
    h[2].1 = "v1,Zm9vYmFy".into();
    let r = srv.post("/webhooks/erp", &h, body.as_bytes());
    assert_eq!(r.status, 401);
    assert!(r.error().contains("signature does not match"));
    let other = SecretKey::standard("whsec_c2VjcmV0c2VjcmV0").unwrap();
    let mut h = standard_headers("msg_4", ts, body.as_bytes());
    h[2].1 = sign_standard(&other, "msg_4", ts, body.as_bytes());
    assert_eq!(srv.post("/webhooks/erp", &h, body.as_bytes()).status, 401);
    for skew in [-400, 400] {
        let r = srv.post("/webhooks/erp", &standard_headers("msg_5", ts + skew, body.as_bytes()), body.as_bytes());
        assert_eq!(r.status, 401, "skew {skew}");
        assert!(r.error().contains("5 minutes"), "{}", r.body);
    }
    let mut h = standard_headers("msg_6", ts, body.as_bytes());
    h.retain(|(k, _)| *k != "webhook-signature");
    let r = srv.post("/webhooks/erp", &h, body.as_bytes());
    assert_eq!(r.status, 401);
    assert!(r.error().contains("missing webhook-signature"));

    // Signed but invalid bodies: 400 with a JSON error naming the problem.
    let cases = [
        ("{\"id\":", "malformed JSON"),
        (
            r#"{"id":"x","sku":"A","location":"W","delta":1,"qty":2,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
            "both `delta` and `qty`",
        ),
        (
            r#"{"id":"x","source":"shop","sku":"A","location":"W","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
            "`source` is \"shop\" but the URL names source \"erp\"",
        ),
        (
            r#"{"id":"x","sku":"A","location":"W","delta":1,"sequence":"1","occurred_at":"2026-11-27T10:00:00Z"}"#,
            "`sequence`",
        ),
        (
            r#"[{"id":"y","sku":"A","location":"W","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"},{"id":"z"}]"#,
            "event 2",
        ),
    ];
    for (i, (body, want)) in cases.iter().enumerate() {
        let id = format!("msg_bad_{i}");
        let r = srv.post("/webhooks/erp", &standard_headers(&id, ts, body.as_bytes()), body.as_bytes());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let e = r.error();
        assert!(e.contains(want), "{body}\n  error: {e}\n  wanted: {want}");
    }
    let ids: Vec<String> = fx.all_events().into_iter().map(|e| e.id).collect();
    assert_eq!(ids, vec!["msg_1", "a-1", "a-2", "rot-1"], "only valid events are queued, once each");
}

#[test]
fn sizes_routes_health_and_metrics() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let ts = now();

    // 413 over 1 MiB; exactly 1 MiB is read (and here refused as invalid JSON, not as too large).
    let big = vec![b' '; (1 << 20) + 1];
    let r = srv.post("/webhooks/erp", &standard_headers("big", ts, &big), &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.error().contains("1 MiB"));
    let mut exact = erp_event(Some("exact"), "A", 1, 1).into_bytes();
    exact.resize(1 << 20, b' ');
    let r = srv.post("/webhooks/erp", &standard_headers("exact", ts, &exact), &exact);
    assert_eq!(r.status, 200, "{}", r.body);

    // 404: unknown source (not counted: its name is not a trusted label) and unknown route.
    let r = srv.post("/webhooks/nope", &[], b"{}");
    assert_eq!(r.status, 404);
    assert!(r.error().contains("no event source named `nope`"));
    assert_eq!(srv.get("/nothing-here").status, 404);

    // Counters: 2 accepted erp (exact + one more), 1 duplicate, 2 rejected (413 + bad signature).
    let body = erp_event(Some("m-2"), "A", -1, 2);
    assert_eq!(srv.post("/webhooks/erp", &standard_headers("m-2", ts, body.as_bytes()), body.as_bytes()).status, 200);
    assert_eq!(srv.post("/webhooks/erp", &standard_headers("m-2", ts, body.as_bytes()), body.as_bytes()).status, 200);
    let mut h = standard_headers("m-3", ts, body.as_bytes());
    h[2].1 = "v1,AAAA".into();
    assert_eq!(srv.post("/webhooks/erp", &h, body.as_bytes()).status, 401);
    let shop_body = shopify_fixture("orders_create.json");
    let r = srv.post("/webhooks/shop", &shopify_headers("orders/create", "o-1", &shop_body), &shop_body);
    assert_eq!(r.status, 200);

    let health = srv.get("/healthz");
    assert_eq!(health.status, 200);
    let h = health.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["backlog"]["total"], 4);
    assert_eq!(h["backlog"]["sources"]["erp"]["queued"], 2);
    assert_eq!(h["backlog"]["sources"]["shop"]["queued"], 2);
    assert_eq!(h["freeze"]["frozen"], false);

    let m = srv.get("/metrics");
    assert_eq!(m.status, 200);
    let series = parse_prometheus(&m.body).unwrap_or_else(|e| panic!("invalid metrics text: {e}\n{}", m.body));
    let get = |k: &str| *series.get(k).unwrap_or_else(|| panic!("no series {k} in\n{}", m.body));
    assert_eq!(get(r#"stockshift_webhooks_total{result="accepted",source="erp"}"#), 2.0);
    assert_eq!(get(r#"stockshift_webhooks_total{result="duplicate",source="erp"}"#), 1.0);
    assert_eq!(get(r#"stockshift_webhooks_total{result="rejected",source="erp"}"#), 2.0);
    assert_eq!(get(r#"stockshift_webhooks_total{result="accepted",source="shop"}"#), 1.0);
    assert_eq!(get(r#"stockshift_webhooks_total{result="rejected",source="shop"}"#), 0.0);
    assert_eq!(get("stockshift_replay_backlog"), 4.0);
    assert_eq!(get("stockshift_oversells_total"), 0.0);
    for r in ["applied", "already_applied", "conflict", "failed"] {
        assert_eq!(get(&format!(r#"stockshift_writes_total{{result="{r}"}}"#)), 0.0);
    }
    promtool_check(&m.body);
}

/// `promtool check metrics` when promtool is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("note: promtool not found; /metrics was checked by the test's own parser only");
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A strict parser of the Prometheus text format (0.0.4) as used here: every family
/// has HELP and TYPE before its samples, names and labels are well formed, counters
/// end in `_total`, no series appears twice. Returns series (labels sorted) → value.
fn parse_prometheus(text: &str) -> Result<BTreeMap<String, f64>, String> {
    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
    }
    let mut help: BTreeMap<String, String> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut series = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, val) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !is_name(name) {
                return Err(format!("line {n}: bad metric name in `{line}`"));
            }
            match kw {
                "HELP" if val.trim().is_empty() => return Err(format!("line {n}: empty HELP for {name}")),
                "HELP" if help.insert(name.into(), val.into()).is_some() => {
                    return Err(format!("line {n}: second HELP for {name}"));
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&val) {
                        return Err(format!("line {n}: bad TYPE `{val}`"));
                    }
                    if val == "counter" && !name.ends_with("_total") {
                        return Err(format!("line {n}: counter {name} does not end in _total"));
                    }
                    if types.insert(name.into(), val.into()).is_some() {
                        return Err(format!("line {n}: second TYPE for {name}"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').ok_or_else(|| format!("line {n}: no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| format!("line {n}: bad value `{v}`"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').ok_or_else(|| format!("line {n}: unclosed labels"))?;
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    if !is_name(&key) || key.starts_with("__") {
                        return Err(format!("line {n}: bad label name `{key}`"));
                    }
                    if chars.next() != Some('"') {
                        return Err(format!("line {n}: label value not quoted"));
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            None => return Err(format!("line {n}: unterminated label value")),
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some('\\') => val.push('\\'),
                                Some('"') => val.push('"'),
                                Some('n') => val.push('\n'),
                                _ => return Err(format!("line {n}: bad escape")),
                            },
                            Some(c) => val.push(c),
                        }
                    }
                    labels.push((key, val));
                    match chars.next() {
                        None => break,
                        Some(',') => {}
                        Some(c) => return Err(format!("line {n}: unexpected `{c}` after a label")),
                    }
                }
                (name, labels)
            }
        };
        if !is_name(name) {
            return Err(format!("line {n}: bad metric name `{name}`"));
        }
        let family =
            [name, name.trim_end_matches("_bucket"), name.trim_end_matches("_sum"), name.trim_end_matches("_count")]
                .into_iter()
                .find(|f| types.contains_key(*f))
                .ok_or_else(|| format!("line {n}: sample {name} before its TYPE"))?;
        if !help.contains_key(family) {
            return Err(format!("line {n}: {family} has no HELP"));
        }
        let mut labels = labels;
        labels.sort();
        let key = if labels.is_empty() {
            name.to_owned()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", l.join(","))
        };
        if series.insert(key.clone(), value).is_some() {
            return Err(format!("line {n}: series {key} appears twice"));
        }
    }
    Ok(series)
}

#[test]
fn the_metrics_parser_is_strict() {
    assert!(parse_prometheus("# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\"} 2\n").is_ok());
    for bad in [
        "a_total 1\n",
        "# TYPE a_total counter\na_total 1\n",
        "# HELP a x\n# TYPE a counter\na 1\n",
        "# HELP a x\n# TYPE a gauge\na{x=1} 1\n",
        "# HELP a x\n# TYPE a gauge\na one\n",
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad}");
    }
}

// ---------------------------------------------------------------- durability

/// Sends N events from 8 threads, SIGKILLs the server mid-stream, restarts it, and
/// checks that every acknowledged event is in the queue exactly once.
#[test]
fn every_acknowledged_event_survives_sigkill() {
    const N: usize = 400;
    const THREADS: usize = 8;
    let fx = Fixture::new();
    let mut srv = fx.serve();
    let addr = srv.addr.clone();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let body_of = |i: usize| erp_event(Some(&format!("k-{i}")), &format!("SKU-{}", i % 17), -1, i as i64);
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let (addr, acked, count) = (addr.clone(), acked.clone(), count.clone());
        handles.push(std::thread::spawn(move || {
            for i in (t..N).step_by(THREADS) {
                let body = body_of(i);
                let id = format!("msg-{i}");
                match http(
                    &addr,
                    "POST",
                    "/webhooks/erp",
                    &standard_headers(&id, now(), body.as_bytes()),
                    body.as_bytes(),
                ) {
                    Ok(r) if (200..300).contains(&r.status) => {
                        acked.lock().unwrap().push(format!("k-{i}"));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("unexpected answer {}: {}", r.status, r.body),
                    Err(_) => {} // the server is gone: not acknowledged
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::SeqCst) < N / 3 {
        assert!(Instant::now() < deadline, "the server acknowledged too little");
        std::thread::sleep(Duration::from_millis(2));
    }
    srv.kill9();
    for h in handles {
        h.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= N / 3 && acked.len() < N, "killed mid-stream: {} of {N} acknowledged", acked.len());

    let stored: Vec<String> = fx.all_events().into_iter().map(|e| e.id).collect();
    let unique: std::collections::BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no event is stored twice");
    for id in &acked {
        assert!(unique.contains(id), "acknowledged event {id} was lost");
    }

    // Restart on the same state and resend everything: acknowledged ones are duplicates.
    let srv = fx.serve();
    let mut dup = 0;
    for i in 0..N {
        let body = body_of(i);
        let r =
            srv.post("/webhooks/erp", &standard_headers(&format!("msg-{i}"), now(), body.as_bytes()), body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.body);
        if r.json()["result"] == "duplicate" {
            dup += 1;
        }
    }
    assert!(dup >= acked.len(), "{dup} duplicates, {} acknowledged before the kill", acked.len());
    assert_eq!(dup, stored.len());
    assert_eq!(srv.get("/healthz").json()["backlog"]["total"], N);
    assert_eq!(fx.all_events().len(), N);
}

// ---------------------------------------------------------------- startup and freeze

#[test]
fn serve_refuses_to_start_without_its_secrets() {
    let fx = Fixture::new();
    let mut cmd = stockshift();
    cmd.arg("serve").arg(fx.plan()).arg("--state").arg(fx.state()).args(["--listen", "127.0.0.1:0"]);
    cmd.env_remove(ERP_ENV).env(SHOP_ENV, SHOP_SECRET);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("STOCKSHIFT_TEST_ERP_SECRET") && stderr.contains("not set"), "{stderr}");
    assert!(stderr.contains("source `erp`"), "{stderr}");
    assert!(!stderr.contains(SHOP_SECRET));
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    let fx = Fixture::new();
    let srv = fx.serve();
    let body = erp_event(Some("t-1"), "A", 1, 1);
    assert_eq!(
        srv.post("/webhooks/erp", &standard_headers("t-1", now(), body.as_bytes()), body.as_bytes()).status,
        200
    );
    let (code, stderr) = srv.terminate();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Stopped."), "{stderr}");
    assert_eq!(fx.all_events().len(), 1);
}

fn freeze(fx: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut cmd = stockshift();
    cmd.arg("freeze").args(args).arg(fx.plan()).arg("--state").arg(fx.state()).env("USER", "tester");
    run(&mut cmd)
}

#[test]
fn freeze_start_stop_status() {
    let fx = Fixture::new();
    let (code, out, err) = freeze(&fx, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Frozen: no."), "{out}");
    assert!(out.contains("Backlog: no queued events."), "{out}");

    let (code, out, _) = freeze(&fx, &["start"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Freeze started by tester@"), "{out}");
    assert!(out.contains("Frozen: yes (events are queued, not applied)."), "{out}");
    let (_, again, _) = freeze(&fx, &["start"]);
    assert!(again.starts_with("Already frozen: started by tester@"), "{again}");

    // While frozen the receiver still queues, and /healthz says why.
    let srv = fx.serve();
    let body = erp_event(Some("f-1"), "A", -1, 1);
    assert_eq!(
        srv.post("/webhooks/erp", &standard_headers("f-1", now(), body.as_bytes()), body.as_bytes()).status,
        200
    );
    let h = srv.get("/healthz").json();
    assert_eq!(h["freeze"]["frozen"], true);
    assert_eq!(h["freeze"]["reasons"][0]["kind"], "manual");
    drop(srv);

    let (code, out, _) = freeze(&fx, &["status", "--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["frozen"], true);
    assert!(v["manual"]["by"].as_str().unwrap().starts_with("tester@"));
    assert_eq!(v["backlog"]["total"], 1);
    assert_eq!(v["backlog"]["sources"]["erp"]["queued"], 1);
    assert!(v["backlog"]["oldest_age_seconds"].is_i64());

    let (_, human, _) = freeze(&fx, &["status"]);
    assert!(human.contains("manual: started by tester@"), "{human}");
    assert!(human.contains("Backlog: 1 queued event(s)"), "{human}");
    assert!(human.lines().any(|l| l.trim_start().starts_with("erp") && l.contains("1 queued")), "{human}");

    let (code, out, _) = freeze(&fx, &["stop"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Freeze stopped"), "{out}");
    assert!(out.contains("Frozen: no."), "{out}");
    let (_, out, _) = freeze(&fx, &["stop"]);
    assert!(out.contains("was not set"), "{out}");
}

#[test]
fn the_plans_freeze_window_freezes_without_the_flag() {
    let fx = Fixture::new();
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(5);
    let plan = std::fs::read_to_string(fx.plan()).unwrap();
    std::fs::write(fx.plan(), format!("{plan}freeze: {{ start: {start}, duration: 1h, mode: read_only }}\n")).unwrap();
    let (code, out, err) = freeze(&fx, &["status", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["frozen"], true);
    assert_eq!(v["mode"], "read_only");
    assert_eq!(v["reasons"][0]["kind"], "window");
    assert_eq!(v["window"]["active"], true);
    assert_eq!(v["manual"], Value::Null);
    let (_, human, _) = freeze(&fx, &["status"]);
    assert!(human.contains("window: ") && human.contains(" until "), "{human}");
}

/// Writes and oversells are counted on `/metrics` even when another process
/// (`apply`, `replay`) made them: the state store is read at each scrape.
#[test]
fn metrics_count_writes_and_oversells_made_by_other_processes() {
    let fx = Fixture::new();
    let db = fx.dir.path().join("target.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE inventory (sku TEXT NOT NULL, location TEXT NOT NULL, qty INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (sku, location));
         INSERT INTO inventory (sku, location, qty) VALUES ('IPOD2008PINK', 'WH-EAST', 1);",
    )
    .unwrap();
    drop(c);
    let plan = std::fs::read_to_string(fx.plan())
        .unwrap()
        .replace("target: { provider: csv, path: target.csv }", "target: { provider: sqlite, path: target.db }");
    std::fs::write(fx.plan(), plan).unwrap();
    let state = fx.state();
    let (code, _, stderr) =
        run(stockshift().arg("apply").arg(fx.plan()).arg("--state").arg(&state).arg("--auto-approve"));
    assert_eq!(code, 0, "{stderr}");
    let srv = fx.serve();
    let ts = now();
    // One order, and one that oversells IPOD2008GREEN (5 in stock).
    for (id, sku, delta, seq) in [("m-1", "IPOD2008PINK", -2, 1), ("m-2", "IPOD2008GREEN", -7, 2)] {
        let body = erp_event(Some(id), sku, delta, seq);
        assert_eq!(srv.post("/webhooks/erp", &standard_headers(id, ts, body.as_bytes()), body.as_bytes()).status, 200);
    }
    let (code, stdout, stderr) = run(stockshift().arg("replay").arg(fx.plan()).arg("--state").arg(&state));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let m = srv.get("/metrics");
    let series = parse_prometheus(&m.body).unwrap_or_else(|e| panic!("invalid metrics text: {e}\n{}", m.body));
    let get = |k: &str| *series.get(k).unwrap_or_else(|| panic!("no series {k} in\n{}", m.body));
    // apply: 2 creates + 1 update = 3 applied; replay: 2 more.
    assert_eq!(get(r#"stockshift_writes_total{result="applied"}"#), 5.0, "{}", m.body);
    assert_eq!(get("stockshift_oversells_total"), 1.0);
    assert_eq!(get("stockshift_replay_backlog"), 0.0);
    assert_eq!(get("stockshift_drift_keys"), 0.0);
    // A reconcile in another process: the source file no longer matches the target
    // (the replayed orders are not in it), so 2 keys drift; serve reports them.
    let (code, stdout, stderr) = run(stockshift().arg("reconcile").arg(fx.plan()).arg("--state").arg(&state));
    assert_eq!(code, 3, "{stdout}{stderr}");
    let m = srv.get("/metrics");
    let series = parse_prometheus(&m.body).unwrap_or_else(|e| panic!("invalid metrics text: {e}\n{}", m.body));
    let get = |k: &str| *series.get(k).unwrap_or_else(|| panic!("no series {k} in\n{}", m.body));
    assert_eq!(get("stockshift_drift_keys"), 2.0, "{}", m.body);
    assert!(get("stockshift_drift_ratio") > 0.5);
    assert_eq!(get("stockshift_reconcile_duration_seconds_count"), 1.0, "{}", m.body);
    // Scraping again does not count the same reconcile twice.
    let m = srv.get("/metrics");
    let series = parse_prometheus(&m.body).unwrap();
    assert_eq!(series["stockshift_reconcile_duration_seconds_count"], 1.0);
    promtool_check(&m.body);
}
