//! The GraphQL documents the provider sends, their estimated costs, and small
//! helpers to read the answers without panicking on any shape.
//!
//! Estimated costs follow Shopify's published rules (an object 1 point, a
//! scalar 0, a connection 2 plus `first` times its node, a mutation 10). They
//! only matter until Shopify reports the real `requestedQueryCost` of a
//! document, which the client then uses.

use serde_json::Value;

/// Locations, 100 per page (`locations` lists active ones).
pub const LOCATIONS: &str = "query StockshiftLocations($after: String) { \
    locations(first: 100, after: $after) { nodes { id name } pageInfo { hasNextPage endCursor } } }";
pub const LOCATIONS_COST: f64 = 2.0 + 100.0;

/// One page of a location's inventory levels.
pub const LEVELS_PAGE: &str = "query StockshiftLevels($id: ID!, $after: String, $names: [String!]!) { \
    location(id: $id) { inventoryLevels(first: 250, after: $after) { \
    nodes { item { id sku } quantities(names: $names) { name quantity } } \
    pageInfo { hasNextPage endCursor } } } }";
pub const LEVELS_PAGE_COST: f64 = 1.0 + 2.0 + 250.0 * 3.0;

/// The number of variants (one inventory item each), to choose paged or bulk reads.
pub const VARIANT_COUNT: &str =
    "query StockshiftVariantCount($limit: Int) { productVariantsCount(limit: $limit) { count precision } }";
pub const VARIANT_COUNT_COST: f64 = 1.0;

/// SKUs looked up per `inventoryItems` search.
pub const SKUS_PER_LOOKUP: usize = 50;
/// Inventory items matching a search (`sku:"A" OR sku:"B"`), `first` of them
/// per page (twice the SKUs searched: a search may match more than one item).
pub const ITEMS_BY_SKU: &str = "query StockshiftItems($query: String!, $first: Int!, $after: String) { \
    inventoryItems(first: $first, query: $query, after: $after) { nodes { id sku } pageInfo { hasNextPage endCursor } } }";
/// The page size for a search of `skus` SKUs.
pub fn items_page(skus: usize) -> usize {
    (skus * 2).clamp(10, 250)
}

/// Keys per point-read document.
pub const KEYS_PER_POINT_READ: usize = 100;
/// The cost of one key in [`levels_at`].
pub const POINT_READ_COST: f64 = 3.0;

/// Point reads: the level of each (inventory item, location), aliased `k0`, `k1` ...
/// Variables: `names`, `i<n>` (item id) and `l<n>` (location id).
pub fn levels_at(n: usize) -> String {
    let mut vars = String::from("$names: [String!]!");
    let mut body = String::new();
    for i in 0..n {
        vars.push_str(&format!(", $i{i}: ID!, $l{i}: ID!"));
        body.push_str(&format!(
            " k{i}: inventoryItem(id: $i{i}) {{ inventoryLevel(locationId: $l{i}) {{ quantities(names: $names) {{ name quantity }} }} }}"
        ));
    }
    format!("query StockshiftLevelsAt({vars}) {{{body} }}")
}

/// The conditional set. The key is a literal: it is derived (hex and dashes), never user text.
pub fn set_quantities(key: &str) -> String {
    debug_assert!(key.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    format!(
        "mutation StockshiftSet($input: InventorySetQuantitiesInput!) {{ \
         inventorySetQuantities(input: $input) @idempotent(key: \"{key}\") {{ \
         inventoryAdjustmentGroup {{ id }} userErrors {{ field message code }} }} }}"
    )
}
pub const SET_COST: f64 = 10.0;

/// Activations per document.
pub const ACTIVATIONS_PER_REQUEST: usize = 25;
/// Activates items at locations (a create), aliased `a0`, `a1` ..., one key each.
/// Variables: `names`, `i<n>`, `l<n>`.
pub fn activate(keys: &[String]) -> String {
    let mut vars = String::from("$names: [String!]!");
    let mut body = String::new();
    for (i, key) in keys.iter().enumerate() {
        debug_assert!(key.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        vars.push_str(&format!(", $i{i}: ID!, $l{i}: ID!"));
        body.push_str(&format!(
            " a{i}: inventoryActivate(inventoryItemId: $i{i}, locationId: $l{i}) @idempotent(key: \"{key}\") {{ \
             inventoryLevel {{ quantities(names: $names) {{ name quantity }} }} userErrors {{ field message }} }}"
        ));
    }
    format!("mutation StockshiftActivate({vars}) {{{body} }}")
}

/// Starts a bulk query.
pub const BULK_RUN: &str = "mutation StockshiftBulkRun($query: String!) { \
    bulkOperationRunQuery(query: $query) { bulkOperation { id status } userErrors { field message } } }";
pub const BULK_RUN_COST: f64 = 10.0;

/// Polls a bulk operation by id.
pub const BULK_POLL: &str = "query StockshiftBulkPoll($id: ID!) { \
    node(id: $id) { ... on BulkOperation { id status errorCode objectCount url } } }";
pub const BULK_POLL_COST: f64 = 1.0;

/// The bulk query for every level of every location: JSONL lines for locations
/// (`id`, `name`) and levels (`item`, `quantities`, `__parentId` = location id).
pub fn bulk_levels(name: &str) -> String {
    format!(
        "{{ locations {{ edges {{ node {{ id name inventoryLevels {{ edges {{ node {{ \
         item {{ id sku }} quantities(names: [{}]) {{ name quantity }} }} }} }} }} }} }} }}",
        string_literal(name)
    )
}

/// The bulk query for every inventory item's id and SKU.
pub const BULK_ITEMS: &str = "{ inventoryItems { edges { node { id sku } } } }";

/// A GraphQL string literal.
pub fn string_literal(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A search query matching any of `skus` exactly: `sku:"A" OR sku:"B"`.
pub fn sku_search(skus: &[&str]) -> String {
    skus.iter()
        .map(|s| format!("sku:\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `v.a.b.c`, or `None` anywhere along the way.
pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

/// A string at `path`.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

/// The quantity called `name` in a level's `quantities` list.
pub fn quantity(level: &Value, name: &str) -> Option<i64> {
    level
        .get("quantities")?
        .as_array()?
        .iter()
        .find(|q| q.get("name").and_then(Value::as_str) == Some(name))?
        .get("quantity")?
        .as_i64()
}

/// `pageInfo` of a connection: the cursor of the next page, if any.
pub fn next_page(conn: &Value) -> Option<String> {
    let info = conn.get("pageInfo")?;
    if info.get("hasNextPage").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    info.get("endCursor").and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_search_quotes_and_escapes() {
        assert_eq!(sku_search(&["A-1", "B\"2", "C\\3"]), r#"sku:"A-1" OR sku:"B\"2" OR sku:"C\\3""#);
    }

    #[test]
    fn generated_documents_have_one_alias_per_key() {
        let d = levels_at(3);
        assert!(d.contains("k2: inventoryItem(id: $i2)") && d.contains("$l2: ID!") && !d.contains("k3"));
        let a = activate(&["0a-1".into(), "0b-2".into()]);
        assert!(a.contains("a1: inventoryActivate") && a.contains("@idempotent(key: \"0b-2\")"));
        assert!(bulk_levels("on_hand").contains(r#"quantities(names: ["on_hand"])"#));
    }

    #[test]
    fn readers_tolerate_any_shape() {
        let v = serde_json::json!({"quantities": [{"name": "available", "quantity": 4}, {"name": "x"}]});
        assert_eq!(quantity(&v, "available"), Some(4));
        assert_eq!(quantity(&v, "on_hand"), None);
        assert_eq!(quantity(&serde_json::json!({"quantities": 3}), "available"), None);
        assert_eq!(
            next_page(&serde_json::json!({"pageInfo": {"hasNextPage": true, "endCursor": "c"}})),
            Some("c".into())
        );
        assert_eq!(next_page(&serde_json::json!({"pageInfo": {"hasNextPage": true}})), None);
        assert_eq!(str_at(&serde_json::json!({"a": {"b": "x"}}), &["a", "b"]), Some("x"));
        assert_eq!(str_at(&serde_json::json!({"a": 1}), &["a", "b"]), None);
    }
}
