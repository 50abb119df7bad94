//! Names to Shopify ids: location name → `gid://shopify/Location/…` and
//! SKU → `gid://shopify/InventoryItem/…`.
//!
//! Plans name locations and SKUs; the Admin API wants ids. Locations are
//! listed once. SKUs are learnt from every read, then looked up on demand with
//! an `inventoryItems` search (`sku:"A" OR sku:"B"`, exact matches kept), or,
//! for a large catalogue, all at once with one bulk query. A name that two
//! objects share is ambiguous and is never written.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::client::{Client, Request};
use super::{bulk, graphql as gql};
use crate::provider::ProviderError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Id(String),
    Ambiguous,
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// Location name → id, once listed.
    locations: Option<HashMap<String, Entry>>,
    /// Location id → name, in listing order.
    location_list: Vec<(String, String)>,
    items: HashMap<String, Entry>,
    /// SKUs searched for and not found.
    missing: HashSet<String>,
    /// Every inventory item is in `items` (a bulk index ran).
    complete: bool,
    /// SKUs looked up with searches so far.
    pub searched: usize,
}

impl Catalog {
    /// Lists the shop's active locations (once).
    pub fn load_locations(&mut self, client: &mut Client) -> Result<(), ProviderError> {
        if self.locations.is_some() {
            return Ok(());
        }
        let mut map = HashMap::new();
        let mut list = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let data = client.execute(&Request {
                name: "StockshiftLocations",
                query: gql::LOCATIONS,
                variables: json!({ "after": after }),
                est_cost: gql::LOCATIONS_COST,
            })?;
            let conn = data.get("locations").unwrap_or(&Value::Null);
            for node in conn.get("nodes").and_then(Value::as_array).into_iter().flatten() {
                let (Some(id), Some(name)) = (gql::str_at(node, &["id"]), gql::str_at(node, &["name"])) else {
                    continue;
                };
                list.push((id.to_owned(), name.to_owned()));
                map.entry(name.to_owned())
                    .and_modify(|e| *e = Entry::Ambiguous)
                    .or_insert_with(|| Entry::Id(id.to_owned()));
            }
            match gql::next_page(conn) {
                Some(c) if Some(&c) != after.as_ref() => after = Some(c),
                _ => break,
            }
        }
        self.locations = Some(map);
        self.location_list = list;
        Ok(())
    }

    /// (id, name) of every active location, in Shopify's order.
    pub fn locations(&self) -> &[(String, String)] {
        &self.location_list
    }

    /// The id of the location called `name`, or why there is none.
    pub fn location(&self, name: &str) -> Result<&str, String> {
        match self.locations.as_ref().and_then(|m| m.get(name)) {
            Some(Entry::Id(id)) => Ok(id),
            Some(Entry::Ambiguous) => Err(format!("several Shopify locations are named `{name}`; rename one")),
            None => Err(format!("the shop has no active location named `{name}`")),
        }
    }

    /// Remembers an item seen while reading.
    pub fn learn_item(&mut self, sku: &str, id: &str) {
        if sku.is_empty() {
            return;
        }
        match self.items.get_mut(sku) {
            Some(Entry::Id(known)) if known != id => *self.items.get_mut(sku).expect("present") = Entry::Ambiguous,
            Some(_) => {}
            None => {
                self.items.insert(sku.to_owned(), Entry::Id(id.to_owned()));
            }
        }
    }

    /// The inventory item of `sku`, or why there is none.
    pub fn item(&self, sku: &str) -> Result<&str, String> {
        match self.items.get(sku) {
            Some(Entry::Id(id)) => Ok(id),
            Some(Entry::Ambiguous) => {
                Err(format!("several Shopify inventory items have the SKU `{sku}`; make SKUs unique first"))
            }
            None => Err(format!(
                "the shop has no inventory item with the SKU `{sku}`; create the product variant first (stockshift sets stock, it does not create products)"
            )),
        }
    }

    /// Whether `sku` still needs a lookup.
    fn unknown(&self, sku: &str) -> bool {
        !self.complete && !sku.is_empty() && !self.items.contains_key(sku) && !self.missing.contains(sku)
    }

    /// Looks up the SKUs not known yet with `inventoryItems` searches.
    pub fn lookup(&mut self, client: &mut Client, skus: &[&str]) -> Result<(), ProviderError> {
        let mut want: Vec<&str> = skus.iter().copied().filter(|s| self.unknown(s)).collect();
        want.sort_unstable();
        want.dedup();
        self.searched += want.len();
        for chunk in want.chunks(gql::SKUS_PER_LOOKUP) {
            let query = gql::sku_search(chunk);
            let first = gql::items_page(chunk.len());
            let wanted: HashSet<&str> = chunk.iter().copied().collect();
            let mut after: Option<String> = None;
            loop {
                let data = client.execute(&Request {
                    name: "StockshiftItems",
                    query: gql::ITEMS_BY_SKU,
                    variables: json!({ "query": query, "first": first, "after": after }),
                    est_cost: 2.0 + first as f64,
                })?;
                let conn = data.get("inventoryItems").unwrap_or(&Value::Null);
                for node in conn.get("nodes").and_then(Value::as_array).into_iter().flatten() {
                    if let (Some(id), Some(sku)) = (gql::str_at(node, &["id"]), gql::str_at(node, &["sku"]))
                        && wanted.contains(sku)
                    {
                        self.learn_item(sku, id);
                    }
                }
                match gql::next_page(conn) {
                    Some(c) if Some(&c) != after.as_ref() => after = Some(c),
                    _ => break,
                }
            }
            for s in chunk {
                if !self.items.contains_key(*s) {
                    self.missing.insert((*s).to_owned());
                }
            }
        }
        Ok(())
    }

    /// Loads every inventory item's SKU with one bulk query (large catalogues:
    /// a few points instead of one per SKU).
    pub fn index_all(&mut self, client: &mut Client) -> Result<(), ProviderError> {
        if self.complete {
            return Ok(());
        }
        if let Some(url) = bulk::run(client, gql::BULK_ITEMS)? {
            let mut seen = Vec::new();
            bulk::for_each_line(client, &url, |_, v| {
                if let (Some(id), Some(sku)) = (gql::str_at(&v, &["id"]), gql::str_at(&v, &["sku"])) {
                    seen.push((sku.to_owned(), id.to_owned()));
                }
            })?;
            for (sku, id) in seen {
                self.learn_item(&sku, &id);
            }
        }
        self.complete = true;
        Ok(())
    }

    /// How many distinct SKUs of `skus` still need a lookup.
    pub fn unknown_count<'a>(&self, skus: impl Iterator<Item = &'a str>) -> usize {
        skus.filter(|s| self.unknown(s)).collect::<HashSet<_>>().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_items_with_one_sku_are_ambiguous() {
        let mut c = Catalog::default();
        c.learn_item("A", "gid://shopify/InventoryItem/1");
        c.learn_item("A", "gid://shopify/InventoryItem/1");
        assert_eq!(c.item("A"), Ok("gid://shopify/InventoryItem/1"));
        c.learn_item("A", "gid://shopify/InventoryItem/2");
        assert!(c.item("A").unwrap_err().contains("several"));
        assert!(c.item("B").unwrap_err().contains("no inventory item with the SKU `B`"));
        c.learn_item("", "gid://shopify/InventoryItem/3");
        assert!(c.item("").is_err());
    }
}
