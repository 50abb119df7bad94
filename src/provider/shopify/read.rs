//! Reading inventory levels: every level of every location, paged or with a
//! bulk operation, and point reads of single levels.
//!
//! A row is (SKU, location name, the configured quantity). Levels of items
//! without a SKU cannot be named by a plan and are left out. `line` is the
//! level's position in the read (paged) or its JSONL line (bulk).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::catalog::Catalog;
use super::client::{Client, Request};
use super::{bulk, graphql as gql};
use crate::provider::{ProviderError, ReadInfo, RowSink};

/// Emits one level (`{ item { id sku } quantities [...] }`) as a row.
fn emit(catalog: &mut Catalog, sink: &mut dyn RowSink, line: u64, level: &Value, location: &str, name: &str) -> bool {
    let Some(sku) = gql::str_at(level, &["item", "sku"]).filter(|s| !s.is_empty()) else {
        return false;
    };
    let Some(qty) = gql::quantity(level, name) else {
        sink.problem(
            line,
            0,
            format!("Shopify returned the level of `{sku}` at `{location}` without its `{name}` quantity"),
            "Check that the token has the read_inventory scope and read again.".into(),
        );
        return false;
    };
    if let Some(id) = gql::str_at(level, &["item", "id"]) {
        catalog.learn_item(sku, id);
    }
    sink.row(sku, location, qty, line);
    true
}

/// Reads location by location, 250 levels per page.
pub fn paged(
    client: &mut Client,
    catalog: &mut Catalog,
    name: &str,
    sink: &mut dyn RowSink,
) -> Result<ReadInfo, ProviderError> {
    catalog.load_locations(client)?;
    let locations = catalog.locations().to_vec();
    let mut line = 0;
    let mut rows = 0;
    for (id, location) in &locations {
        let mut after: Option<String> = None;
        loop {
            let data = client.execute(&Request {
                name: "StockshiftLevels",
                query: gql::LEVELS_PAGE,
                variables: json!({ "id": id, "after": after, "names": [name] }),
                est_cost: gql::LEVELS_PAGE_COST,
            })?;
            let conn = gql::at(&data, &["location", "inventoryLevels"]).unwrap_or(&Value::Null);
            for level in conn.get("nodes").and_then(Value::as_array).into_iter().flatten() {
                line += 1;
                rows += u64::from(emit(catalog, sink, line, level, location, name));
            }
            match gql::next_page(conn) {
                Some(c) if Some(&c) != after.as_ref() => after = Some(c),
                _ => break,
            }
        }
    }
    Ok(ReadInfo { rows, sha256: None })
}

/// Reads with one bulk operation over every location's levels.
pub fn bulk(
    client: &mut Client,
    catalog: &mut Catalog,
    name: &str,
    sink: &mut dyn RowSink,
) -> Result<ReadInfo, ProviderError> {
    let Some(url) = bulk::run(client, &gql::bulk_levels(name))? else {
        return Ok(ReadInfo { rows: 0, sha256: None });
    };
    let mut locations: HashMap<String, String> = HashMap::new();
    // Levels whose location line has not been seen yet (Shopify writes parents
    // first, but nothing here depends on it).
    let mut early: Vec<(u64, Value)> = Vec::new();
    let mut rows = 0;
    bulk::for_each_line(client, &url, |line, v| match v.get("__parentId").and_then(Value::as_str) {
        Some(parent) => match locations.get(parent) {
            Some(location) => rows += u64::from(emit(catalog, sink, line, &v, location, name)),
            None => early.push((line, v)),
        },
        None => {
            if let (Some(id), Some(n)) = (gql::str_at(&v, &["id"]), gql::str_at(&v, &["name"])) {
                locations.insert(id.to_owned(), n.to_owned());
            }
        }
    })?;
    for (line, v) in early {
        let parent = v.get("__parentId").and_then(Value::as_str).unwrap_or_default();
        match locations.get(parent) {
            Some(location) => rows += u64::from(emit(catalog, sink, line, &v, location, name)),
            None => sink.problem(
                line,
                0,
                format!("bulk result line {line} belongs to `{parent}`, which is not in the result"),
                "Read again; if it persists, use `read: paged`.".into(),
            ),
        }
    }
    Ok(ReadInfo { rows, sha256: None })
}

/// The current quantity of each (inventory item id, location id); `None` where
/// the item is not stocked there (or no longer exists).
pub fn levels_at(client: &mut Client, name: &str, pairs: &[(&str, &str)]) -> Result<Vec<Option<i64>>, ProviderError> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(gql::KEYS_PER_POINT_READ) {
        let query = gql::levels_at(chunk.len());
        let mut vars = serde_json::Map::new();
        vars.insert("names".into(), json!([name]));
        for (i, (item, loc)) in chunk.iter().enumerate() {
            vars.insert(format!("i{i}"), json!(item));
            vars.insert(format!("l{i}"), json!(loc));
        }
        let data = client.execute(&Request {
            name: "StockshiftLevelsAt",
            query: &query,
            variables: Value::Object(vars),
            est_cost: gql::POINT_READ_COST * chunk.len() as f64,
        })?;
        for i in 0..chunk.len() {
            let level = gql::at(&data, &[&format!("k{i}"), "inventoryLevel"]).filter(|l| !l.is_null());
            out.push(match level {
                None => None,
                Some(l) => Some(gql::quantity(l, name).ok_or_else(|| ProviderError::Invalid {
                    what: "shopify".into(),
                    message: format!("a level was returned without its `{name}` quantity"),
                })?),
            });
        }
    }
    Ok(out)
}
