//! The writer's memory rebuilt from the database: at start, and after the reopen that follows a
//! storage failure (`fault.rs`). A reopen is a restart of the storage without a restart of the
//! process: seal commits are not durable, so the reopened file may hold WAL entries that memory
//! had already sealed away. Memory is therefore replaced with what the file holds, and readers
//! get the new file and the new memory together.

use super::fault::{MAX_BACKOFF, storage_failure};
use super::*;
use crate::store::{Catalog, OpenHours, read_catalog};
use std::collections::BTreeMap;

/// Free bytes a full disk must have again before writes are tried: about 60 commits of 2,000
/// points of WAL.
const MIN_FREE_TO_RETRY: u64 = 1 << 20;

/// What memory holds about the database besides the catalog.
pub(super) struct Loaded {
    open: OpenHours,
    first_seq: HashMap<(u64, i64), u64>,
    wal_points: BTreeMap<u64, usize>,
    open_points: usize,
    next_seq: u64,
    next_series_id: u64,
}

impl Loaded {
    pub(super) fn open_points(&self) -> usize {
        self.open_points
    }

    /// Replays the WAL into open hours.
    pub(super) fn read(txn: &redb::ReadTransaction) -> Result<Loaded> {
        let mut l = Loaded {
            open: OpenHours::default(),
            first_seq: HashMap::new(),
            wal_points: BTreeMap::new(),
            open_points: 0,
            next_seq: 1,
            next_series_id: 1,
        };
        if let Some(v) = txn.open_table(META)?.get("next_series_id")? {
            let bytes: [u8; 8] = v
                .value()
                .try_into()
                .map_err(|_| Error::Corrupt("meta.next_series_id is not 8 bytes".into()))?;
            l.next_series_id = u64::from_le_bytes(bytes);
        }
        // A deleted series' points may still be in an entry other series pin: left out.
        let series = txn.open_table(SERIES_BY_ID)?;
        for row in txn.open_table(WAL)?.iter()? {
            let (seq, bytes) = row?;
            let batch = crate::store::wal::decode_wal(bytes.value())?;
            let mut entries = Vec::with_capacity(batch.len());
            for (id, p) in &batch {
                if series.get(id)?.is_some() {
                    entries.push((*id, p.as_slice()));
                }
            }
            let n = add_to_hours(&mut l.open, &mut l.first_seq, seq.value(), &entries);
            l.open_points += n;
            l.wal_points.insert(seq.value(), n);
            l.next_seq = seq.value() + 1;
        }
        Ok(l)
    }
}

/// Appends committed points to open hours; returns how many.
pub(super) fn add_to_hours(
    open: &mut OpenHours,
    first_seq: &mut HashMap<(u64, i64), u64>,
    seq: u64,
    entries: &[(u64, &[Point])],
) -> usize {
    let mut n = 0;
    for &(id, points) in entries {
        let hours = open.entry(id).or_default();
        let mut i = 0;
        while i < points.len() {
            // Points of one series in one request are nearly always in one hour: append runs.
            let hour = hour_start(points[i].0);
            let run = points[i..].iter().take_while(|p| hour_start(p.0) == hour).count();
            hours.entry(hour).or_default().extend_from_slice(&points[i..i + run]);
            first_seq.entry((id, hour)).or_insert(seq);
            i += run;
        }
        n += points.len();
    }
    n
}

impl Writer {
    /// Makes `l` the writer's and the readers' view.
    pub(super) fn adopt(&mut self, l: Loaded, catalog: Option<Catalog>) {
        *self.store.open.write() = l.open;
        if let Some(c) = catalog {
            *self.store.catalog.write() = c;
        }
        self.first_seq = l.first_seq;
        self.wal_points = l.wal_points;
        self.open_points = l.open_points;
        self.next_seq = l.next_seq;
        self.next_series_id = l.next_series_id;
    }

    /// Notes `e` and returns what to tell the caller. A storage failure also reopens the
    /// database now, so reads work again, and schedules the next write attempt.
    pub(super) fn failed(&mut self, e: Error) -> Error {
        if matches!(e, Error::StorageFailed { .. }) {
            // A refusal of the current fault, not a new failure: nothing to reopen or delay.
            return e;
        }
        let told = self.fault.note(e, now_ms());
        if storage_failure(&told).is_some() {
            self.retry_later();
            self.reopen();
        }
        told
    }

    /// The next write attempt, after the current backoff (which then grows).
    fn retry_later(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn reopen(&mut self) {
        let started = Instant::now();
        let store = self.store.clone();
        let reopened = store.reopen(|db| {
            let txn = db.begin_read()?;
            let catalog = read_catalog(&txn)?;
            let loaded = Loaded::read(&txn)?;
            self.adopt(loaded, Some(catalog));
            Ok(())
        });
        match reopened {
            Ok(()) => log::info!(
                "database reopened after a storage failure in {} ms ({} open points replayed)",
                started.elapsed().as_millis(),
                self.open_points
            ),
            Err(e) => log::error!("reopening the database failed (retried with the next write attempt): {e}"),
        }
    }

    /// While the store is faulted: when the retry is due, tries an empty durable commit, and
    /// takes writes again if it succeeds.
    pub(super) fn retry_if_due(&mut self) {
        let Some(at) = self.retry_at else { return };
        if Instant::now() < at {
            return;
        }
        if self.fault.info().is_some_and(|f| f.full) && !self.has_room() {
            // Still full: a probe would pass (an empty commit needs no room) and the next batch
            // fail again. Wait for free space instead.
            return self.retry_later();
        }
        if self.store.db().is_err() {
            // The last reopen failed (e.g. the file is gone); try it again first.
            self.reopen();
        }
        match self.persist() {
            Ok(()) => {
                self.retry_at = None;
                self.fault.clear(now_ms());
            }
            Err(e) => {
                self.failed(e);
                // Whatever the error (a failed reopen is `Unavailable`), never retry at once.
                if self.retry_at.is_some_and(|at| at <= Instant::now()) {
                    self.retry_later();
                }
            }
        }
    }

    /// Whether the data directory's file system has [`MIN_FREE_TO_RETRY`] free (or cannot
    /// tell: a quota or a file size limit is not seen here).
    fn has_room(&self) -> bool {
        let dir = self.store.path.parent().unwrap_or(std::path::Path::new("."));
        rustix::fs::statvfs(dir)
            .map_or(true, |st| st.f_bavail.saturating_mul(st.f_frsize) >= MIN_FREE_TO_RETRY)
    }

    /// How long the loop may sleep before the retry is due.
    pub(super) fn until_retry(&self) -> Option<Duration> {
        self.retry_at.map(|at| at.saturating_duration_since(Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::BatchBuilder;
    use crate::model::{HOUR_MS, TimeBounds};
    use crate::query::{Selector, read_raw};
    use crate::writer::StorageFault;

    /// A reopen replaces the file handle and rebuilds memory from the file: points sealed,
    /// points still in the WAL and points written after it all stay readable, once each. (Here
    /// the old handle closes cleanly, which keeps the non-durable seal; a seal lost to a failed
    /// close is covered through the binary by `a_full_disk_refuses_writes_…`.)
    #[test]
    fn a_reopen_keeps_every_point_readable_and_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::for_test(dir.path());
        let store = Arc::new(crate::store::Store::open(dir.path()).unwrap());
        let (s, q, f) = (Arc::default(), Arc::default(), Arc::default());
        let mut w = Writer::new(store.clone(), cfg.writer, cfg.storage, s, q, f).unwrap();
        let now = now_ms();
        let write = |w: &mut Writer, from: i64, n: i64| {
            let mut b = BatchBuilder::new(TimeBounds::new(now, 3 * HOUR_MS));
            for i in 0..n {
                b.push("r", &[], (from + i, i as f64)).unwrap();
            }
            w.step(vec![WriterMsg::Write { batch: b.finish(), reply: None }]);
        };
        let old = now - 2 * HOUR_MS;
        write(&mut w, old, 1000);
        let keys = w.first_seq.keys().copied().collect();
        w.seal(keys).unwrap();
        write(&mut w, now - 1000, 500);
        let count = |store: &crate::store::Store| {
            let sel = Selector::parse("r").unwrap();
            read_raw(store, &sel, old, now, 1_000_000).unwrap()[0].points.len()
        };
        assert_eq!(count(&store), 1500);

        w.reopen();
        assert_eq!(count(&store), 1500);
        write(&mut w, now - 2000, 500);
        assert_eq!(count(&store), 2000);
        assert_eq!(w.stats.failed_commits.load(Relaxed), 0);
    }

    /// The retry state machine, without waiting on the clock: a reopen that fails (the file is
    /// gone) leaves reads refused and is tried again only on the backoff, never at once; once
    /// the file is back, the next retry reopens it, commits and ends the fault.
    #[test]
    fn a_failed_reopen_is_retried_on_the_backoff_and_the_fault_ends_when_it_works() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::for_test(dir.path());
        let store = Arc::new(crate::store::Store::open(dir.path()).unwrap());
        let fault: Arc<StorageFault> = Arc::default();
        let (s, q) = (Arc::default(), Arc::default());
        let mut w = Writer::new(store.clone(), cfg.writer, cfg.storage, s, q, fault.clone()).unwrap();
        let (file, away) = (dir.path().join("perfd.redb"), dir.path().join("away.redb"));
        std::fs::rename(&file, &away).unwrap();

        let told = w.failed(Error::Store(redb::Error::PreviousIo));
        assert!(matches!(told, Error::StorageFailed { full: false, .. }), "{told:?}");
        assert!(fault.is_failing() && store.db().is_err(), "the reopen failed: reads are refused");
        let first = w.until_retry().unwrap();
        assert!(first > Duration::ZERO && first <= super::super::fault::FIRST_BACKOFF);
        // A refusal is not a new failure: it moves nothing.
        let again = w.failed(fault.check().unwrap_err());
        assert!(matches!(again, Error::StorageFailed { .. }));
        assert!(w.until_retry().unwrap() <= first);

        // Due while the file is still gone: tried, failed, and put off again, not retried at once.
        w.retry_at = Some(Instant::now());
        w.retry_if_due();
        assert!(fault.is_failing());
        assert!(w.until_retry().unwrap() > Duration::from_millis(500), "{:?}", w.until_retry());

        std::fs::rename(&away, &file).unwrap();
        w.retry_at = Some(Instant::now());
        w.retry_if_due();
        assert!(!fault.is_failing() && w.until_retry().is_none());
        assert!(store.db().is_ok());
        assert_eq!(fault.recoveries.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}
