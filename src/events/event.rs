//! The normalized stock event (SPEC section 5) and its strict JSON form.
//!
//! ```json
//! {"id":"evt-1","source":"erp","sku":"OLD-1","location":"WH-EAST","delta":-2,"sequence":17,"occurred_at":"2026-11-27T10:00:00Z"}
//! ```
//!
//! The same line format is used by webhook bodies of `kind: standard` sources (one
//! event or an array of them) and by recorded `.jsonl` files (one event per line).
//! Parsing is strict: unknown or repeated fields, wrong types, `delta` together with
//! `qty`, a timestamp without a zone are all errors, and every message names the
//! field (and, in an array, the event's position) that is wrong.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Longest accepted `id`, `source`, `sku` or `location`, in bytes.
pub const MAX_FIELD_LEN: usize = 512;

/// How an event changes a key's quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Relative: orders (negative), cancellations and returns (positive).
    Delta(i64),
    /// Absolute: the quantity is now this value.
    Qty(i64),
}

/// One stock event: a change to one (sku, location) of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unique per source; the dedupe key is (source, id).
    pub id: String,
    /// The event source's name (`events.sources[].name`).
    pub source: String,
    pub sku: String,
    pub location: String,
    pub change: Change,
    /// Orders events of one key; higher is later. Never the arrival order.
    pub sequence: i64,
    /// When the change happened at the sender.
    pub occurred_at: jiff::Timestamp,
}

impl Event {
    /// The relative change, when this is a delta event.
    pub fn delta(&self) -> Option<i64> {
        match self.change {
            Change::Delta(d) => Some(d),
            Change::Qty(_) => None,
        }
    }

    /// The absolute quantity, when this is a set event.
    pub fn qty(&self) -> Option<i64> {
        match self.change {
            Change::Qty(q) => Some(q),
            Change::Delta(_) => None,
        }
    }

    /// The event as one JSON object, fields in the documented order.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("source".into(), self.source.clone().into());
        m.insert("sku".into(), self.sku.clone().into());
        m.insert("location".into(), self.location.clone().into());
        match self.change {
            Change::Delta(d) => m.insert("delta".into(), d.into()),
            Change::Qty(q) => m.insert("qty".into(), q.into()),
        };
        m.insert("sequence".into(), self.sequence.into());
        m.insert("occurred_at".into(), format_timestamp(self.occurred_at).into());
        Value::Object(m)
    }

    /// The event as one `.jsonl` line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        self.to_json().to_string()
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// RFC 3339 in UTC, as jiff prints it (`2026-11-27T10:00:00Z`, fractional seconds
/// only when there are some).
pub fn format_timestamp(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// What the body is checked against.
#[derive(Debug, Clone, Copy)]
pub struct BodyContext<'a> {
    /// The source named in the URL; a `source` field must equal it.
    pub source: &'a str,
    /// The id a single event without `id` takes (the `webhook-id` header).
    pub default_id: Option<&'a str>,
}

/// A field of an event, in the documented order.
const FIELDS: [&str; 8] = ["id", "source", "sku", "location", "delta", "qty", "sequence", "occurred_at"];

/// An event object as read: every field at most once, no unknown ones.
#[derive(Debug, Default)]
struct RawEvent {
    fields: [Option<Value>; 8],
}

impl RawEvent {
    fn take(&mut self, name: &str) -> Option<Value> {
        let i = FIELDS.iter().position(|f| *f == name).expect("known field");
        self.fields[i].take()
    }
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawEventVisitor)
    }
}

struct RawEventVisitor;

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(key) = map.next_key::<String>()? {
            let Some(i) = FIELDS.iter().position(|f| *f == key) else {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!(
                    "unknown field `{shown}`; an event has only {}",
                    FIELDS.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                )));
            };
            if raw.fields[i].is_some() {
                return Err(de::Error::custom(format!("field `{key}` appears twice")));
            }
            raw.fields[i] = Some(map.next_value::<Value>()?);
        }
        Ok(raw)
    }
}

/// A body: one event object or an array of them.
enum RawBody {
    One(Box<RawEvent>),
    Many(Vec<RawEvent>),
}

impl<'de> Deserialize<'de> for RawBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawBodyVisitor)
    }
}

struct RawBodyVisitor;

impl<'de> Visitor<'de> for RawBodyVisitor {
    type Value = RawBody;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBody, A::Error> {
        RawEventVisitor.visit_map(map).map(|e| RawBody::One(Box::new(e)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBody, A::Error> {
        let mut out = Vec::new();
        while let Some(e) = seq.next_element::<RawEvent>()? {
            out.push(e);
        }
        Ok(RawBody::Many(out))
    }
}

/// Parses a webhook body of normalized events (`kind: standard`).
///
/// Errors are one line, name the wrong field, and for arrays say which event
/// (1-based) is wrong. An empty array is valid and yields no events.
pub fn parse_body(body: &[u8], ctx: BodyContext<'_>) -> Result<Vec<Event>, String> {
    let raw: RawBody = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    match raw {
        RawBody::One(r) => Ok(vec![validate(*r, ctx.source, ctx.default_id, "")?]),
        RawBody::Many(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, r)| validate(r, ctx.source, None, &format!("event {}: ", i + 1)))
            .collect(),
    }
}

/// Parses one line of a recorded `.jsonl` file. `source` and `id` are required.
pub fn parse_line(line: &str) -> Result<Event, String> {
    let mut raw: RawEvent = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let source = match raw.take("source") {
        None => return Err("missing `source`: a recorded event must name its source".into()),
        Some(v) => text_field(v, "source", "")?,
    };
    raw.fields[1] = Some(Value::String(source.clone()));
    validate(raw, &source, None, "")
}

/// Reads a recorded `.jsonl` file: one event per line, blank lines ignored.
/// On failure, returns every bad line as (1-based line number, message); a file
/// that cannot be read is reported as line 0.
pub fn read_jsonl(path: &Path) -> Result<Vec<Event>, Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| vec![(0, format!("cannot read {}: {e}", path.display()))])?;
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(e) => events.push(e),
            Err(m) => errors.push((i + 1, m)),
        }
    }
    if errors.is_empty() { Ok(events) } else { Err(errors) }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(40).collect();
            format!("the string {:?}", shown)
        }
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn text_field(v: Value, name: &str, at: &str) -> Result<String, String> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err(format!("{at}`{name}` is empty")),
        Value::String(s) if s.len() > MAX_FIELD_LEN => {
            Err(format!("{at}`{name}` is {} bytes long; the limit is {MAX_FIELD_LEN}", s.len()))
        }
        Value::String(s) if s.chars().any(char::is_control) => {
            Err(format!("{at}`{name}` contains a control character"))
        }
        Value::String(s) => Ok(s),
        other => Err(format!("{at}`{name}` must be a string, got {}", describe(&other))),
    }
}

fn int_field(v: Value, name: &str, at: &str) -> Result<i64, String> {
    match &v {
        Value::Number(n) => n.as_i64().ok_or_else(|| {
            if n.is_f64() {
                format!("{at}`{name}` must be a whole number, got {n}")
            } else {
                format!("{at}`{name}` is out of range: {n}")
            }
        }),
        _ => Err(format!("{at}`{name}` must be an integer, got {}", describe(&v))),
    }
}

fn validate(mut r: RawEvent, source: &str, default_id: Option<&str>, at: &str) -> Result<Event, String> {
    let id = match r.take("id") {
        Some(v) => text_field(v, "id", at)?,
        None => match default_id {
            Some(id) => id.to_owned(),
            None if at.is_empty() => return Err("missing `id` (and no webhook-id header to take it from)".into()),
            None => return Err(format!("{at}missing `id`: every event of an array needs its own id")),
        },
    };
    if let Some(v) = r.take("source") {
        let s = text_field(v, "source", at)?;
        if s != source {
            return Err(format!("{at}`source` is {s:?} but the URL names source {source:?}; they must be equal"));
        }
    }
    let sku = text_field(r.take("sku").ok_or_else(|| format!("{at}missing `sku`"))?, "sku", at)?;
    let location = text_field(r.take("location").ok_or_else(|| format!("{at}missing `location`"))?, "location", at)?;
    let change = match (r.take("delta"), r.take("qty")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{at}both `delta` and `qty` given; an event is either relative (`delta`) or absolute (`qty`)"
            ));
        }
        (Some(d), None) => Change::Delta(int_field(d, "delta", at)?),
        (None, Some(q)) => Change::Qty(int_field(q, "qty", at)?),
        (None, None) => return Err(format!("{at}missing `delta` or `qty`: say how the quantity changes")),
    };
    let sequence = int_field(r.take("sequence").ok_or_else(|| format!("{at}missing `sequence`"))?, "sequence", at)?;
    let occurred_at = match r.take("occurred_at") {
        None => return Err(format!("{at}missing `occurred_at`")),
        Some(Value::String(s)) => s.parse::<jiff::Timestamp>().map_err(|_| {
            let shown: String = s.chars().take(40).collect();
            format!("{at}`occurred_at` {shown:?} is not an RFC 3339 timestamp with a zone, e.g. 2026-11-27T10:00:00Z")
        })?,
        Some(other) => return Err(format!("{at}`occurred_at` must be a string, got {}", describe(&other))),
    };
    Ok(Event { id, source: source.to_owned(), sku, location, change, sequence, occurred_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(default_id: Option<&str>) -> BodyContext<'_> {
        BodyContext { source: "erp", default_id }
    }

    const GOOD: &str = r#"{"id":"evt-1","source":"erp","sku":"OLD-1","location":"WH-EAST","delta":-2,"sequence":17,"occurred_at":"2026-11-27T10:00:00Z"}"#;

    #[test]
    fn the_spec_example_round_trips() {
        let ev = parse_body(GOOD.as_bytes(), ctx(None)).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].delta(), Some(-2));
        assert_eq!(ev[0].qty(), None);
        assert_eq!(ev[0].to_json_line(), GOOD);
        assert_eq!(parse_line(GOOD).unwrap(), ev[0]);
    }

    #[test]
    fn arrays_absolute_sets_and_default_ids() {
        let body = r#"[{"id":"a","sku":"S","location":"L","qty":5,"sequence":1,"occurred_at":"2026-11-27T10:00:00+01:00"},
                       {"id":"b","sku":"S","location":"L","delta":3,"sequence":2,"occurred_at":"2026-11-27T10:00:00.5Z"}]"#;
        let ev = parse_body(body.as_bytes(), ctx(Some("hdr"))).unwrap();
        assert_eq!(ev[0].change, Change::Qty(5));
        assert_eq!(ev[0].source, "erp");
        assert_eq!(ev[0].to_json()["occurred_at"], "2026-11-27T09:00:00Z");
        assert_eq!(ev[1].id, "b");
        let single = r#"{"sku":"S","location":"L","qty":5,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#;
        assert_eq!(parse_body(single.as_bytes(), ctx(Some("msg_1"))).unwrap()[0].id, "msg_1");
        assert!(parse_body(b"[]", ctx(None)).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"id":"a","sku":"S","location":"L","delta":1,"qty":2,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "both `delta` and `qty`",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "missing `delta` or `qty`",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":"1","sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "`delta` must be an integer, got the string \"1\"",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":1.5,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "`delta` must be a whole number",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00"}"#,
                "`occurred_at`",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z","colour":"red"}"#,
                "unknown field `colour`",
            ),
            (
                r#"{"id":"a","sku":"S","sku":"T","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "field `sku` appears twice",
            ),
            (
                r#"{"id":"a","source":"shop","sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "`source` is \"shop\" but the URL names source \"erp\"",
            ),
            (
                r#"{"sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "missing `id`",
            ),
            (
                r#"{"id":"a","sku":"","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "`sku` is empty",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "missing `sequence`",
            ),
            (
                r#"{"id":"a","sku":"S","location":"L","delta":99999999999999999999,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#,
                "`delta`",
            ),
            (
                r#"[{"id":"a","sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"},{"sku":"S"}]"#,
                "event 2: missing `id`",
            ),
            (r#"{"id":"a""#, "malformed JSON"),
            (r#"42"#, "malformed JSON"),
            (r#"[1]"#, "malformed JSON"),
        ];
        for (body, want) in cases {
            let err = parse_body(body.as_bytes(), ctx(None)).unwrap_err();
            assert!(err.contains(want), "{body}\n  error: {err}\n  wanted: {want}");
        }
    }

    #[test]
    fn jsonl_needs_a_source_and_reports_every_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let no_source =
            r#"{"id":"x","sku":"S","location":"L","delta":1,"sequence":1,"occurred_at":"2026-11-27T10:00:00Z"}"#;
        std::fs::write(&p, format!("{GOOD}\n\n{no_source}\nnot json\n{GOOD}\n")).unwrap();
        let errs = read_jsonl(&p).unwrap_err();
        assert_eq!(errs.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4]);
        assert!(errs[0].1.contains("missing `source`"), "{}", errs[0].1);
        std::fs::write(&p, format!("{GOOD}\n{GOOD}\n")).unwrap();
        assert_eq!(read_jsonl(&p).unwrap().len(), 2);
        assert_eq!(read_jsonl(&dir.path().join("nope.jsonl")).unwrap_err()[0].0, 0);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = parse_body(&bytes, ctx(Some("id")));
                if let Ok(s) = std::str::from_utf8(&bytes) {
                    let _ = parse_line(s);
                }
            }

            #[test]
            fn mutated_events_never_panic(cut in 0usize..120, byte in any::<u8>()) {
                let mut b = GOOD.as_bytes().to_vec();
                let at = cut.min(b.len() - 1);
                b[at] = byte;
                let _ = parse_body(&b, ctx(None));
                b.truncate(at);
                let _ = parse_body(&b, ctx(None));
            }
        }
    }
}
