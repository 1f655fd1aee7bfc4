//! Storage faults: what perfd does when the data directory cannot be written.
//!
//! A failed write (a full disk, a quota, a file size limit, an I/O error) makes redb refuse every
//! later call, reads included, until the database is closed and opened again. On the first such
//! error the writer:
//! 1. answers the requests of the failed commit with `StorageFailed` (507 `storage_full`, or 503
//!    `storage_unavailable`, with `Retry-After`): none of them was acknowledged, so nothing
//!    accepted is lost;
//! 2. marks the store faulted, so [`WriterHandle::submit`](super::WriterHandle::submit) refuses
//!    new writes at once instead of queueing them; other writer work (thresholds, profiles,
//!    seals, maintenance) waits too;
//! 3. reopens the database at once, so reads work again (a full disk can still be read; readers
//!    wait for a reopen under way, see `Store::db`). A reopen that fails (it may need room too)
//!    is tried again with the next retry; until then reads are refused with its cause;
//! 4. retries an empty durable commit 1 s later, then 2, 4 and 8 s, then every 10 s, reopening
//!    after each failure; when the disk was full, only once its file system has 1 MiB free again
//!    (an empty commit needs no room, so it would pass on a full disk). When one succeeds, writes
//!    are taken again; the backoff starts over only after a real write succeeds. A quota or a file
//!    size limit is not visible in free space: there each try may cost one refused batch.
//!
//! The fault is logged when it starts and when it ends, and shown in the health score (component
//! `storage`), `/api/v1/metrics/database` (`writer.storage_fault`) and `/metrics`.

use crate::error::{Error, Result};
use parking_lot::Mutex;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// First wait before retrying a faulted store; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Whether the store can be written; set and cleared by the writer, checked by everyone who
/// queues work for it.
#[derive(Default)]
pub struct StorageFault {
    /// Mirrors `info.is_some()`, so the ingest path checks one atomic.
    failing: AtomicBool,
    info: Mutex<Option<FaultInfo>>,
    /// Faults that ended (the store took writes again).
    pub recoveries: AtomicU64,
}

/// The current fault, as `/api/v1/metrics/database` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultInfo {
    /// Unix ms of the first failure.
    pub since_ms: i64,
    /// Out of space (disk, quota or file size limit) rather than another I/O error.
    pub full: bool,
    pub error: String,
}

impl StorageFault {
    /// `Err(StorageFailed)` while the store is faulted.
    pub fn check(&self) -> Result<()> {
        if !self.failing.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.info.lock() {
            Some(info) => Err(refusal(info)),
            None => Ok(()),
        }
    }

    pub fn info(&self) -> Option<FaultInfo> {
        self.info.lock().clone()
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Records `e` if it is a storage failure and returns what to tell the caller instead
    /// (`StorageFailed`); any other error is returned as it is. The first failure of a fault is
    /// kept (a full disk stays "full" through the `PreviousIo` errors that follow it).
    pub fn note(&self, e: Error, now_ms: i64) -> Error {
        let Some(full) = storage_failure(&e) else { return e };
        let mut info = self.info.lock();
        let info = info.get_or_insert_with(|| {
            log::error!(
                "storage failed: {e}; writes are refused until a commit succeeds again \
                 (retried by itself, at most {} s apart)",
                MAX_BACKOFF.as_secs()
            );
            FaultInfo { since_ms: now_ms, full, error: e.to_string() }
        });
        self.failing.store(true, Ordering::Release);
        refusal(info)
    }

    /// The store took a commit again.
    pub fn clear(&self, now_ms: i64) {
        if let Some(info) = self.info.lock().take() {
            self.failing.store(false, Ordering::Release);
            self.recoveries.fetch_add(1, Ordering::Relaxed);
            log::warn!("storage writable again after {} ms; writes are taken again", now_ms - info.since_ms);
        }
    }
}

fn refusal(info: &FaultInfo) -> Error {
    let what =
        if info.full { "the data directory is out of space" } else { "the data directory cannot be written" };
    Error::StorageFailed {
        full: info.full,
        message: format!("{what} ({}); nothing was stored; retry later", info.error),
        retry_after_secs: FIRST_BACKOFF.as_secs() as u32,
    }
}

/// `Some(full)` when `e` is a failure of the storage itself (not of the request), where `full`
/// says it is a lack of space.
pub fn storage_failure(e: &Error) -> Option<bool> {
    let io = match e {
        Error::Store(redb::Error::Io(io)) | Error::Io(io) => io,
        Error::Store(redb::Error::PreviousIo | redb::Error::DatabaseClosed) => return Some(false),
        Error::StorageFailed { full, .. } => return Some(*full),
        _ => return None,
    };
    Some(matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_keeps_its_first_cause_and_ends_once() {
        let f = StorageFault::default();
        assert!(f.check().is_ok());
        let not_storage = f.note(Error::invalid("bad name"), 1);
        assert!(matches!(not_storage, Error::InvalidInput(_)));
        assert!(!f.is_failing());

        let full = std::io::Error::from(ErrorKind::StorageFull);
        let told = f.note(Error::Store(redb::Error::Io(full)), 5);
        assert!(matches!(told, Error::StorageFailed { full: true, .. }), "{told:?}");
        // What follows a full disk is PreviousIo; the fault stays "full" and keeps its start.
        f.note(Error::Store(redb::Error::PreviousIo), 9);
        let info = f.info().unwrap();
        assert!(info.full && info.since_ms == 5, "{info:?}");
        assert!(matches!(f.check(), Err(Error::StorageFailed { full: true, .. })));

        f.clear(20);
        f.clear(21);
        assert!(f.check().is_ok() && f.info().is_none());
        assert_eq!(f.recoveries.load(Ordering::Relaxed), 1);

        let other = f.note(Error::Store(redb::Error::PreviousIo), 30);
        assert!(matches!(other, Error::StorageFailed { full: false, .. }));
    }
}
