//! A Kafka record's value as normalized events: the same strict JSON as a
//! `kind: standard` webhook body (one event or an array of them), except that
//! every event needs its own `id` (a record has no delivery id to fall back on).

use crate::events::event::{BodyContext, Event, parse_body};

/// Largest accepted record value, like a webhook body: 1 MiB.
pub const MAX_VALUE: usize = 1 << 20;

/// The events of one record of source `source`, or why the record is refused.
/// An empty array is valid and yields no events.
pub fn decode(source: &str, value: Option<&[u8]>) -> Result<Vec<Event>, String> {
    let Some(value) = value else {
        return Err("the record has no value (a tombstone); expected a normalized event as JSON".into());
    };
    if value.len() > MAX_VALUE {
        return Err(format!("the value is {} bytes; the limit is {MAX_VALUE} (1 MiB)", value.len()));
    }
    parse_body(value, BodyContext { source, default_id: None }).map_err(|m| {
        // The parser speaks of webhooks; say the same in Kafka terms.
        m.replace(" (and no webhook-id header to take it from)", ": every event on a Kafka topic needs its own id")
            .replace("the URL names source", "the record was read by source")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::event::Change;

    const GOOD: &str = r#"{"id":"k-1","source":"stream","sku":"A","location":"WH","delta":-2,"sequence":3,"occurred_at":"2026-11-27T10:00:00Z"}"#;

    #[test]
    fn one_event_or_an_array() {
        let one = decode("stream", Some(GOOD.as_bytes())).unwrap();
        assert_eq!((one.len(), one[0].change, one[0].source.as_str()), (1, Change::Delta(-2), "stream"));
        let many = format!("[{GOOD}, {}]", GOOD.replace("k-1", "k-2").replace("\"source\":\"stream\",", ""));
        let many = decode("stream", Some(many.as_bytes())).unwrap();
        assert_eq!(many.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["k-1", "k-2"]);
        assert!(decode("stream", Some(b"[]")).unwrap().is_empty());
    }

    #[test]
    fn malformed_records_say_why_in_kafka_terms() {
        let e = decode("stream", None).unwrap_err();
        assert!(e.contains("tombstone"), "{e}");
        let e = decode("stream", Some(b"{\"id\":")).unwrap_err();
        assert!(e.starts_with("malformed JSON body"), "{e}");
        let no_id = GOOD.replace("\"id\":\"k-1\",", "");
        let e = decode("stream", Some(no_id.as_bytes())).unwrap_err();
        assert_eq!(e, "missing `id`: every event on a Kafka topic needs its own id");
        let e = decode("other", Some(GOOD.as_bytes())).unwrap_err();
        assert!(e.contains("the record was read by source \"other\""), "{e}");
        let both = GOOD.replace("\"delta\":-2", "\"delta\":-2,\"qty\":4");
        assert!(decode("stream", Some(both.as_bytes())).unwrap_err().contains("both `delta` and `qty`"));
        let big = vec![b' '; MAX_VALUE + 1];
        assert!(decode("stream", Some(&big)).unwrap_err().contains("limit"));
    }
}
