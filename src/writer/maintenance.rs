//! The writer's maintenance: sealing closed hours into chunks (and open hours early when memory
//! is over budget), trimming the WAL, checkpointing a bloated WAL, expiring chunks past
//! retention. Deleting is in `delete.rs`, purging in `purge.rs`. Runs on the writer thread
//! between commits.

use super::*;
use crate::store::OpenHours;

/// WAL points allowed beyond twice the open points before a checkpoint rewrites the WAL: about
/// 1.6 MB of WAL, and a checkpoint never rewrites more than half of what the WAL grew by.
const CHECKPOINT_MIN_POINTS: usize = 100_000;
/// Retention runs at most this often; expiring whole hours needs no finer grain.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

impl Writer {
    /// Seals closed hours (and the largest open hours when memory is over budget) and expires
    /// chunks past retention. Errors are logged; the next round retries.
    pub fn maintenance(&mut self) {
        self.last_maintenance = Instant::now();
        self.points_since_maintenance = 0;
        let now = now_ms();
        let cutoff = now - HOUR_MS - self.cfg.seal_delay.as_millis() as i64;
        let mut keys: Vec<(u64, i64)> = self.first_seq.keys().filter(|k| k.1 <= cutoff).copied().collect();
        if self.open_points > self.cfg.max_open_points {
            // Seal every open hour, not just the largest: a small hour with an old first WAL
            // entry would otherwise keep the whole WAL alive until its hour ends.
            keys = self.first_seq.keys().copied().collect();
        }
        let sealed = self.seal(keys);
        if self.maintenance_failed("sealing", sealed) {
            return;
        }
        let checkpointed = self.checkpoint_if_bloated();
        if self.maintenance_failed("WAL checkpoint", checkpointed) {
            return;
        }
        if self.last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            self.last_retention = Some(Instant::now());
            let expired = self.expire(now);
            if !self.maintenance_failed("retention", expired) {
                let expired = self.expire_records(now);
                self.maintenance_failed("record retention", expired);
            }
        }
        // A slice each round, so purging goes on under a steady load too (unless the writer
        // was idle enough to purge since the last round: slices never run back to back).
        if !std::mem::take(&mut self.purged_since_maintenance) {
            self.purge_slice();
            // This round's own slice: the next round takes one too.
            self.purged_since_maintenance = false;
        }
    }

    /// Whether `step` failed; a storage failure (logged by the fault) ends this round, anything
    /// else is logged here. The next round retries either way.
    pub(super) fn maintenance_failed(&mut self, step: &str, result: Result<()>) -> bool {
        let Err(e) = result else { return false };
        let e = self.failed(e);
        if super::fault::storage_failure(&e).is_none() {
            log::error!("{step} failed (will retry): {e}");
        }
        true
    }

    /// Deletes chunk blocks whose whole hour is older than the retention period.
    pub(super) fn expire(&mut self, now: i64) -> Result<()> {
        let cutoff = hour_start(now - self.storage.load().retention.as_millis() as i64);
        let expired: Vec<(i64, u64)> = {
            let txn = self.store.db()?.begin_read()?;
            let hours = txn.open_table(CHUNK_HOURS)?;
            let mut keys = Vec::new();
            for row in hours.range(..(cutoff, 0))? {
                keys.push(row?.0.value());
            }
            keys
        };
        if expired.is_empty() {
            return Ok(());
        }
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::None)?;
        txn.set_quick_repair(true);
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut hours = txn.open_table(CHUNK_HOURS)?;
            for &(hour, group) in &expired {
                chunks.retain_in((group, hour, 0)..=(group, hour, u32::MAX), |_, _| false)?;
                hours.remove((hour, group))?;
            }
        }
        txn.commit()?;
        self.stats.expired_chunks.fetch_add(expired.len() as u64, Relaxed);
        log::info!("retention removed {} chunks older than {cutoff} ms", expired.len());
        Ok(())
    }

    /// Deletes execution profiles, alert events and silences older than the retention period
    /// (`store::retention`).
    pub(super) fn expire_records(&mut self, now: i64) -> Result<()> {
        let cutoff = now - self.storage.load().retention.as_millis() as i64;
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::None)?;
        txn.set_quick_repair(true);
        let removed = crate::store::retention::expire(&txn, cutoff)?;
        if removed == 0 {
            txn.abort()?;
            return Ok(());
        }
        txn.commit()?;
        log::info!(
            "retention removed {removed} records (profiles, alert events, silences) older than {cutoff} ms"
        );
        Ok(())
    }

    /// Writes the given open hours into chunks (merged with existing ones), drops WAL entries no
    /// open hour needs any more, commits, then removes the hours from memory.
    pub(super) fn seal(&mut self, mut keys: Vec<(u64, i64)>) -> Result<()> {
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(());
        }
        let sealing: std::collections::HashSet<(u64, i64)> = keys.iter().copied().collect();
        let floor = self
            .first_seq
            .iter()
            .filter(|(k, _)| !sealing.contains(k))
            .map(|(_, s)| *s)
            .min()
            .unwrap_or(self.next_seq);
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::None)?;
        txn.set_quick_repair(true);
        {
            let open = self.store.open.read();
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut hours = txn.open_table(CHUNK_HOURS)?;
            let mut blocks: std::collections::BTreeMap<(u64, i64), Vec<u64>> = Default::default();
            for &(id, hour) in &keys {
                blocks.entry((block::group_of(id), hour)).or_default().push(id);
            }
            for ((group, hour), ids) in blocks {
                let entries = merged_block(&chunks, &open, group, hour, &ids)?;
                block::put(&mut chunks, &mut hours, (group, hour), &entries)?;
            }
            txn.open_table(WAL)?.retain_in(..floor, |_, _| false)?;
        }
        txn.commit()?;
        let mut open = self.store.open.write();
        for key in &keys {
            self.first_seq.remove(key);
            if let Some(hours) = open.get_mut(&key.0) {
                if let Some(p) = hours.remove(&key.1) {
                    self.open_points -= p.len();
                }
                if hours.is_empty() {
                    open.remove(&key.0);
                }
            }
        }
        self.wal_points = self.wal_points.split_off(&floor);
        self.stats.sealed_chunks.fetch_add(keys.len() as u64, Relaxed);
        Ok(())
    }

    /// When the WAL holds far more points than the open hours (an old entry pinned by one
    /// still-open hour, e.g. the sampler's, keeps every later entry), rewrites the open points
    /// as one new entry and drops every older one, in one transaction.
    fn checkpoint_if_bloated(&mut self) -> Result<()> {
        let wal: usize = self.wal_points.values().sum();
        if wal <= 2 * self.open_points + CHECKPOINT_MIN_POINTS {
            return Ok(());
        }
        self.checkpoint()
    }

    /// Rewrites the open points as one new WAL entry and drops every older entry, in one
    /// transaction: no entry then holds a point of an hour sealed before.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        let wal: usize = self.wal_points.values().sum();
        let seq = self.next_seq;
        let series: Vec<(u64, Vec<Point>)> = {
            let open = self.store.open.read();
            open.iter().map(|(id, hours)| (*id, hours.values().flatten().copied().collect())).collect()
        };
        let entries: Vec<(u64, &[Point])> = series.iter().map(|(id, p)| (*id, p.as_slice())).collect();
        let mut txn = self.store.db()?.begin_write()?;
        // If this commit is lost in a crash, the older entries it replaces are still there.
        txn.set_durability(Durability::None)?;
        txn.set_quick_repair(true);
        {
            let mut table = txn.open_table(WAL)?;
            table.insert(seq, crate::store::wal::encode_wal(&entries).as_slice())?;
            table.retain_in(..seq, |_, _| false)?;
        }
        txn.commit()?;
        self.next_seq += 1;
        self.first_seq.values_mut().for_each(|s| *s = seq);
        self.wal_points = std::collections::BTreeMap::from([(seq, self.open_points)]);
        log::debug!("WAL checkpoint: {wal} points rewritten as {}", self.open_points);
        Ok(())
    }
}

/// The block of `group` for `hour` with the open points of `ids` merged into their chunks
/// (a chunk is created for a series the block does not hold yet).
fn merged_block(
    chunks: &impl ReadableTable<(u64, i64, u32), &'static [u8]>,
    open: &OpenHours,
    group: u64,
    hour: i64,
    ids: &[u64],
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut entries: std::collections::BTreeMap<u64, Vec<u8>> =
        match crate::store::read_blocks(chunks, group, hour, hour)?.pop() {
            Some((_, b)) => block::index(&b)?.into_iter().map(|(id, r)| (id, b[r].to_vec())).collect(),
            None => Default::default(),
        };
    for id in ids {
        let Some(points) = open.get(id).and_then(|h| h.get(&hour)) else {
            continue;
        };
        let mut merged = match entries.get(id) {
            Some(chunk) => codec::decode(chunk)?,
            None => Vec::with_capacity(points.len()),
        };
        merged.extend_from_slice(points);
        codec::normalize(&mut merged);
        entries.insert(*id, codec::encode(&merged));
    }
    Ok(entries.into_iter().collect())
}
