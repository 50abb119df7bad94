//! Group commit: one writer thread owns the queue connection; request handlers
//! hand it their events and wait for the answer.
//!
//! The writer blocks for the first job, then drains every job already waiting
//! (up to [`MAX_GROUP`]), stores them all in ONE transaction, commits (one fsync
//! for the whole group) and only then answers each handler, accepted or duplicate
//! per event. While it is fsyncing, new jobs pile up in the channel and form the
//! next group, so the number of fsyncs per second stays bounded however many
//! requests arrive. If the commit fails, every handler of the group gets the error
//! and nothing of the group is stored.

use std::sync::mpsc;
use std::thread::JoinHandle;

use axum::body::Bytes;
use jiff::Timestamp;
use tokio::sync::oneshot;

use super::event::Event;
use super::queue::{Incoming, Insert, Queue};

/// Most deliveries committed in one transaction.
pub const MAX_GROUP: usize = 2048;

type Reply = oneshot::Sender<Result<Vec<Insert>, String>>;

struct Job {
    source: String,
    raw: Bytes,
    received_at: Timestamp,
    events: Vec<Event>,
    reply: Reply,
}

enum Msg {
    Job(Job),
    Stop,
}

/// The handlers' side of the writer. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Msg>,
}

/// The writer thread; [`Writer::stop`] finishes the jobs already sent and joins it.
pub struct Writer {
    ingest: Ingest,
    thread: Option<JoinHandle<()>>,
}

impl Ingest {
    /// Starts the writer thread on an opened queue.
    pub fn start(queue: Queue) -> (Ingest, Writer) {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("stockshift-queue-writer".into())
            .spawn(move || run(queue, rx))
            .expect("spawn the queue writer thread");
        let ingest = Ingest { tx };
        (ingest.clone(), Writer { ingest, thread: Some(thread) })
    }

    /// Stores one delivery's events; resolves once they are committed (or not).
    /// `Err` means nothing of this delivery was stored.
    pub async fn submit(
        &self,
        source: &str,
        raw: Bytes,
        received_at: Timestamp,
        events: Vec<Event>,
    ) -> Result<Vec<Insert>, String> {
        let (reply, answer) = oneshot::channel();
        let job = Job { source: source.to_owned(), raw, received_at, events, reply };
        self.tx.send(Msg::Job(job)).map_err(|_| "the queue writer has stopped".to_string())?;
        answer.await.map_err(|_| "the queue writer stopped before committing".to_string())?
    }
}

impl Writer {
    /// Asks the writer to finish the jobs sent so far, then waits for it.
    pub fn stop(mut self) {
        let _ = self.ingest.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut queue: Queue, rx: mpsc::Receiver<Msg>) {
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { return };
        let mut jobs = Vec::new();
        match first {
            Msg::Job(j) => jobs.push(j),
            Msg::Stop => stopping = true,
        }
        while !stopping && jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => jobs.push(j),
                Ok(Msg::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let batch: Vec<Incoming<'_>> = jobs
            .iter()
            .map(|j| Incoming { source: &j.source, raw: &j.raw, received_at: j.received_at, events: &j.events })
            .collect();
        let result = queue.append_deliveries(&batch);
        drop(batch);
        match result {
            Ok(per_job) => {
                for (job, res) in jobs.into_iter().zip(per_job) {
                    let _ = job.reply.send(Ok(res));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for job in jobs {
                    let _ = job.reply.send(Err(msg.clone()));
                }
            }
        }
    }
    // Jobs sent after Stop are answered with an error when their sender is dropped here.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::Change;

    #[test]
    fn concurrent_submits_are_grouped_and_deduped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let (ingest, writer) = Ingest::start(Queue::open(&path).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let results = rt.block_on(async {
            let mut handles = Vec::new();
            for i in 0..200 {
                let ingest = ingest.clone();
                handles.push(tokio::spawn(async move {
                    let ev = Event {
                        id: format!("e{}", i % 150),
                        source: "erp".into(),
                        sku: "S".into(),
                        location: "L".into(),
                        change: Change::Delta(-1),
                        sequence: i,
                        occurred_at: Timestamp::now(),
                    };
                    ingest.submit("erp", Bytes::from_static(b"{}"), Timestamp::now(), vec![ev]).await
                }));
            }
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap().unwrap());
            }
            out
        });
        writer.stop();
        let accepted = results.iter().flatten().filter(|r| r.is_accepted()).count();
        assert_eq!(accepted, 150);
        assert_eq!(Queue::open(&path).unwrap().queued_count().unwrap(), 150);
        // After stop, submissions fail cleanly instead of hanging.
        let late = rt.block_on(ingest.submit("erp", Bytes::new(), Timestamp::now(), vec![]));
        assert!(late.is_err());
    }
}
