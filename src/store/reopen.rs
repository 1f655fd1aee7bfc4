//! Reopening the database after a storage failure (see `writer::fault`): redb refuses every
//! call after an I/O error until the file is closed and opened again. Readers wait for a reopen
//! under way; after a failed one they are told why.

use super::{Store, open_database};
use crate::error::{Error, Result};
use redb::Database;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A failed reopen: whether it was a storage failure (`Some(full)`) and what it said.
pub(super) struct Closed {
    storage: Option<bool>,
    error: String,
}

impl Store {
    /// The open database, for one transaction: the handle must not be kept, or a reopen would
    /// wait for it. While a reopen is under way this waits for it (at most [`REOPEN_WAIT`]);
    /// after a failed one it fails at once with why: `StorageFailed` when the file could not be
    /// opened for lack of room (a 507, as the writes are), else `Unavailable`.
    pub fn db(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.read().clone() {
            return Ok(db);
        }
        let deadline = Instant::now() + REOPEN_WAIT;
        loop {
            if let Some(db) = self.db.read().clone() {
                return Ok(db);
            }
            let reopening = self.reopening.load(Ordering::Acquire);
            if !reopening && let Some(closed) = &*self.closed.lock() {
                let message = format!(
                    "the database could not be reopened after a storage failure ({}); \
                     perfd tries again by itself; retry later",
                    closed.error
                );
                return Err(match closed.storage {
                    Some(full) => Error::StorageFailed {
                        full,
                        message,
                        retry_after_secs: crate::writer::fault::FIRST_BACKOFF.as_secs() as u32,
                    },
                    None => Error::Unavailable(message),
                });
            }
            if !reopening || Instant::now() > deadline {
                return Err(Error::Unavailable(
                    "the database is being reopened after an I/O error; retry shortly".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Closes the database and opens it again; `rebuild` refreshes what is kept in memory from
    /// the reopened file before readers get it. After an I/O error (a full disk) redb fails every
    /// later call, reads included, until the file is reopened; the writer calls this (see
    /// `writer::fault`). Readers wait for it meanwhile (see [`Store::db`]). Waits, bounded, for
    /// handles readers still hold: closing invalidates their transactions, but the file lock
    /// goes only with the last handle. On error the database stays closed; call again.
    pub fn reopen(&self, rebuild: impl FnOnce(&Database) -> Result<()>) -> Result<()> {
        self.reopening.store(true, Ordering::Release);
        let reopened = self.reopen_now(rebuild);
        *self.closed.lock() = reopened
            .as_ref()
            .err()
            .map(|e| Closed { storage: crate::writer::fault::storage_failure(e), error: e.to_string() });
        self.reopening.store(false, Ordering::Release);
        reopened
    }

    fn reopen_now(&self, rebuild: impl FnOnce(&Database) -> Result<()>) -> Result<()> {
        drop(self.db.write().take());
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            // Never create: a file that vanished must not come back empty as if it were ours.
            match open_database(&self.path, false) {
                Ok(db) => break db,
                Err(Error::Conflict(_)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(e),
            }
        };
        rebuild(&db)?;
        self.reopens.fetch_add(1, Ordering::AcqRel);
        *self.db.write() = Some(Arc::new(db));
        Ok(())
    }
}

/// How long a reader waits for a reopen under way (one took 295 ms with 7.5 M open points).
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// Whether `e` comes from a reopen (the database closed under the read, or a handle that failed
/// before it), so the read may be tried again.
pub(super) fn met_a_reopen(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_) | Error::Store(redb::Error::DatabaseClosed | redb::Error::PreviousIo))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a reopen that failed (a full disk that the reopen itself needed room on) left
    /// every caller told "the database is being reopened", with no reopen under way, and a
    /// backup that found no room a 503 instead of the 507 a write gets.
    #[test]
    fn a_failed_reopen_is_answered_with_its_cause_until_one_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let full = || Error::Io(std::io::ErrorKind::StorageFull.into());
        assert!(store.reopen(|_| Err(full())).is_err());
        let err = store.db().expect_err("closed after a failed reopen");
        assert!(matches!(&err, Error::StorageFailed { full: true, .. }), "{err:?}");
        assert!(err.to_string().contains("could not be reopened"), "{err}");

        assert!(store.reopen(|_| Err(Error::Corrupt("bad page".into()))).is_err());
        let err = store.db().expect_err("still closed");
        assert!(matches!(&err, Error::Unavailable(m) if m.contains("bad page")), "{err:?}");

        store.reopen(|_| Ok(())).unwrap();
        assert!(store.db().is_ok());
    }
}
