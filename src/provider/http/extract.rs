//! Rows out of an answer: the manifest's `records`, optional `expand`, and the
//! `sku` / `location` / `qty` / `fields` paths. Never panics on odd JSON: a
//! record without what the manifest promised becomes a problem (or is skipped
//! with `skip_incomplete`), never a guess.

use serde_json::{Map, Value};

use super::jsonpath::{quantity, scalar_text};
use super::manifest::{Field, LocationField, RowSpec};

/// One row as the platform spells it (the location is the platform's id).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub sku: String,
    pub location: String,
    pub qty: i64,
    /// The manifest's `fields`, for the write template (`w.remote.NAME`).
    pub extra: Map<String, Value>,
}

/// What one element of an answer turned into.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Row(Row),
    Problem { summary: String, help: String },
    Skipped,
}

/// How many records the page holds (for paging) and what they hold.
pub fn extract(spec: &RowSpec, body: &Value) -> (usize, Vec<Item>) {
    let records = spec.records.select(body);
    let mut items = Vec::with_capacity(records.len());
    for record in &records {
        match &spec.expand {
            None => items.push(one(spec, record, record)),
            Some(e) => items.extend(e.select(record).into_iter().map(|el| one(spec, record, el))),
        }
    }
    (records.len(), items)
}

fn get<'a>(f: &Field, record: &'a Value, element: &'a Value) -> Option<&'a Value> {
    f.path.first(if f.from_record { record } else { element })
}

fn shown(f: &Field) -> String {
    if f.from_record { format!("^.{}", f.path) } else { f.path.to_string() }
}

fn one(spec: &RowSpec, record: &Value, element: &Value) -> Item {
    let sku = get(&spec.sku, record, element).and_then(scalar_text).filter(|s| !s.trim().is_empty());
    let Some(sku) = sku else {
        if spec.skip_incomplete {
            return Item::Skipped;
        }
        return Item::Problem {
            summary: format!("A record has no SKU at `{}`", shown(&spec.sku)),
            help: "Give the item a SKU on the platform, or set `read.skip_incomplete: true` in the manifest to skip such records.".into(),
        };
    };
    let location = match &spec.location {
        LocationField::Value(v) => v.clone(),
        LocationField::Path(f) => match get(f, record, element).and_then(scalar_text) {
            Some(l) => l,
            None => {
                return Item::Problem {
                    summary: format!("SKU `{sku}`: no location at `{}`", shown(f)),
                    help: "Check `read.location` in the manifest against the platform's answer.".into(),
                };
            }
        },
    };
    let qty = match get(&spec.qty, record, element) {
        None if spec.skip_incomplete => return Item::Skipped,
        None => {
            return Item::Problem {
                summary: format!("SKU `{sku}` at `{location}`: no quantity at `{}`", shown(&spec.qty)),
                help: "The platform does not track stock for this item; track it, or set `read.skip_incomplete: true`."
                    .into(),
            };
        }
        Some(v) => match quantity(v) {
            Some(q) => q,
            None => {
                let text: String = v.to_string().chars().take(40).collect();
                return Item::Problem {
                    summary: format!("SKU `{sku}` at `{location}`: quantity {text} is not a whole number"),
                    help: "stockshift moves whole units; fix the quantity on the platform.".into(),
                };
            }
        },
    };
    let mut extra = Map::new();
    for (name, f) in &spec.fields {
        if let Some(v) = get(f, record, element) {
            extra.insert(name.clone(), v.clone());
        }
    }
    Item::Row(Row { sku, location, qty, extra })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::manifest::Manifest;
    use serde_json::json;

    fn spec(extra: &str) -> RowSpec {
        let text = format!(
            "name: t\nread:\n  request: {{ path: /x }}\n  records: data[*]\n  expand: locations[*]\n  sku: ^.identity.sku\n  location: location_id\n  qty: on_hand\n  fields: {{ vid: ^.identity.variant_id }}\n{extra}"
        );
        Manifest::parse(&text, "t.yaml").unwrap().rows
    }

    #[test]
    fn nested_records_become_rows() {
        let body = json!({"data": [
            {"identity": {"sku": "A", "variant_id": 7}, "locations": [{"location_id": 1, "on_hand": 5}, {"location_id": 2, "on_hand": "0"}]},
            {"identity": {"sku": "B"}, "locations": []}
        ]});
        let (n, items) = extract(&spec(""), &body);
        assert_eq!(n, 2);
        assert_eq!(items.len(), 2);
        let Item::Row(r) = &items[1] else { panic!("{items:?}") };
        assert_eq!((r.sku.as_str(), r.location.as_str(), r.qty), ("A", "2", 0));
        assert_eq!(r.extra["vid"], json!(7));
    }

    #[test]
    fn odd_records_are_problems_or_skipped() {
        let body = json!({"data": [
            {"identity": {}, "locations": [{"location_id": 1, "on_hand": 5}]},
            {"identity": {"sku": "C"}, "locations": [{"location_id": 1, "on_hand": 1.5}, {"location_id": 1}, {"on_hand": 3}]},
            "a string", 7, null
        ]});
        let (n, items) = extract(&spec(""), &body);
        assert_eq!(n, 5);
        let problems: Vec<String> = items
            .iter()
            .filter_map(|i| match i {
                Item::Problem { summary, .. } => Some(summary.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[1].contains("1.5 is not a whole number"), "{problems:?}");
        let (_, items) = extract(&spec("  skip_incomplete: true\n"), &body);
        assert_eq!(items.iter().filter(|i| **i == Item::Skipped).count(), 2);
        // Garbage where the records should be: nothing, no panic.
        for garbage in [json!(null), json!("x"), json!({"data": 3}), json!([1, 2])] {
            assert_eq!(extract(&spec(""), &garbage).0, 0);
        }
    }
}
