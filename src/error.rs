//! `perfd::Error`: the kinds of failure a caller reacts to.
//!
//! Domain code returns these; only `api/error.rs` maps them to HTTP statuses, and only `main.rs`
//! wraps them in `anyhow`.

/// Every failure perfd reports, grouped by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed; fix the request.
    #[error("{0}")]
    InvalidInput(String),
    /// The request body (or one entry of it) is larger than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// Accepting the request would create more series than `max_series` allows.
    #[error("{0}")]
    SeriesLimit(String),
    /// A read would return more points than `query.max_points`; narrow it or use `step`.
    #[error("{0}")]
    TooManyPoints(String),
    #[error("{0}")]
    NotFound(String),
    /// A guarded endpoint without the right bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// A `Host` or `Origin` that a web page, not a client of perfd, would send (`api::hosts`).
    #[error("{0}")]
    Forbidden(String),
    /// A cache strategy that is neither built in nor configured; the message lists the known ones.
    #[error("{0}")]
    UnknownStrategy(String),
    #[error("{0}")]
    Conflict(String),
    /// A service perfd depends on (Redis) did not answer; what was asked is done when it is back.
    #[error("{0}")]
    Unavailable(String),
    /// The path exists but not for this method; `allow` lists the methods it has.
    #[error("{method} is not allowed on this path; use {allow}")]
    MethodNotAllowed { method: String, allow: String },
    /// The writer queue is full; retry after the given number of seconds.
    #[error("write queue is full; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u32 },
    /// The data directory cannot be written (`full`: out of space); nothing was stored. perfd
    /// retries by itself (`writer::fault`); the caller retries after `retry_after_secs`.
    #[error("{message}")]
    StorageFailed { full: bool, message: String, retry_after_secs: u32 },
    /// A bounded queue (the execution queue) is full; retry later (429).
    #[error("{0}")]
    QueueFull(String),
    /// The daemon is stopping and takes no new work.
    #[error("perfd is shutting down")]
    ShuttingDown,
    #[error("storage: {0}")]
    Store(#[from] redb::Error),
    /// Stored bytes do not decode: a bug or a damaged file, never the caller's fault.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("config: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }
}

/// Caller input quoted in an error message, cut to its first 64 bytes (`…` marks the cut), so a
/// 60 KiB bad name is not echoed back whole.
pub struct Shown<'a>(pub &'a str);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MAX: usize = 64;
        if self.0.len() <= MAX {
            return write!(f, "{:?}", self.0);
        }
        let cut = (0..=MAX).rev().find(|&i| self.0.is_char_boundary(i)).unwrap_or(0);
        write!(f, "{:?}…", &self.0[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::Shown;

    #[test]
    fn shown_cuts_long_input_at_a_char_boundary() {
        assert_eq!(Shown("cpu").to_string(), "\"cpu\"");
        let long = "é".repeat(100);
        let s = Shown(&long).to_string();
        assert!(s.ends_with("\"…") && s.len() < 80, "{s}");
    }
}

/// redb splits its errors by operation; they all fold into its umbrella `redb::Error`.
macro_rules! from_redb {
    ($($ty:ident),*) => {$(
        impl From<redb::$ty> for Error {
            fn from(e: redb::$ty) -> Self {
                Error::Store(e.into())
            }
        }
    )*};
}
from_redb!(DatabaseError, TransactionError, TableError, StorageError, CommitError, SetDurabilityError);
