//! Bulk operations: `bulkOperationRunQuery`, polling the operation by id until
//! it is done, then streaming its JSONL result line by line. A bulk query costs
//! a few points however large the catalogue, and is not subject to the 25,000
//! object limit of cursor paging.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{Client, Request};
use super::graphql as gql;
use crate::provider::ProviderError;

/// How long a bulk operation may run before stockshift gives up waiting.
const MAX_WAIT: Duration = Duration::from_secs(4 * 3600);

fn invalid(message: String) -> ProviderError {
    ProviderError::Invalid { what: "shopify bulk operation".into(), message }
}

/// Runs `query` as a bulk operation and returns its result URL (`None`: the
/// operation completed with no objects).
pub fn run(client: &mut Client, query: &str) -> Result<Option<String>, ProviderError> {
    let data = client.execute(&Request {
        name: "StockshiftBulkRun",
        query: gql::BULK_RUN,
        variables: json!({ "query": query }),
        est_cost: gql::BULK_RUN_COST,
    })?;
    let payload = data.get("bulkOperationRunQuery").unwrap_or(&Value::Null);
    if let Some(errs) = payload.get("userErrors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
        let msgs: Vec<&str> = errs.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect();
        return Err(invalid(format!("Shopify refused the bulk query: {}", msgs.join("; "))));
    }
    let Some(id) = gql::str_at(payload, &["bulkOperation", "id"]).map(str::to_owned) else {
        return Err(invalid("bulkOperationRunQuery returned no operation id".into()));
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        std::thread::sleep(pause);
        pause = (pause.mul_f64(1.5)).min(Duration::from_secs(5));
        let data = client.execute(&Request {
            name: "StockshiftBulkPoll",
            query: gql::BULK_POLL,
            variables: json!({ "id": id }),
            est_cost: gql::BULK_POLL_COST,
        })?;
        let op = data.get("node").unwrap_or(&Value::Null);
        match op.get("status").and_then(Value::as_str) {
            Some("COMPLETED") => return Ok(op.get("url").and_then(Value::as_str).map(str::to_owned)),
            Some("CREATED" | "RUNNING") => {}
            Some(other) => {
                let code = op.get("errorCode").and_then(Value::as_str).unwrap_or("no error code");
                return Err(invalid(format!("bulk operation {id} ended {other} ({code})")));
            }
            None => return Err(invalid(format!("bulk operation {id} has no status"))),
        }
        if started.elapsed() > MAX_WAIT {
            return Err(ProviderError::Unavailable {
                what: "shopify bulk operation".into(),
                message: format!("bulk operation {id} did not finish within {} hours", MAX_WAIT.as_secs() / 3600),
            });
        }
    }
}

/// Streams the JSONL at `url`: `each(line_number, object)` per non-empty line.
/// A line that is not a JSON object is an error naming its line.
pub fn for_each_line(client: &mut Client, url: &str, mut each: impl FnMut(u64, Value)) -> Result<u64, ProviderError> {
    let reader = BufReader::with_capacity(1 << 16, client.download(url)?);
    let mut n = 0;
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| ProviderError::Unavailable {
            what: "shopify bulk operation".into(),
            message: format!("reading the bulk result failed at line {}: {e}", i + 1),
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(v) if v.is_object() => {
                n += 1;
                each(i as u64 + 1, v);
            }
            _ => return Err(invalid(format!("line {} of the bulk result is not a JSON object", i + 1))),
        }
    }
    Ok(n)
}
