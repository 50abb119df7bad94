//! Magento's `searchCriteria` query language for `GET /V1/inventory/source-items`,
//! and the answer's shape (`items`, `total_count`).
//!
//! Filters inside one filter group are ORed, groups are ANDed. Every value gets
//! its own `eq` filter rather than one `in` filter, because `in` splits its value
//! on commas and a SKU may contain one. Results are sorted by SKU then source so
//! pages are stable. Magento answers a `currentPage` past the end with the last
//! page again, so paging stops on `total_count`, never on an empty page alone.

use reqwest::Url;
use serde_json::Value;

use crate::provider::http::jsonpath::quantity;

/// `field = v1 OR field = v2 ...`; several of these are ANDed.
pub struct AnyOf<'a> {
    pub field: &'a str,
    pub values: Vec<&'a str>,
}

/// The source-items listing URL for one page.
pub fn source_items_url(base: &str, filters: &[AnyOf<'_>], page_size: usize, page: u64) -> Result<Url, String> {
    let mut url = crate::provider::http::transport::join(base, "/V1/inventory/source-items")?;
    {
        let mut q = url.query_pairs_mut();
        for (g, group) in filters.iter().enumerate() {
            for (f, value) in group.values.iter().enumerate() {
                let p = format!("searchCriteria[filterGroups][{g}][filters][{f}]");
                q.append_pair(&format!("{p}[field]"), group.field);
                q.append_pair(&format!("{p}[value]"), value);
                q.append_pair(&format!("{p}[condition_type]"), "eq");
            }
        }
        for (i, field) in ["sku", "source_code"].iter().enumerate() {
            q.append_pair(&format!("searchCriteria[sortOrders][{i}][field]"), field);
            q.append_pair(&format!("searchCriteria[sortOrders][{i}][direction]"), "ASC");
        }
        q.append_pair("searchCriteria[pageSize]", &page_size.to_string());
        q.append_pair("searchCriteria[currentPage]", &page.to_string());
    }
    Ok(url)
}

/// One source item as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    pub sku: String,
    pub source_code: String,
    pub quantity: i64,
}

/// A source item the provider cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadItem {
    pub sku: Option<String>,
    pub reason: String,
}

/// One page of the listing.
#[derive(Debug, Default)]
pub struct Page {
    pub items: Vec<Result<SourceItem, BadItem>>,
    pub total_count: Option<u64>,
}

/// Reads a listing answer; an answer without an `items` array is an error.
pub fn parse_page(body: &Value) -> Result<Page, String> {
    let items = match body.get("items") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None if body.get("total_count").and_then(Value::as_u64) == Some(0) => {
            return Ok(Page { items: vec![], total_count: Some(0) });
        }
        _ => return Err("the answer has no `items` array".into()),
    };
    let total_count = body.get("total_count").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let items = items.iter().map(item).collect();
    Ok(Page { items, total_count })
}

fn item(v: &Value) -> Result<SourceItem, BadItem> {
    let sku = v.get("sku").and_then(Value::as_str).filter(|s| !s.is_empty());
    let Some(sku) = sku else {
        return Err(BadItem { sku: None, reason: "a source item without a SKU".into() });
    };
    let bad = |reason: String| BadItem { sku: Some(sku.to_owned()), reason };
    let source_code = v
        .get("source_code")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("SKU `{sku}`: source item without a source_code")))?;
    let q = v.get("quantity").ok_or_else(|| bad(format!("SKU `{sku}` at source `{source_code}`: no quantity")))?;
    let quantity = quantity(q).ok_or_else(|| {
        bad(format!(
            "SKU `{sku}` at source `{source_code}`: quantity {} is not a whole number (decimal quantities are not supported)",
            q.to_string().chars().take(40).collect::<String>()
        ))
    })?;
    Ok(SourceItem { sku: sku.to_owned(), source_code: source_code.to_owned(), quantity })
}

/// Magento's error text: `message` with `%1` / `%name` placeholders filled from `parameters`.
pub fn error_message(body: &Value) -> Option<String> {
    let mut msg = body.get("message")?.as_str()?.to_owned();
    match body.get("parameters") {
        Some(Value::Array(ps)) => {
            for (i, p) in ps.iter().enumerate().rev() {
                let text = p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string());
                msg = msg.replace(&format!("%{}", i + 1), &text);
            }
        }
        Some(Value::Object(ps)) => {
            for (k, p) in ps {
                let text = p.as_str().map(str::to_owned).unwrap_or_else(|| p.to_string());
                msg = msg.replace(&format!("%{k}"), &text);
            }
        }
        _ => {}
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_carry_filters_sorting_and_paging() {
        let u = source_items_url(
            "http://h/rest",
            &[AnyOf { field: "sku", values: vec!["A,1", "B"] }, AnyOf { field: "source_code", values: vec!["eu"] }],
            300,
            2,
        )
        .unwrap();
        let pairs: Vec<(String, String)> = u.query_pairs().map(|(k, v)| (k.into(), v.into())).collect();
        let get = |k: &str| pairs.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.as_str());
        assert_eq!(u.path(), "/rest/V1/inventory/source-items");
        assert_eq!(get("searchCriteria[filterGroups][0][filters][0][value]"), Some("A,1"));
        assert_eq!(get("searchCriteria[filterGroups][0][filters][1][field]"), Some("sku"));
        assert_eq!(get("searchCriteria[filterGroups][1][filters][0][value]"), Some("eu"));
        assert_eq!(get("searchCriteria[filterGroups][1][filters][0][condition_type]"), Some("eq"));
        assert_eq!(get("searchCriteria[pageSize]"), Some("300"));
        assert_eq!(get("searchCriteria[currentPage]"), Some("2"));
        assert_eq!(get("searchCriteria[sortOrders][1][field]"), Some("source_code"));
    }

    #[test]
    fn pages_and_bad_items() {
        let p = parse_page(&json!({
            "items": [
                {"sku": "A", "source_code": "eu", "quantity": 5, "status": 1},
                {"sku": "B", "source_code": "eu", "quantity": 2.5, "status": 1},
                {"sku": "C", "source_code": "eu", "quantity": "7.0000", "status": 1},
                {"source_code": "eu", "quantity": 1},
                "junk"
            ],
            "total_count": 5
        }))
        .unwrap();
        assert_eq!(p.total_count, Some(5));
        assert_eq!(p.items[0], Ok(SourceItem { sku: "A".into(), source_code: "eu".into(), quantity: 5 }));
        assert!(p.items[1].as_ref().unwrap_err().reason.contains("2.5 is not a whole number"));
        assert_eq!(p.items[2].as_ref().unwrap().quantity, 7);
        assert_eq!(p.items[3].as_ref().unwrap_err().sku, None);
        assert!(p.items[4].is_err());
        assert!(parse_page(&json!({"message": "x"})).is_err());
        assert!(parse_page(&json!([1, 2])).is_err());
        assert_eq!(parse_page(&json!({"items": null, "total_count": 0})).unwrap().items.len(), 0);
    }

    #[test]
    fn error_messages_fill_placeholders() {
        let b = json!({"message": "Product %1 at %2 failed", "parameters": ["A", "eu"]});
        assert_eq!(error_message(&b).as_deref(), Some("Product A at eu failed"));
        let b = json!({"message": "The consumer isn't authorized to access %resources.", "parameters": {"resources": "Magento_InventoryApi::source"}});
        assert_eq!(
            error_message(&b).as_deref(),
            Some("The consumer isn't authorized to access Magento_InventoryApi::source.")
        );
        assert_eq!(error_message(&json!("x")), None);
    }
}
