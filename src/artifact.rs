//! The plan document: what `plan --format json` prints and `plan --out` saves.
//!
//! One type serves both so the saved artifact and the JSON output cannot drift
//! apart (SPEC section 6). Besides the changes it records the SHA-256 of the plan
//! file and of every input read, and the state serial it was made against, which
//! is what lets `apply` refuse a stale plan.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diff::Diff;

/// The current `format_version`. Readers accept equal versions and refuse others.
pub const FORMAT_VERSION: u32 = 1;

/// Identity of the plan file a document was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanMeta {
    pub name: String,
    /// SHA-256 of the plan file's bytes.
    pub config_sha256: String,
    /// The plan file's path as given to `plan`.
    #[serde(default)]
    pub path: String,
}

/// One file read while planning, with its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDigest {
    /// `source`, `target`, `sku_map`, ...
    pub role: String,
    pub path: String,
    pub sha256: String,
}

/// The state a plan was made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRef {
    pub lineage: String,
    pub serial: u64,
}

/// A computed plan, ready to render or save.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanArtifact {
    pub format_version: u32,
    pub plan: PlanMeta,
    #[serde(flatten)]
    pub diff: Diff,
    /// Files read while planning; `apply` re-hashes them to detect staleness.
    #[serde(default)]
    pub inputs: Vec<InputDigest>,
    /// The state serial the plan was made against (absent before the first apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRef>,
    /// For a rollback plan: the operation it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<String>,
    /// SHA-256 of the file this document was read from (saves re-serializing to hash it).
    #[serde(skip)]
    pub file_sha256: Option<String>,
    /// The file this document was read from (so a killed apply can be accounted for from it).
    #[serde(skip)]
    pub file_path: Option<std::path::PathBuf>,
}

/// SHA-256 of a file's bytes in hex, `None` when it cannot be read. Plans record
/// it for every input, and apply compares it to detect a stale plan.
pub fn sha256_file(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

/// Why a saved plan could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} is not a stockshift plan file: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path} has format_version {found}; this stockshift reads version {FORMAT_VERSION}")]
    Version { path: String, found: u32 },
}

impl PlanArtifact {
    /// The JSON text (pretty, with a final newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plan documents always serialize");
        s.push('\n');
        s
    }

    /// SHA-256 of the document's JSON text: the identity of "this exact plan".
    pub fn sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        match &self.file_sha256 {
            Some(s) => s.clone(),
            None => hex::encode(Sha256::digest(self.to_json().as_bytes())),
        }
    }

    /// Reads a saved plan.
    pub fn read(path: &Path) -> Result<PlanArtifact, ReadError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ReadError::Io { path: shown.clone(), source })?;
        match serde_json::from_slice::<PlanArtifact>(&bytes) {
            Ok(mut doc) if doc.format_version == FORMAT_VERSION => {
                use sha2::{Digest, Sha256};
                doc.file_sha256 = Some(hex::encode(Sha256::digest(&bytes)));
                doc.file_path = Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()));
                Ok(doc)
            }
            Ok(doc) => Err(ReadError::Version { path: shown, found: doc.format_version }),
            Err(source) => {
                // Say "wrong version" rather than "bad field" when that is the cause.
                #[derive(Deserialize)]
                struct Probe {
                    format_version: u32,
                }
                match serde_json::from_slice::<Probe>(&bytes) {
                    Ok(p) if p.format_version != FORMAT_VERSION => {
                        Err(ReadError::Version { path: shown, found: p.format_version })
                    }
                    _ => Err(ReadError::Parse { path: shown, source }),
                }
            }
        }
    }
}
