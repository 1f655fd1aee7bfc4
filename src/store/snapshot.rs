//! The L1 cache saved at shutdown for a warm restart, and read back at start.

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};
use redb::{ReadableDatabase, ReadableTable};

/// An L1 entry as saved for a warm restart.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedEntry {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    content_type: Option<String>,
    expires_at_ms: i64,
}

pub fn encode_cache_entry(e: &crate::cache::Entry) -> Result<Vec<u8>> {
    let saved = SavedEntry {
        value: e.value.to_vec(),
        content_type: e.content_type.as_deref().map(str::to_owned),
        expires_at_ms: e.expires_at_ms,
    };
    rmp_serde::to_vec_named(&saved).map_err(|e| Error::Internal(format!("encoding a cache entry: {e}")))
}

impl Store {
    /// The L1 snapshot saved at the last shutdown (entries may have expired since).
    pub fn cache_snapshot(&self) -> Result<Vec<(String, crate::cache::Entry)>> {
        let txn = self.db()?.begin_read()?;
        let mut out = Vec::new();
        for row in txn.open_table(CACHE_SNAPSHOT)?.iter()? {
            let (k, v) = row?;
            let saved: SavedEntry = rmp_serde::from_slice(v.value())
                .map_err(|e| Error::Corrupt(format!("cache snapshot entry {:?}: {e}", k.value())))?;
            let entry = crate::cache::Entry {
                value: saved.value.into(),
                content_type: saved.content_type.map(Into::into),
                expires_at_ms: saved.expires_at_ms,
            };
            out.push((k.value().to_owned(), entry));
        }
        Ok(out)
    }
}
