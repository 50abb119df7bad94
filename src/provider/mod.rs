//! Providers: the systems stock is read from and written to.
//!
//! Every provider reads a whole snapshot in one streaming pass ([`Provider::read`]),
//! and writable ones make batched conditional writes: "set qty to B where it is
//! still A" ([`Provider::write_batch`]). Platform limits (batch size, request
//! rate, whether compare-and-set is native or emulated by read-compare-write)
//! are declared in [`Capabilities`] so the apply loop can respect them without
//! knowing the platform.

pub mod csv;
pub mod http;
pub mod magento;
pub mod net;
pub mod postgres;
pub mod shopify;
pub mod sqlite;

use std::path::Path;

use crate::config::model::ProviderConfig;

/// Receives rows as a provider reads them.
pub trait RowSink {
    /// One row. `line` is the file line (or database row id) for error messages and traces.
    fn row(&mut self, sku: &str, location: &str, qty: i64, line: u64);
    /// A row the provider could not read (bad quantity, bad encoding, ...).
    fn problem(&mut self, line: u64, col: usize, summary: String, help: String);
}

/// One part of a split read (see [`Provider::read_parts`]): streams its rows into the sink.
pub type ReadPart = Box<dyn FnOnce(&mut dyn RowSink) -> Result<ReadInfo, ProviderError> + Send>;

/// What a read returned besides the rows.
#[derive(Debug, Clone, Default)]
pub struct ReadInfo {
    pub rows: u64,
    /// SHA-256 of the bytes read, for file-backed providers.
    pub sha256: Option<String>,
}

/// How a provider guarantees "set to B where still A".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMode {
    /// The system checks the expected value itself, atomically.
    Native,
    /// stockshift reads, compares, writes and reads back, per key.
    Emulated,
    /// The provider cannot be written.
    ReadOnly,
}

/// Limits a provider declares; the apply loop honours them.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    pub compare: CompareMode,
    /// Most writes one `write_batch` call may carry.
    pub max_batch: usize,
    /// Requests per second the platform allows, when it has a fixed rate.
    pub max_requests_per_sec: Option<f64>,
}

/// One conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub sku: String,
    pub location: String,
    /// The value the key must still hold (`None`: the key must be absent).
    pub expected: Option<i64>,
    pub new: i64,
}

/// What happened to one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The key held `expected` and now holds `new`.
    Applied,
    /// The key already held `new`; nothing was written.
    AlreadyApplied,
    /// The key held something else; nothing was written.
    Conflict { found: Option<i64> },
    /// The write failed; `retriable` says whether trying again may help.
    Failed { retriable: bool, message: String },
}

/// Errors of a provider as a whole (unreachable, unreadable, misconfigured).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{what}: {message}")]
    Unavailable { what: String, message: String },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

/// A source or target system.
pub trait Provider {
    /// `csv data/x.csv`, `sqlite data/t.db (table inventory)`.
    fn describe(&self) -> String;
    fn capabilities(&self) -> Capabilities;
    /// Streams every row into `sink`.
    fn read(&mut self, sink: &mut dyn RowSink) -> Result<ReadInfo, ProviderError>;
    /// Makes conditional writes; returns one outcome per write, in order.
    fn write_batch(&mut self, writes: &[Write]) -> Result<Vec<WriteOutcome>, ProviderError>;

    /// Names the operation (apply, replay, rollback, fix ...) the next writes belong to.
    /// Platforms with idempotency keys derive them from it, so a retried request
    /// carries the same key. The default ignores it.
    fn bind_operation(&mut self, op_id: &str) {
        let _ = op_id;
    }

    /// Splits the snapshot read into up to `parts` readers that may run on separate
    /// threads. Taken one after the other they stream exactly the rows [`Self::read`]
    /// would, in the same order, from one consistent snapshot. `None` (the default):
    /// the provider cannot split its read; call `read`.
    fn read_parts(&mut self, parts: usize) -> Result<Option<Vec<ReadPart>>, ProviderError> {
        let _ = parts;
        Ok(None)
    }

    /// Current quantities of some keys (`None`: absent). The default reads the
    /// whole snapshot; providers with point reads override it.
    fn read_keys(&mut self, keys: &[(String, String)]) -> Result<Vec<Option<i64>>, ProviderError> {
        read_keys_by_scan(keys, |sink| self.read(sink))
    }
}

/// Current quantities of `keys` (`None`: absent) picked out of one whole read
/// (`read` streams every row into the sink it is given).
pub fn read_keys_by_scan(
    keys: &[(String, String)],
    read: impl FnOnce(&mut dyn RowSink) -> Result<ReadInfo, ProviderError>,
) -> Result<Vec<Option<i64>>, ProviderError> {
    struct Pick<'a> {
        want: std::collections::HashMap<(&'a str, &'a str), usize>,
        out: Vec<Option<i64>>,
    }
    impl RowSink for Pick<'_> {
        fn row(&mut self, sku: &str, location: &str, qty: i64, _line: u64) {
            if let Some(&i) = self.want.get(&(sku, location)) {
                self.out[i] = Some(qty);
            }
        }
        fn problem(&mut self, _: u64, _: usize, _: String, _: String) {}
    }
    let mut pick = Pick {
        want: keys.iter().enumerate().map(|(i, (s, l))| ((s.as_str(), l.as_str()), i)).collect(),
        out: vec![None; keys.len()],
    };
    read(&mut pick)?;
    Ok(pick.out)
}

/// Opens the provider a plan names. Paths resolve against `base` (the plan's folder).
/// Fails when a credential it needs is not in the environment or its settings are unusable.
pub fn open(cfg: &ProviderConfig, base: &Path) -> Result<Box<dyn Provider>, ProviderError> {
    Ok(match cfg {
        ProviderConfig::Csv(c) => Box::new(csv::CsvProvider::new(base.join(&c.path), c.columns.clone())),
        ProviderConfig::Sqlite(c) => {
            let p = sqlite::SqliteProvider::new(base.join(&c.path), c.table.clone(), c.columns.clone());
            Box::new(p.with_batch_size(c.batch_size))
        }
        ProviderConfig::Postgres(c) => Box::new(postgres::PostgresProvider::from_config(c)?),
        ProviderConfig::Shopify(c) => Box::new(shopify::ShopifyProvider::from_config(c)?),
        ProviderConfig::Magento(c) => Box::new(magento::MagentoProvider::from_config(c)?),
        ProviderConfig::Http(c) => Box::new(http::HttpProvider::from_config(c, base)?),
    })
}

/// Parses a quantity the way every provider does: an integer, optional sign, no
/// decimals, surrounding spaces ignored.
pub fn parse_qty(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = match t.strip_prefix('+') {
        Some(rest) if rest.starts_with(['+', '-']) => return None,
        Some(rest) => rest,
        None => t,
    };
    if digits.is_empty() {
        return None;
    }
    digits.parse::<i64>().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_qty;

    #[test]
    fn quantities() {
        assert_eq!(parse_qty("12"), Some(12));
        assert_eq!(parse_qty(" -3 "), Some(-3));
        assert_eq!(parse_qty("+4"), Some(4));
        for bad in ["", " ", "1.5", "12.0", "abc", "1e3", "--1", "+-1", "99999999999999999999"] {
            assert_eq!(parse_qty(bad), None, "{bad:?}");
        }
    }
}
