//! The writer thread's loop: group commit, publishing, and the messages other than writes.
//! Sealing and retention are in `maintenance.rs`.

use super::fault::{FIRST_BACKOFF, StorageFault, storage_failure};
use super::recovery::{Loaded, add_to_hours};
use super::*;
use crossbeam_channel::RecvTimeoutError;

/// Upper bound on points merged into one ingest transaction, so one commit stays short.
const MAX_COMMIT_POINTS: usize = 2_000_000;
/// After this many points, maintenance runs early: a backfill of closed hours is sealed and its
/// WAL entries trimmed before the WAL (16 bytes a point) grows the file much.
const MAINTAIN_EVERY_POINTS: usize = 1_000_000;
/// While series wait to be purged, a writer with no message for this long purges a slice.
const PURGE_WHEN_IDLE_FOR: Duration = Duration::from_millis(2);

/// Per request: the series ids of its batch in order, or why it was refused.
type Resolved = Vec<Result<Vec<u64>>>;

impl Writer {
    pub(super) fn new(
        store: Arc<Store>,
        cfg: WriterConfig,
        storage: StorageConfig,
        stats: Arc<WriterStats>,
        queued_points: Arc<AtomicUsize>,
        fault: Arc<StorageFault>,
    ) -> Result<Writer> {
        let mut w = Writer {
            store: store.clone(),
            cfg,
            storage: Arc::new(ArcSwap::from_pointee(storage)),
            stats,
            queued_points,
            next_seq: 1,
            next_series_id: 1,
            first_seq: HashMap::new(),
            wal_points: Default::default(),
            open_points: 0,
            last_maintenance: Instant::now(),
            points_since_maintenance: 0,
            last_retention: None,
            purge_at: None,
            purged_since_maintenance: false,
            deleting: Default::default(),
            fault,
            backoff: FIRST_BACKOFF,
            retry_at: None,
        };
        let txn = store.db()?.begin_read()?;
        w.stats.purge_groups.store(redb::ReadableTableMetadata::len(&txn.open_table(PURGE)?)?, Relaxed);
        let loaded = Loaded::read(&txn)?;
        drop(txn);
        if loaded.open_points() > 0 {
            log::info!("replayed {} points of open hours from the WAL", loaded.open_points());
        }
        // The store loaded the catalog when it opened.
        w.adopt(loaded, None);
        Ok(w)
    }

    pub(super) fn run(&mut self, rx: Receiver<WriterMsg>) {
        loop {
            self.stats.alive_ms.store(now_ms(), Relaxed);
            // While the store is faulted maintenance waits, so only the retry bounds the sleep
            // (maintenance overdue would otherwise make it zero: a busy loop).
            let wait = if self.fault.is_failing() {
                self.until_retry().unwrap_or(self.cfg.maintenance_interval)
            } else {
                let m = self.until_maintenance();
                let m = if self.deleting() {
                    Duration::ZERO
                } else if self.purge_pending() {
                    m.min(PURGE_WHEN_IDLE_FOR)
                } else {
                    m
                };
                self.until_retry().map_or(m, |r| r.min(m))
            };
            let mut idle = false;
            match rx.recv_timeout(wait) {
                Ok(first) => {
                    if let Some(done) = self.step(take_group(first, &rx)) {
                        // Everything sent before Shutdown is committed before it is answered.
                        let rest: Vec<WriterMsg> = rx.try_iter().collect();
                        if !rest.is_empty() {
                            self.step(rest);
                        }
                        self.abandon_deletes();
                        self.retry_if_due();
                        if self.fault.is_failing() {
                            log::error!(
                                "stopping with storage failing; the WAL holds every acknowledged point"
                            );
                        } else {
                            // Seal closed hours so the next start replays less, and make the
                            // non-durable seal commits durable.
                            self.maintenance();
                            if let Err(e) = self.persist() {
                                log::error!("final commit failed (the WAL still holds every point): {e}");
                            }
                        }
                        let _ = done.send(());
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => idle = true,
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.retry_if_due();
            if self.fault.is_failing() {
                self.refuse_deletes();
                continue;
            }
            if self.last_maintenance.elapsed() >= self.cfg.maintenance_interval
                || self.points_since_maintenance >= MAINTAIN_EVERY_POINTS
            {
                self.maintenance();
            } else if self.deleting() {
                // One slice, then messages again, as for purging.
                self.delete_slice();
            } else if idle && self.purge_pending() {
                // One slice, then messages again: a write waits for one slice at most.
                self.purge_slice();
            }
        }
    }

    fn until_maintenance(&self) -> Duration {
        self.cfg.maintenance_interval.saturating_sub(self.last_maintenance.elapsed())
    }

    /// Handles one group of messages: one commit for all writes, then seals, then barriers.
    /// Returns the Shutdown reply if one was in the group.
    pub fn step(&mut self, msgs: Vec<WriterMsg>) -> Option<Sender<()>> {
        let (mut writes, mut flushes, mut seals, mut shutdown) = (Vec::new(), Vec::new(), Vec::new(), None);
        let mut deletes = Vec::new();
        let mut pause = None;
        for m in msgs {
            match m {
                WriterMsg::Write { batch, reply } => {
                    self.queued_points.fetch_sub(batch.point_count(), Relaxed);
                    writes.push((batch, reply));
                }
                WriterMsg::Flush(t) => flushes.push(t),
                WriterMsg::SealAll(t) => seals.push(t),
                WriterMsg::Apply(change, t) => {
                    let r = self.fault.check().and_then(|()| self.apply(change).map_err(|e| self.failed(e)));
                    let _ = t.send(r);
                }
                WriterMsg::SaveCache(entries, t) => {
                    let r = self
                        .fault
                        .check()
                        .and_then(|()| self.save_cache(&entries).map_err(|e| self.failed(e)));
                    let _ = t.send(r);
                }
                m @ (WriterMsg::DeleteSeries(..) | WriterMsg::DeletePoints(..)) => deletes.push(m),
                WriterMsg::Shutdown(t) => shutdown = Some(t),
                WriterMsg::Pause { reached, release } => pause = Some((reached, release)),
            }
        }
        if !writes.is_empty() {
            self.commit_writes(writes);
        }
        // After the group's writes, so a delete takes what was sent before it.
        for m in deletes {
            self.delete(m);
        }
        for t in seals {
            let keys: Vec<(u64, i64)> = self.first_seq.keys().copied().collect();
            let r = self.fault.check().and_then(|()| self.seal(keys).map_err(|e| self.failed(e)));
            let _ = t.send(r);
        }
        for t in flushes {
            let _ = t.send(());
        }
        if let Some((reached, release)) = pause {
            let _ = reached.send(());
            // Returns when the PauseGuard (the only sender) drops.
            let _ = release.recv();
        }
        shutdown
    }

    fn commit_writes(&mut self, writes: Vec<(WriteBatch, Reply)>) {
        if let Err(refusal) = self.fault.check() {
            // Queued before the store failed; nothing is tried until the retry succeeds.
            return refuse(writes, &refusal);
        }
        let started = Instant::now();
        let first_new_id = self.next_series_id;
        let (resolved, new_series) = self.resolve(&writes);
        let seq = self.next_seq;
        let entries: Vec<(u64, &[Point])> = writes
            .iter()
            .zip(&resolved)
            .filter_map(|((batch, _), ids)| ids.as_ref().ok().map(|ids| (batch, ids)))
            .flat_map(|(batch, ids)| ids.iter().zip(&batch.series).map(|(id, s)| (*id, s.points.as_slice())))
            .collect();
        if !entries.is_empty() {
            if let Err(e) = self.commit_wal(seq, &entries, &new_series) {
                self.stats.failed_commits.fetch_add(1, Relaxed);
                self.next_series_id = first_new_id;
                let told = self.failed(e);
                if storage_failure(&told).is_none() {
                    log::error!("ingest commit failed: {told}");
                }
                return refuse(writes, &told);
            }
            self.backoff = FIRST_BACKOFF;
            self.next_seq += 1;
            let points: usize = entries.iter().map(|e| e.1.len()).sum();
            self.wal_points.insert(seq, points);
            self.publish(seq, &entries, new_series);
            self.stats.commits.fetch_add(1, Relaxed);
            self.stats.points.fetch_add(points as u64, Relaxed);
            self.record_latency(started.elapsed());
        }
        self.stats.requests.fetch_add(writes.len() as u64, Relaxed);
        for ((batch, reply), ids) in writes.into_iter().zip(resolved) {
            let answer = ids.map(|ids| WriteAck {
                points: batch.point_count(),
                new_series: ids.iter().filter(|&&id| id >= first_new_id).count(),
            });
            if let Some(r) = reply {
                let _ = r.send(answer);
            } else if let Err(e) = answer {
                log::warn!("queued write refused: {e}");
            }
        }
    }

    /// Maps every series to an id, creating ids for new series unless that would pass the
    /// cardinality cap, in which case the whole request is refused.
    fn resolve(&mut self, writes: &[(WriteBatch, Reply)]) -> (Resolved, Vec<(u64, String, Arc<SeriesKey>)>) {
        let catalog = self.store.catalog.read();
        let mut new_series: Vec<(u64, String, Arc<SeriesKey>)> = Vec::new();
        let mut new_ids: HashMap<&str, u64> = HashMap::new();
        let mut resolved = Vec::with_capacity(writes.len());
        for (batch, _) in writes {
            let known = |c: &str, new_ids: &HashMap<&str, u64>| {
                catalog.ids.get(c).copied().or_else(|| new_ids.get(c).copied())
            };
            let fresh = batch.series.iter().filter(|s| known(&s.canonical, &new_ids).is_none()).count();
            let total = catalog.by_key.len() + new_series.len() + fresh;
            let max_series = self.storage.load().max_series;
            if fresh > 0 && total > max_series {
                self.stats.rejected_series_limit.fetch_add(1, Relaxed);
                resolved.push(Err(Error::SeriesLimit(format!(
                    "request would create {fresh} new series; the limit is {} and {} exist (raise storage.max_series, or delete series: POST /api/v1/admin/tsdb/delete_series?match=...; GET /api/v1/status/tsdb shows which metrics hold the most)",
                    max_series,
                    catalog.by_key.len() + new_series.len()
                ))));
                continue;
            }
            let mut ids = Vec::with_capacity(batch.series.len());
            for s in &batch.series {
                let id = match known(&s.canonical, &new_ids) {
                    Some(id) => id,
                    None => {
                        let id = self.next_series_id;
                        self.next_series_id += 1;
                        new_ids.insert(&s.canonical, id);
                        new_series.push((id, s.canonical.to_string(), s.key.clone()));
                        id
                    }
                };
                ids.push(id);
            }
            resolved.push(Ok(ids));
        }
        (resolved, new_series)
    }

    fn commit_wal(
        &self,
        seq: u64,
        entries: &[(u64, &[Point])],
        new_series: &[(u64, String, Arc<SeriesKey>)],
    ) -> Result<()> {
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        if !new_series.is_empty() {
            let mut by_key = txn.open_table(SERIES_BY_KEY)?;
            let mut by_id = txn.open_table(SERIES_BY_ID)?;
            for (id, canonical, _) in new_series {
                by_key.insert(canonical.as_str(), id)?;
                by_id.insert(id, canonical.as_str())?;
            }
            txn.open_table(META)?.insert("next_series_id", self.next_series_id.to_le_bytes().as_slice())?;
        }
        txn.open_table(WAL)?.insert(seq, crate::store::wal::encode_wal(entries).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Makes committed points (and series) visible to readers.
    fn publish(
        &mut self,
        seq: u64,
        entries: &[(u64, &[Point])],
        new_series: Vec<(u64, String, Arc<SeriesKey>)>,
    ) {
        if !new_series.is_empty() {
            let mut catalog = self.store.catalog.write();
            for (id, canonical, key) in new_series {
                catalog.insert(canonical, id, key);
            }
        }
        let n = add_to_hours(&mut self.store.open.write(), &mut self.first_seq, seq, entries);
        self.open_points += n;
        self.points_since_maintenance += n;
    }

    fn record_latency(&self, d: Duration) {
        let mut h = self.stats.commit_us.lock();
        let h = h.get_or_insert_with(|| {
            hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
                .expect("static histogram bounds are valid")
        });
        let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
    }

    fn apply(&self, change: Change) -> Result<()> {
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        change(&txn)?;
        txn.commit()?;
        Ok(())
    }

    fn save_cache(&self, entries: &[(String, Vec<u8>)]) -> Result<()> {
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        {
            let mut table = txn.open_table(CACHE_SNAPSHOT)?;
            table.retain(|_, _| false)?;
            for (k, v) in entries {
                table.insert(k.as_str(), v.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// An empty durable commit: makes every earlier `Durability::None` commit durable.
    pub(super) fn persist(&self) -> Result<()> {
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        txn.commit()?;
        Ok(())
    }
}

/// Answers every write of a group that was not committed with `why` (each its own copy).
fn refuse(writes: Vec<(WriteBatch, Reply)>, why: &Error) {
    for (_, reply) in writes {
        if let Some(r) = reply {
            let _ = r.send(Err(match why {
                Error::StorageFailed { full, message, retry_after_secs } => Error::StorageFailed {
                    full: *full,
                    message: message.clone(),
                    retry_after_secs: *retry_after_secs,
                },
                e => Error::Internal(format!("commit failed: {e}")),
            }));
        }
    }
}

/// The first message plus whatever else is already waiting, up to [`MAX_COMMIT_POINTS`].
fn take_group(first: WriterMsg, rx: &Receiver<WriterMsg>) -> Vec<WriterMsg> {
    let size = |m: &WriterMsg| {
        if let WriterMsg::Write { batch, .. } = m { batch.point_count() } else { 0 }
    };
    // A pause or shutdown ends the group: nothing sent after it may be handled before it.
    let ends = |m: &WriterMsg| matches!(m, WriterMsg::Pause { .. } | WriterMsg::Shutdown(_));
    let mut points = size(&first);
    let mut done = ends(&first);
    let mut msgs = vec![first];
    while points < MAX_COMMIT_POINTS && !done {
        match rx.try_recv() {
            Ok(m) => {
                points += size(&m);
                done = ends(&m);
                msgs.push(m);
            }
            Err(_) => break,
        }
    }
    msgs
}
