//! One cached value ([`Entry`]) and the rules every value, key, content type and TTL meets
//! before it is stored, whichever path stores it (PUT, warm, the warm restart, L2 promotion).

use crate::error::{Error, Result};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Longest key accepted, in bytes (Redis allows more; agent backends hash longer inputs).
pub const MAX_KEY_LEN: usize = 512;

/// One cached value with its content type and absolute expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Bytes,
    pub content_type: Option<Arc<str>>,
    /// Unix ms; absolute so entries survive a restart with their remaining TTL.
    pub expires_at_ms: i64,
}

impl Entry {
    pub fn ttl_ms(&self, now_ms: i64) -> i64 {
        (self.expires_at_ms - now_ms).max(0)
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    L1,
    L2,
}

/// Levels `POST /api/v1/metrics/cache/clear` can empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClearLevel {
    L1,
    L2,
    All,
}

pub(super) fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.chars().any(char::is_control)
}

/// Printable ASCII and tabs: what actix-http's `HeaderValue::to_str` takes, and what a header
/// value sent back can hold unchanged.
pub fn is_header_text(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Longest content type kept with an entry (Redis stores its length in one byte).
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// A content type is sent back as a header on every hit: printable ASCII (and tabs), up to
/// [`MAX_CONTENT_TYPE_LEN`] bytes. Anything else was dropped or cut (the L2 copy lost what
/// passed 255 bytes) or answered differently by the hit path and the App.
pub fn check_content_type(ct: &str) -> Result<()> {
    if ct.len() > MAX_CONTENT_TYPE_LEN || !is_header_text(ct.as_bytes()) {
        return Err(Error::invalid(format!(
            "content type must be printable ASCII of at most {MAX_CONTENT_TYPE_LEN} bytes"
        )));
    }
    Ok(())
}

/// Longest TTL an entry may have: a year.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// A TTL must be at least a millisecond (the finest Redis takes, `PX 1`; a shorter one would
/// expire before it is stored) and at most [`MAX_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        let shown = humantime::format_duration(ttl);
        return Err(Error::invalid(format!("ttl {shown} is out of range: give 1 ms to 365 days")));
    }
    Ok(())
}
