//! The writer thread: the only code that opens a redb write transaction.
//!
//! Ingest handlers `try_send` a [`WriterMsg::Write`]; the thread takes every message waiting in
//! the channel and commits all their points in one `Durability::Immediate` transaction (group
//! commit) into the WAL table, publishes them to the store's open hours, then answers each request.
//! Maintenance, on a timer, seals closed hours into chunks (merging with any existing chunk),
//! deletes WAL entries no open hour needs and applies retention. Seal commits use
//! `Durability::None`: if one is lost in a crash the WAL still holds its points. Range deletes
//! (`delete.rs`) and the purge of deleted series (`purge.rs`) rewrite blocks in short durable
//! slices between message groups, so a write waits for one slice at most.

use crate::config::{StorageConfig, WriterConfig};
use crate::error::{Error, Result};
use crate::model::{HOUR_MS, Point, SeriesKey, hour_start, now_ms};
use crate::store::{Store, block, codec, tables::*};
use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use redb::{Durability, ReadableDatabase, ReadableTable};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The points of one request, grouped by series (each series once).
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub series: Vec<SeriesPoints>,
}

#[derive(Debug)]
pub struct SeriesPoints {
    pub key: Arc<SeriesKey>,
    pub canonical: Arc<str>,
    pub points: Vec<Point>,
}

impl WriteBatch {
    pub fn point_count(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

/// What the writer tells an ingest request once its points are durable.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WriteAck {
    pub points: usize,
    pub new_series: usize,
}

pub enum WriterMsg {
    /// Commit these points; answer on `reply` (absent for `?ack=queued`).
    Write { batch: WriteBatch, reply: Option<tokio::sync::oneshot::Sender<Result<WriteAck>>> },
    /// A barrier: answered once everything sent before it is committed.
    Flush(Sender<()>),
    /// Seal every open hour now (tests, benchmarks, backups).
    SealAll(Sender<Result<()>>),
    /// Run a small change (thresholds, alert events, profiles) in its own durable transaction.
    Apply(Change, Sender<Result<()>>),
    /// Forget these series (id and key); answers how many were known.
    DeleteSeries(Vec<(u64, Arc<SeriesKey>)>, Sender<Result<usize>>),
    /// Remove the points of these series from the first to the second time (ms, inclusive);
    /// answers how many went.
    DeletePoints(Vec<u64>, (i64, i64), Sender<Result<u64>>),
    /// Replace the saved cache snapshot with these (full key, encoded entry) pairs.
    SaveCache(Vec<(String, Vec<u8>)>, Sender<Result<()>>),
    /// Answer `reached`, then block until `release`'s sender drops (see [`WriterHandle::pause`]).
    Pause { reached: Sender<()>, release: Receiver<()> },
    /// Drain what is queued, commit it, answer, and end the thread.
    Shutdown(Sender<()>),
}

/// A change to small tables, run by the writer inside a durable transaction it commits.
pub type Change = Box<dyn FnOnce(&redb::WriteTransaction) -> Result<()> + Send>;

/// Keeps the writer paused while alive; see [`WriterHandle::pause`].
pub struct PauseGuard {
    _release: Sender<()>,
}

/// Counters the writer keeps for `/api/v1/metrics/*`; written by the writer, read by anyone.
#[derive(Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub points: AtomicU64,
    pub requests: AtomicU64,
    pub rejected_full: AtomicU64,
    pub rejected_series_limit: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Unix ms of the writer loop's last turn (it turns at least every maintenance interval).
    pub alive_ms: std::sync::atomic::AtomicI64,
    pub sealed_chunks: AtomicU64,
    pub expired_chunks: AtomicU64,
    /// Chunks of deleted series left out of their blocks (`purge.rs`).
    pub purged_chunks: AtomicU64,
    /// Series groups whose blocks wait to be purged.
    pub purge_groups: AtomicU64,
    /// Commit latency of ingest transactions, microseconds.
    pub commit_us: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

#[derive(Debug, serde::Serialize)]
pub struct WriterStatsSnapshot {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub queued_points: usize,
    pub commits: u64,
    pub points: u64,
    pub requests: u64,
    pub avg_batch_points: f64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub rejected_full: u64,
    pub rejected_series_limit: u64,
    pub failed_commits: u64,
    pub sealed_chunks: u64,
    pub expired_chunks: u64,
    pub purged_chunks: u64,
    pub purge_pending_groups: u64,
    /// The current storage failure (`null` when writes work), and how many have ended.
    pub storage_fault: Option<FaultInfo>,
    pub storage_recoveries: u64,
}

/// Owns the writer thread. Cloned senders live in the HTTP workers, so shutdown is an explicit
/// message, never a closed channel.
pub struct WriterHandle {
    tx: Sender<WriterMsg>,
    join: Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<WriterStats>,
    /// Points sent but not yet taken by the writer; bounds queued memory.
    queued_points: Arc<AtomicUsize>,
    cfg: WriterConfig,
    /// Set while the data directory cannot be written; see `fault.rs`.
    pub fault: Arc<StorageFault>,
    /// The writer's `storage.*` (retention, series cap).
    storage: Arc<ArcSwap<StorageConfig>>,
}

impl WriterHandle {
    /// New retention and series cap (a reload): the next write and maintenance round use them.
    pub fn set_storage(&self, storage: StorageConfig) {
        self.storage.store(Arc::new(storage));
    }

    /// Replays the WAL into the store's open hours and starts `perfd-writer`.
    pub fn start(store: Arc<Store>, cfg: WriterConfig, storage: StorageConfig) -> Result<WriterHandle> {
        let (tx, rx) = crossbeam_channel::bounded(cfg.queue_capacity);
        let stats = Arc::new(WriterStats::default());
        let queued_points = Arc::new(AtomicUsize::new(0));
        let fault = Arc::new(StorageFault::default());
        let mut writer =
            Writer::new(store, cfg.clone(), storage, stats.clone(), queued_points.clone(), fault.clone())?;
        let storage = writer.storage.clone();
        let join = std::thread::Builder::new().name("perfd-writer".into()).spawn(move || writer.run(rx))?;
        Ok(WriterHandle { tx, join: Mutex::new(Some(join)), stats, queued_points, cfg, fault, storage })
    }

    /// Queues a batch without blocking. A full queue is `Overloaded`, a stopped writer
    /// `ShuttingDown`, a storage fault `StorageFailed`.
    pub fn submit(
        &self,
        batch: WriteBatch,
        wait: bool,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<Result<WriteAck>>>> {
        self.fault.check()?;
        let n = batch.point_count();
        let before = self.queued_points.fetch_add(n, Relaxed);
        if before > 0 && before + n > self.cfg.max_queued_points {
            self.queued_points.fetch_sub(n, Relaxed);
            self.stats.rejected_full.fetch_add(1, Relaxed);
            return Err(Error::Overloaded { retry_after_secs: 1 });
        }
        let (reply, rx) = if wait {
            let (t, r) = tokio::sync::oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        match self.tx.try_send(WriterMsg::Write { batch, reply }) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.queued_points.fetch_sub(n, Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.stats.rejected_full.fetch_add(1, Relaxed);
                        Err(Error::Overloaded { retry_after_secs: 1 })
                    }
                    TrySendError::Disconnected(_) => Err(Error::ShuttingDown),
                }
            }
        }
    }

    /// Blocks until everything sent before this call is committed.
    pub fn flush(&self) -> Result<()> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::Flush(t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)
    }

    /// Blocks until every open hour is sealed into a chunk.
    pub fn seal_all(&self) -> Result<()> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::SealAll(t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Forgets these series, after every write sent before; blocks until committed. Their points
    /// written before stay out of reach (their chunks go with retention), and a later write of
    /// the same key makes a new series.
    pub fn delete_series(&self, series: Vec<(u64, Arc<SeriesKey>)>) -> Result<usize> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::DeleteSeries(series, t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Removes the points of `series` from `start` to `end` (inclusive), after every write sent
    /// before; blocks until committed and returns how many points went. The series stay.
    pub fn delete_points(&self, series: Vec<u64>, start: i64, end: i64) -> Result<u64> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::DeletePoints(series, (start, end), t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Stops the writer from taking messages until the guard drops, once everything sent before
    /// is committed. Lets tests fill the queue deterministically.
    pub fn pause(&self) -> Result<PauseGuard> {
        let (release_tx, release) = crossbeam_channel::bounded(0);
        let (reached, reached_rx) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::Pause { reached, release }).map_err(|_| Error::ShuttingDown)?;
        reached_rx.recv().map_err(|_| Error::ShuttingDown)?;
        Ok(PauseGuard { _release: release_tx })
    }

    /// Runs `change` in a durable write transaction on the writer thread; blocks until committed.
    pub fn apply(&self, change: Change) -> Result<()> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::Apply(change, t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Replaces the warm-restart cache snapshot (empty: clears it). Blocks until committed.
    pub fn save_cache(&self, entries: Vec<(String, Vec<u8>)>) -> Result<()> {
        let (t, r) = crossbeam_channel::bounded(1);
        self.tx.send(WriterMsg::SaveCache(entries, t)).map_err(|_| Error::ShuttingDown)?;
        r.recv().map_err(|_| Error::ShuttingDown)?
    }

    /// Drains and commits what is queued, then joins the thread. Idempotent.
    pub fn shutdown(&self) {
        let Some(join) = self.join.lock().take() else {
            return;
        };
        let (t, r) = crossbeam_channel::bounded(1);
        if self.tx.send(WriterMsg::Shutdown(t)).is_ok() {
            let _ = r.recv();
        }
        if join.join().is_err() {
            log::error!("writer thread panicked");
        }
    }

    /// Commit times since start (µs), for the sampler's quantiles of each tick; `None` before
    /// the first commit.
    pub fn commit_histogram(&self) -> Option<hdrhistogram::Histogram<u64>> {
        self.stats.commit_us.lock().clone()
    }

    pub fn snapshot(&self) -> WriterStatsSnapshot {
        let s = &self.stats;
        let (p50, p99) = s
            .commit_us
            .lock()
            .as_ref()
            .map(|h| (h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0))
            .unwrap_or_default();
        let commits = s.commits.load(Relaxed);
        let points = s.points.load(Relaxed);
        WriterStatsSnapshot {
            queue_depth: self.tx.len(),
            queue_capacity: self.cfg.queue_capacity,
            queued_points: self.queued_points.load(Relaxed),
            commits,
            points,
            requests: s.requests.load(Relaxed),
            avg_batch_points: if commits == 0 { 0.0 } else { points as f64 / commits as f64 },
            commit_p50_ms: p50,
            commit_p99_ms: p99,
            rejected_full: s.rejected_full.load(Relaxed),
            rejected_series_limit: s.rejected_series_limit.load(Relaxed),
            failed_commits: s.failed_commits.load(Relaxed),
            sealed_chunks: s.sealed_chunks.load(Relaxed),
            expired_chunks: s.expired_chunks.load(Relaxed),
            purged_chunks: s.purged_chunks.load(Relaxed),
            purge_pending_groups: s.purge_groups.load(Relaxed),
            storage_fault: self.fault.info(),
            storage_recoveries: self.fault.recoveries.load(Relaxed),
        }
    }
}

type Reply = Option<tokio::sync::oneshot::Sender<Result<WriteAck>>>;

/// State owned by the writer thread.
pub struct Writer {
    store: Arc<Store>,
    cfg: WriterConfig,
    /// `storage.*`, shared with the handle: a reload replaces it ([`WriterHandle::set_storage`]).
    storage: Arc<ArcSwap<StorageConfig>>,
    stats: Arc<WriterStats>,
    queued_points: Arc<AtomicUsize>,
    next_seq: u64,
    next_series_id: u64,
    /// For each open hour, the first WAL entry that fed it; WAL entries below the minimum are garbage.
    first_seq: HashMap<(u64, i64), u64>,
    /// Points in each live WAL entry, to notice when the WAL holds far more than the open hours.
    wal_points: std::collections::BTreeMap<u64, usize>,
    open_points: usize,
    last_maintenance: Instant,
    points_since_maintenance: usize,
    last_retention: Option<Instant>,
    purge_at: purge::PurgeCursor,
    /// Whether a purge slice ran since the last maintenance round.
    purged_since_maintenance: bool,
    /// Range deletes under way, oldest first; each is answered when its last slice commits.
    deleting: std::collections::VecDeque<delete::RangeDelete>,
    fault: Arc<StorageFault>,
    /// Wait before the next write attempt after a storage failure (`fault.rs`).
    backoff: Duration,
    /// When to try writing again, while the store is faulted.
    retry_at: Option<Instant>,
}

#[cfg(test)]
impl Writer {
    /// A writer over `store` with the test config, driven by calling its methods.
    fn for_test(store: &Arc<Store>) -> Writer {
        let cfg = crate::config::Config::for_test(&store.path);
        let (stats, queued, fault) = (Arc::default(), Arc::default(), Arc::default());
        Writer::new(store.clone(), cfg.writer, cfg.storage, stats, queued, fault).unwrap()
    }
}

mod delete;
pub mod fault;
mod maintenance;
mod purge;
mod recovery;
mod worker;

pub use fault::{FaultInfo, StorageFault};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::BatchBuilder;
    use crate::model::{HOUR_MS, TimeBounds, hour_start, now_ms};
    use redb::ReadableTableMetadata;

    fn wal_entries(store: &Store) -> u64 {
        use redb::ReadableDatabase;
        let txn = store.db().unwrap().begin_read().unwrap();
        txn.open_table(crate::store::tables::WAL).unwrap().len().unwrap()
    }

    /// Regression: one point in the still-open current hour (the sampler writes such points every
    /// tick) pinned its WAL entry and with it every later one, so a backfill of closed hours
    /// stayed in the WAL (16 bytes a point) until the hour ended.
    #[test]
    fn an_open_hour_does_not_pin_a_backfill_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::for_test(dir.path());
        let now = now_ms();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let writer = WriterHandle::start(store.clone(), cfg.writer.clone(), cfg.storage.clone()).unwrap();
        let write = |points: &mut dyn Iterator<Item = (String, Point)>| {
            let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 86_400_000));
            for (name, p) in points {
                b.push(&name, &[], p).unwrap();
            }
            writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
        };
        write(&mut std::iter::once(("live".to_string(), (now, 1.0))));
        let t0 = hour_start(now) - 5 * HOUR_MS;
        for chunk in 0..8 {
            write(
                &mut (0..150_000).map(|i| (format!("old{}", i % 50), (t0 + chunk * 150_000 + i, i as f64))),
            );
        }
        // Bounded polling: maintenance (every 200 ms in tests) seals the closed hours and
        // checkpoints the WAL down to the one open point.
        let deadline = Instant::now() + Duration::from_secs(30);
        while wal_entries(&store) > 1 {
            assert!(Instant::now() < deadline, "WAL still holds {} entries", wal_entries(&store));
            writer.flush().unwrap();
            std::thread::yield_now();
        }
        writer.shutdown();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let counts = store.counts().unwrap();
        assert!(counts.wal_entries <= 2, "{counts:?}");
        // Reads see WAL points once a writer has replayed them.
        let store = Arc::new(store);
        let writer = WriterHandle::start(store.clone(), cfg.writer.clone(), cfg.storage.clone()).unwrap();
        let sel = crate::query::Selector::parse("live").unwrap();
        assert_eq!(
            crate::query::read_raw(&store, &sel, now - 1, now, 10).unwrap()[0].points,
            vec![(now, 1.0)]
        );
        let sel = crate::query::Selector::parse("old7").unwrap();
        assert_eq!(crate::query::read_raw(&store, &sel, t0, now, 1_000_000).unwrap()[0].points.len(), 24_000);
        writer.shutdown();
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::BatchBuilder;
    use crate::model::{HOUR_MS, TimeBounds, now_ms};

    #[test]
    fn retention_deletes_blocks_whose_hour_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::for_test(dir.path());
        cfg.storage.retention = Duration::from_secs(3600);
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut w = Writer::new(
            store.clone(),
            cfg.writer,
            cfg.storage,
            Arc::default(),
            Arc::default(),
            Arc::default(),
        )
        .unwrap();
        let now = now_ms();
        let mut b = BatchBuilder::new(TimeBounds::new(now, HOUR_MS));
        b.push("old", &[], (now - 50 * 60_000, 1.0)).unwrap();
        w.step(vec![WriterMsg::Write { batch: b.finish(), reply: None }]);
        let keys = w.first_seq.keys().copied().collect();
        w.seal(keys).unwrap();
        assert_eq!(store.counts().unwrap().blocks, 1);
        w.expire(now).unwrap();
        assert_eq!(store.counts().unwrap().blocks, 1, "still inside the retention period");
        w.expire(now + 3 * HOUR_MS).unwrap();
        assert_eq!(store.counts().unwrap().blocks, 0, "the whole hour is past retention");
        assert_eq!(w.stats.expired_chunks.load(Relaxed), 1);
        // Records too: a profile that ended two hours ago goes, one that ended now stays.
        let now = now_ms();
        for (id, finished) in [(1, now - 2 * HOUR_MS), (2, now)] {
            let mut p = crate::executions::Execution::queued(id, "crew", finished, finished);
            p.finished_ms = Some(finished);
            let txn = store.db().unwrap().begin_write().unwrap();
            crate::store::records::put_profile(&p).unwrap()(&txn).unwrap();
            txn.commit().unwrap();
        }
        w.maintenance();
        let left = crate::store::records::profiles_since(&store, i64::MIN).unwrap();
        assert_eq!(left.iter().map(|p| p.id).collect::<Vec<_>>(), vec![2]);
    }
}
