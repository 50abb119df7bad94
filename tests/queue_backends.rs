//! The event queue's rules on both engines (SQLite and a real PostgreSQL from
//! `tests/pg.rs`): dedupe, settle, requeue, discard, the freeze flag, the
//! partitions API, Kafka offsets; on PostgreSQL also an event committed late
//! inside a settled run, concurrent receivers, and two `serve` processes sharing
//! one queue. With `STOCKSHIFT_SKIP_PG=1` the PostgreSQL halves return early.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use stockshift::db::StoreAt;
use stockshift::events::epoch;
use stockshift::events::queue::{EventKey, Incoming, Insert, KafkaOffset, PARTITIONS, Queue, Status};
use stockshift::events::signature::{SecretKey, sign_standard};
use stockshift::events::{Change, Event};

use crate::pg::{self, Client};
use crate::util::{serve_address, stockshift};

fn ev(id: &str, sku: &str, change: Change, sequence: i64) -> Event {
    Event {
        id: id.into(),
        source: "erp".into(),
        sku: sku.into(),
        location: "WH".into(),
        change,
        sequence,
        occurred_at: "2026-11-27T10:00:00Z".parse().unwrap(),
    }
}

fn delta(id: &str, sku: &str) -> Event {
    ev(id, sku, Change::Delta(-1), 1)
}

/// A PostgreSQL queue in a fresh database, and that database's URL.
fn pg_queue() -> Option<(Queue, String)> {
    let url = pg::available()?.create_database();
    let q = Queue::open_at(&pg_at(&url)).unwrap();
    Some((q, url))
}

fn pg_at(url: &str) -> StoreAt {
    StoreAt {
        dir: std::env::temp_dir(),
        postgres: Some(url.to_owned()),
        url_env: Some("STOCKSHIFT_TEST_QUEUE_URL".into()),
    }
}

fn sqlite_queue(dir: &Path) -> Queue {
    Queue::open_at(&StoreAt::sqlite(dir)).unwrap()
}

fn seqs_of(q: &Queue) -> Vec<i64> {
    q.pending(1000).unwrap().iter().map(|e| e.seq).collect()
}

fn status(q: &Queue, id: &str) -> Status {
    q.get("erp", id).unwrap().unwrap().status
}

// ---------------------------------------------------------------- the rules, on any engine

fn dedupe_settle_requeue_discard_freeze(q: &mut Queue) {
    let now = Timestamp::now();
    let a = [delta("a", "S1"), ev("b", "S1", Change::Qty(5), 2)];
    let dup = [ev("a", "S1", Change::Delta(-9), 9), delta("c", "S2"), delta("c", "S2")];
    let res = q
        .append_deliveries(&[
            Incoming { source: "erp", raw: b"body-1", received_at: now, events: &a },
            Incoming { source: "erp", raw: b"body-2", received_at: now, events: &dup[..1] },
            Incoming { source: "erp", raw: b"body-3", received_at: now, events: &dup[1..] },
        ])
        .unwrap();
    assert_eq!(res[0], vec![Insert::Accepted { seq: 1 }, Insert::Accepted { seq: 2 }]);
    assert_eq!(res[1], vec![Insert::Duplicate { seq: 1 }], "a delivery of duplicates only");
    assert_eq!(res[2], vec![Insert::Accepted { seq: 3 }, Insert::Duplicate { seq: 3 }], "twice in one delivery");
    let stored = q.get("erp", "a").unwrap().unwrap();
    assert_eq!(stored.event, a[0], "the first event wins");
    assert_eq!(q.raw(stored.delivery.unwrap()).unwrap().unwrap(), b"body-1");
    assert_eq!(q.get("erp", "b").unwrap().unwrap().delivery, stored.delivery);
    assert_eq!(q.append(&[delta("a", "S1")]).unwrap(), vec![Insert::Duplicate { seq: 1 }]);

    // Settle: 1 applied, 2 superseded; 3 stays queued.
    let more: Vec<Event> = (4..=8).map(|i| delta(&i.to_string(), "S3")).collect();
    q.append(&more).unwrap();
    assert_eq!(seqs_of(q), vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(q.settle(&[1, 2, 4, 5, 7, 8, 99], &[2]).unwrap(), 6);
    assert_eq!(seqs_of(q), vec![3, 6]);
    assert_eq!((status(q, "a"), status(q, "b"), status(q, "c")), (Status::Applied, Status::Superseded, Status::Queued));
    assert!(q.get("erp", "4").unwrap().unwrap().applied_at.is_some());
    assert_eq!(q.settle(&[1, 2], &[]).unwrap(), 0, "settling again is a no-op");
    let c = q.counts().unwrap();
    assert_eq!((c[&Status::Applied], c[&Status::Superseded], c[&Status::Queued]), (5, 1, 2));
    let epoch = epoch::read(q, None).unwrap();
    assert_eq!(epoch.events.iter().map(|e| (e.seq, e.queued)).collect::<Vec<_>>(), {
        let mut v: Vec<(i64, bool)> = (1..=8).map(|s| (s, s == 3 || s == 6)).collect();
        v.sort();
        v
    });
    let later = Timestamp::now() + jiff::SignedDuration::from_secs(60);
    assert_eq!(epoch::read(q, Some(later)).unwrap().events.len(), 2, "only the queued ones");

    // Requeue: settled events go back, queued and unknown ones do not count.
    assert_eq!(q.requeue_seqs(&[5, 2, 3, 99]).unwrap(), 2);
    assert_eq!(seqs_of(q), vec![2, 3, 5, 6]);
    assert_eq!((status(q, "4"), status(q, "7")), (Status::Applied, Status::Applied), "the run is split around 5");
    let back = q.get("erp", "5").unwrap().unwrap();
    assert_eq!((back.status, back.applied_at), (Status::Queued, None));
    assert_eq!(q.settle(&[5, 6], &[]).unwrap(), 2);

    // Discard (mark failed) and requeue by key.
    assert_eq!(q.mark(&[3, 99], Status::Failed, Some("test event")).unwrap(), 1);
    assert!(q.mark(&[3], Status::Queued, None).is_err());
    let failed = q.get("erp", "c").unwrap().unwrap();
    assert_eq!((failed.status, failed.error.as_deref()), (Status::Failed, Some("test event")));
    assert!(!epoch::read(q, None).unwrap().events.iter().any(|e| e.seq == 3), "failed events are not folded");
    let keys = [EventKey { source: "erp".into(), id: "c".into() }, EventKey { source: "erp".into(), id: "2".into() }];
    assert_eq!(q.requeue(&keys).unwrap(), 1);
    assert_eq!(status(q, "c"), Status::Queued);
    assert_eq!(q.get("erp", "c").unwrap().unwrap().error, None);
    assert_eq!(q.backlog().unwrap().total, 2);
    assert_eq!(q.backlog().unwrap().sources["erp"].queued, 2);

    // mark_runs: only queued events in the ranges.
    assert_eq!(q.mark_runs(&[(1, 8, Status::Applied)]).unwrap(), 2);
    assert_eq!(q.queued_count().unwrap(), 0);
    let c = q.counts().unwrap();
    assert_eq!(
        (c.get(&Status::Applied), c.get(&Status::Superseded), c.get(&Status::Queued)),
        (Some(&8), None, Some(&0))
    );
    assert_eq!(q.events_after(0, 100).unwrap().len(), 8);

    // The freeze flag.
    assert_eq!(q.manual_freeze().unwrap(), None);
    let (f, new) = q.start_freeze("alice@host").unwrap();
    assert!(new);
    let (again, new) = q.start_freeze("bob@host").unwrap();
    assert!(!new);
    assert_eq!(again, f, "the first start is kept");
    assert_eq!(q.stop_freeze("bob@host").unwrap().unwrap().by, "alice@host");
    assert_eq!(q.stop_freeze("bob@host").unwrap(), None);
    assert_eq!(q.manual_freeze().unwrap(), None);
}

fn partitions_api(q: &mut Queue) {
    // The partition: the SKU's number, e.g. P-7 → 7.
    q.set_partitioner(Arc::new(|e: &Event| e.sku.trim_start_matches("P-").parse::<u32>().unwrap() % PARTITIONS));
    let evs: Vec<Event> = (1..=9).map(|i| delta(&format!("e{i}"), &format!("P-{}", i % 3))).collect();
    q.append(&evs).unwrap(); // seqs 1..9; partition = seq % 3
    assert_eq!(q.queued_parts().unwrap(), vec![(0, 3), (1, 3), (2, 3)]);
    assert_eq!(q.queued_count_part(Some(1)).unwrap(), 3);
    assert_eq!(q.queued_count_part(None).unwrap(), 9);
    assert_eq!(q.queued_count_parts(Some(&[0, 2])).unwrap(), 6);
    assert_eq!(q.part_of_seq(4).unwrap(), Some(1));
    let part1 = epoch::read_part(q, None, Some(1)).unwrap();
    assert_eq!(part1.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 4, 7]);
    assert_eq!(epoch::read_part(q, None, None).unwrap().events.len(), 9);

    // settle_part settles only its partition's events.
    assert_eq!(q.settle_part(Some(1), &[1, 2, 4, 7], &[4]).unwrap(), 3);
    assert_eq!(seqs_of(q), vec![2, 3, 5, 6, 8, 9]);
    assert_eq!(
        (status(q, "e1"), status(q, "e4"), status(q, "e7")),
        (Status::Applied, Status::Superseded, Status::Applied)
    );
    let part1 = epoch::read_part(q, None, Some(1)).unwrap();
    assert_eq!(
        part1.events.iter().map(|e| (e.seq, e.queued)).collect::<Vec<_>>(),
        vec![(1, false), (4, false), (7, false)]
    );
    assert!(epoch::read_part(q, None, Some(2)).unwrap().events.iter().all(|e| e.queued));
    assert_eq!(q.settle_part(Some(2), &[2, 8], &[]).unwrap(), 2);
    assert_eq!(q.queued_parts().unwrap(), vec![(0, 3), (2, 1)]);

    // rehome: a queued event and a settled one (inside a run of partition 1) move to 0.
    assert_eq!(q.rehome(&[5, 7, 99], 0).unwrap(), 2);
    assert_eq!(q.part_of_seq(7).unwrap(), Some(0));
    assert_eq!(q.queued_parts().unwrap(), vec![(0, 4)]);
    assert_eq!(status(q, "e7"), Status::Applied, "a settled event keeps its status when it moves");
    assert_eq!(status(q, "e1"), Status::Applied);
    let part0 = epoch::read_part(q, None, Some(0)).unwrap();
    assert_eq!(
        part0.events.iter().map(|e| (e.seq, e.queued)).collect::<Vec<_>>(),
        vec![(3, true), (5, true), (6, true), (7, false), (9, true)]
    );
    assert_eq!(epoch::read_part(q, None, Some(1)).unwrap().events.len(), 2);
    assert_eq!(epoch::read(q, None).unwrap().events.len(), 9, "every event once");
    assert_eq!(q.settle_part(Some(0), &[3, 5, 6, 9], &[]).unwrap(), 4);
    let c = q.counts().unwrap();
    assert_eq!((c[&Status::Applied], c[&Status::Superseded], c[&Status::Queued]), (8, 1, 0));
    // Requeue splits a run of one partition only.
    assert_eq!(q.requeue_seqs(&[5]).unwrap(), 1);
    assert_eq!((status(q, "e3"), status(q, "e5"), status(q, "e9")), (Status::Applied, Status::Queued, Status::Applied));
    assert_eq!(q.queued_parts().unwrap(), vec![(0, 1)]);
}

fn kafka_offsets(q: &mut Queue) {
    let off = |partition, next_offset| KafkaOffset { topic: "t".into(), partition, next_offset };
    let a = [delta("k1", "P-1")];
    let batch = [Incoming { source: "erp", raw: b"\xff\x00binary", received_at: Timestamp::now(), events: &a }];
    let res = q.append_with_offsets(&batch, "erp", "g1", &[off(0, 5), off(2, 1)]).unwrap();
    assert!(res[0][0].is_accepted());
    assert_eq!(q.kafka_offsets("erp", "g1").unwrap(), vec![off(0, 5), off(2, 1)]);
    let res = q.append_with_offsets(&batch, "erp", "g1", &[off(0, 3)]).unwrap();
    assert_eq!(res[0][0], Insert::Duplicate { seq: res[0][0].seq() });
    assert_eq!(q.kafka_offsets("erp", "g1").unwrap(), vec![off(0, 3), off(2, 1)]);
    let seq = res[0][0].seq();
    let d = q.events_after(seq - 1, 1).unwrap()[0].delivery.unwrap();
    assert_eq!(q.raw(d).unwrap().unwrap(), b"\xff\x00binary");
    // A failed commit stores neither events nor offsets.
    let b = [delta("k2", "P-1")];
    let batch = [Incoming { source: "erp", raw: b"x", received_at: Timestamp::now(), events: &b }];
    assert!(q.append_with_offsets(&batch, "erp", "g2", &[off(0, -1)]).is_err());
    assert!(q.get("erp", "k2").unwrap().is_none());
    assert!(q.kafka_offsets("erp", "g2").unwrap().is_empty());
}

#[test]
fn sqlite_queue_rules() {
    let dir = tempfile::tempdir().unwrap();
    dedupe_settle_requeue_discard_freeze(&mut sqlite_queue(dir.path()));
    let dir = tempfile::tempdir().unwrap();
    partitions_api(&mut sqlite_queue(dir.path()));
    let dir = tempfile::tempdir().unwrap();
    kafka_offsets(&mut sqlite_queue(dir.path()));
}

#[test]
fn postgres_queue_rules() {
    let Some((mut q, _)) = pg_queue() else { return };
    dedupe_settle_requeue_discard_freeze(&mut q);
    let Some((mut q, url)) = pg_queue() else { return };
    partitions_api(&mut q);
    kafka_offsets(&mut q);
    // Tables in their own schema; a second open finds them (no re-creation).
    let mut c = Client::connect(&url).unwrap();
    let v = c.text_rows("SELECT version FROM stockshift_queue.schema_version");
    assert_eq!(v, vec![vec![Some("4".to_owned())]]);
    let q2 = Queue::open_at(&pg_at(&url)).unwrap();
    assert!(q2.is_shared());
    assert_eq!(q2.counts().unwrap()[&Status::Applied], 7);
}

// ---------------------------------------------------------------- PostgreSQL only

/// With several receivers seq order is not commit order: an event that commits
/// inside a run written meanwhile is still queued, and is settled once later.
#[test]
fn postgres_an_event_committed_late_inside_a_settled_run_stays_queued() {
    let Some((mut q, url)) = pg_queue() else { return };
    q.set_partitioner(Arc::new(|_: &Event| 5));
    let evs: Vec<Event> = (1..=5).map(|i| delta(&format!("e{i}"), "S")).collect();
    q.append(&evs).unwrap();
    // 3 is queued while 1, 2, 4, 5 are settled for partition 5: one run [1, 5].
    assert_eq!(q.settle_part(Some(5), &[1, 2, 4, 5], &[]).unwrap(), 4);
    let mut c = Client::connect(&url).unwrap();
    let runs = c.text_rows("SELECT part, from_seq, to_seq FROM stockshift_queue.settle_runs");
    assert_eq!(runs, vec![vec![Some("5".into()), Some("1".into()), Some("5".into())]]);
    assert_eq!(status(&q, "e3"), Status::Queued);
    assert_eq!(q.queued_count_part(Some(5)).unwrap(), 1);
    let e = epoch::read_part(&q, None, Some(5)).unwrap();
    assert_eq!(e.events.iter().map(|e| (e.seq, e.queued)).collect::<Vec<_>>(), {
        vec![(1, false), (2, false), (3, true), (4, false), (5, false)]
    });
    assert_eq!(q.counts().unwrap()[&Status::Applied], 4);

    // A receiver whose transaction took seq 6 commits after 7 was settled.
    c.execute(
        "BEGIN;
         INSERT INTO stockshift_queue.deliveries (source, received_at, raw) VALUES ('erp', '2026-11-27T10:00:00.000Z', '\\x7b7d');
         INSERT INTO stockshift_queue.event_log (seq, source, id, sku, location, delta, sequence, occurred_at, received_at, delivery, part)
           VALUES (nextval(pg_get_serial_sequence('stockshift_queue.event_log', 'seq')), 'erp', 'late', 'S', 'WH', -1, 1,
                   '2026-11-27T10:00:00Z', '2026-11-27T10:00:00.000Z', currval(pg_get_serial_sequence('stockshift_queue.deliveries', 'delivery')), 5);
         INSERT INTO stockshift_queue.pending (seq, part) SELECT seq, part FROM stockshift_queue.event_log WHERE id = 'late';",
    );
    q.append(&[delta("e7", "S"), delta("e8", "S")]).unwrap();
    let seven = q.get("erp", "e7").unwrap().unwrap().seq;
    assert_eq!(seven, 7, "the open transaction holds seq 6");
    assert_eq!(q.settle_part(Some(5), &[seven, seven + 1], &[]).unwrap(), 2);
    assert_eq!(q.settle_part(Some(5), &[3], &[]).unwrap(), 1, "3 gets a row of its own inside the run");
    c.execute("COMMIT");
    let late = q.get("erp", "late").unwrap().unwrap();
    assert_eq!((late.seq, late.status), (6, Status::Queued));
    let e = epoch::read_part(&q, None, Some(5)).unwrap();
    let queued: Vec<i64> = e.events.iter().filter(|e| e.queued).map(|e| e.seq).collect();
    assert_eq!((e.events.len(), queued), (8, vec![6]), "every event once; the late one queued");
    assert_eq!(q.settle_part(Some(5), &[6], &[6]).unwrap(), 1);
    assert_eq!(status(&q, "late"), Status::Superseded);
    let c2 = q.counts().unwrap();
    assert_eq!((c2[&Status::Applied], c2[&Status::Superseded], c2[&Status::Queued]), (7, 1, 0));
    // Requeue and settle again: still every event exactly once.
    assert_eq!(q.requeue_seqs(&[2, 3, 6]).unwrap(), 3);
    assert_eq!(q.settle_part(Some(5), &[2, 3, 6], &[]).unwrap(), 3);
    let e = epoch::read(&q, None).unwrap();
    assert_eq!(e.events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<_>>());
    assert_eq!(q.counts().unwrap()[&Status::Applied], 8);
}

/// Receivers writing the same events at the same time: each is stored once and
/// accepted by exactly one of them.
#[test]
fn postgres_concurrent_receivers_store_each_event_once() {
    let Some((_, url)) = pg_queue() else { return };
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut q = Queue::open_at(&pg_at(&url)).unwrap();
                let mut accepted = Vec::new();
                for round in 0..20 {
                    // Overlapping ids, in a different order in each thread.
                    let mut ids: Vec<usize> = (0..25).map(|i| round * 10 + i).collect();
                    if t % 2 == 1 {
                        ids.reverse();
                    }
                    let evs: Vec<Event> = ids.iter().map(|i| delta(&format!("id-{i}"), "S")).collect();
                    let incoming: Vec<Incoming<'_>> = evs
                        .chunks(5)
                        .map(|c| Incoming { source: "erp", raw: b"{}", received_at: Timestamp::now(), events: c })
                        .collect();
                    for (i, r) in q.append_deliveries(&incoming).unwrap().into_iter().flatten().enumerate() {
                        if r.is_accepted() {
                            accepted.push((evs[i].id.clone(), r.seq()));
                        }
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: Vec<(String, i64)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<&str> = accepted.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(ids.len(), accepted.len(), "every event accepted exactly once");
    assert_eq!(ids.len(), 215);
    let q = Queue::open_at(&pg_at(&url)).unwrap();
    assert_eq!(q.queued_count().unwrap(), 215);
    for (id, seq) in &accepted {
        assert_eq!(q.get("erp", id).unwrap().unwrap().seq, *seq);
    }
    let mut c = Client::connect(&url).unwrap();
    let orphans = c.text_rows(
        "SELECT count(*) FROM stockshift_queue.deliveries d
         WHERE NOT EXISTS (SELECT 1 FROM stockshift_queue.event_log e WHERE e.delivery = d.delivery)",
    );
    assert_eq!(orphans, vec![vec![Some("0".to_owned())]], "no body is kept without an event");
}

#[test]
fn postgres_a_newer_schema_is_refused_and_errors_hide_the_url() {
    let Some((q, url)) = pg_queue() else { return };
    drop(q);
    let mut c = Client::connect(&url).unwrap();
    c.execute("UPDATE stockshift_queue.schema_version SET version = 99");
    let e = Queue::open_at(&pg_at(&url)).unwrap_err().to_string();
    assert!(e.contains("newer stockshift") && e.contains("event queue (postgres $STOCKSHIFT_TEST_QUEUE_URL)"), "{e}");
    // A bad password: the message names the variable, never the URL or the password.
    let bad = url.replacen("postgres://postgres@", "postgres://postgres:s3cret-pw@", 1).replacen(
        "/stockshift_t_",
        "/nope_",
        1,
    );
    let e = Queue::open_at(&pg_at(&bad)).unwrap_err().to_string();
    assert!(e.starts_with("event queue (postgres $STOCKSHIFT_TEST_QUEUE_URL): "), "{e}");
    assert!(!e.contains("s3cret-pw") && !e.contains(&bad), "{e}");
}

/// A receiver keeps working after its connection is cut (a server restart, a proxy).
#[test]
fn postgres_a_lost_connection_is_opened_again() {
    let Some((mut q, url)) = pg_queue() else { return };
    q.append(&[delta("before", "S")]).unwrap();
    let mut c = Client::connect(&url).unwrap();
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = 'stockshift'";
    c.execute(kill);
    assert_eq!(q.append(&[delta("after", "S")]).unwrap(), vec![Insert::Accepted { seq: 2 }]);
    c.execute(kill);
    assert!(q.queued_count().is_err(), "a read reports the lost connection");
    q.reconnect_if_lost().unwrap();
    assert_eq!(q.queued_count().unwrap(), 2);
}

// ---------------------------------------------------------------- two receivers, one queue

const SECRET_ENV: &str = "STOCKSHIFT_TEST_QB_SECRET";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const URL_ENV: &str = "STOCKSHIFT_TEST_QB_QUEUE_URL";

struct Serve {
    child: Child,
    addr: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(plan: &Path, state: &Path, url: &str) -> Serve {
    let mut child = stockshift()
        .arg("serve")
        .arg(plan)
        .arg("--state")
        .arg(state)
        .args(["--listen", "127.0.0.1:0"])
        .env(SECRET_ENV, SECRET)
        .env(URL_ENV, url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (addr, stderr) = serve_address(&mut child);
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve did not start:\n{}", stderr.lock().unwrap());
    };
    let log = stderr.lock().unwrap().clone();
    assert!(log.contains(&format!("Event queue: postgres (${URL_ENV}), schema stockshift_queue")), "{log}");
    assert!(!log.contains(url), "the URL is never printed:\n{log}");
    Serve { child, addr }
}

/// POSTs a signed Standard Webhooks delivery; returns (status, body).
fn post(addr: &str, id: &str, body: &str) -> (u16, serde_json::Value) {
    let key = SecretKey::standard(SECRET).unwrap();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let sig = sign_standard(&key, id, ts, body.as_bytes());
    let req = format!(
        "POST /webhooks/erp HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\nwebhook-id: {id}\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status: u16 = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = &raw[raw.find("\r\n\r\n").unwrap() + 4..];
    // The answers are small: a single chunk when chunked.
    let json = body.find('{').map_or("null", |i| &body[i..body.rfind('}').unwrap() + 1]);
    (status, serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {raw}")))
}

fn erp_body(id: &str, sku: &str, sequence: i64) -> String {
    format!(
        r#"{{"id":"{id}","sku":"{sku}","location":"WH-EAST","delta":-1,"sequence":{sequence},"occurred_at":"2026-11-27T10:00:00Z"}}"#
    )
}

#[test]
fn postgres_two_serve_processes_share_one_queue() {
    let Some(pg) = pg::available() else { return };
    let url = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("source.csv"), "sku,location,qty\nA,WH-EAST,5\n").unwrap();
    std::fs::write(dir.path().join("target.csv"), "sku,location,qty\nA,WH-EAST,5\n").unwrap();
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "version: 1\nname: two-receivers\nsource: {{ provider: csv, path: source.csv }}\ntarget: {{ provider: csv, path: target.csv }}\n\
             events:\n  queue: {{ backend: postgres, url_env: {URL_ENV} }}\n  sources:\n    - {{ name: erp, kind: standard, secret_env: {SECRET_ENV} }}\n"
        ),
    )
    .unwrap();
    // Each receiver has a state folder of its own: only the queue is shared.
    let (a, b) = (serve(&plan, &dir.path().join("a"), &url), serve(&plan, &dir.path().join("b"), &url));

    // The same event sent to both: stored once, the second answer is the duplicate one.
    let (s1, r1) = post(&a.addr, "wh-1", &erp_body("same-1", "A", 1));
    assert_eq!((s1, r1["result"].as_str()), (200, Some("accepted")), "{r1}");
    let (s2, r2) = post(&b.addr, "wh-1", &erp_body("same-1", "A", 1));
    assert_eq!((s2, r2["result"].as_str(), r2["duplicate"].as_u64()), (200, Some("duplicate"), Some(1)), "{r2}");

    // Events sent to either, concurrently, with every id sent to both: all queued once.
    let senders: Vec<_> = [a.addr.clone(), b.addr.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, addr)| {
            std::thread::spawn(move || {
                let mut accepted = 0;
                for i in 0..60 {
                    let i = if n == 0 { i } else { 59 - i };
                    let (s, r) =
                        post(&addr, &format!("wh-{i}-x"), &erp_body(&format!("ev-{i}"), &format!("SKU-{i}"), i));
                    assert_eq!(s, 200, "{r}");
                    accepted += r["accepted"].as_u64().unwrap();
                }
                accepted
            })
        })
        .collect();
    let accepted: u64 = senders.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(accepted, 60, "each id accepted by exactly one receiver");
    // Events only one receiver got.
    for (i, addr) in [&a.addr, &b.addr, &a.addr].into_iter().enumerate() {
        let (s, r) = post(addr, &format!("only-{i}"), &erp_body(&format!("only-{i}"), "A", 100 + i as i64));
        assert_eq!((s, r["result"].as_str()), (200, Some("accepted")), "{r}");
    }
    let q = Queue::open_at(&pg_at(&url)).unwrap();
    assert_eq!(q.queued_count().unwrap(), 64);
    let ids: BTreeSet<String> = q.pending(1000).unwrap().into_iter().map(|e| e.event.id).collect();
    assert_eq!(ids.len(), 64);
    // Both answer /healthz from the shared queue.
    for addr in [&a.addr, &b.addr] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        assert!(raw.starts_with("HTTP/1.1 200") && raw.contains(r#""total":64"#), "{raw}");
    }
    // The receivers filed every event under the plan's partition.
    let parts: u64 = q.queued_parts().unwrap().iter().map(|p| p.1).sum();
    assert_eq!(parts, 64);
    assert!(q.queued_parts().unwrap().len() > 1, "the plan's partitioner spreads SKUs");
}
