//! Purging: giving back the space of deleted series while the daemon runs.
//!
//! A delete (`delete.rs`) drops a series' keys at once but leaves its chunks in the blocks
//! it shares with up to 63 other series; it records the series' group in `PURGE` in the same
//! commit. The writer then rewrites that group's blocks without the dead chunks, a slice at a
//! time: one slice each maintenance round, and one whenever no message came for a moment, never
//! two back to back, so a write waits for one slice at most. A slice works for [`SLICE`] and
//! commits durably (a non-durable one would leave its pages for the next write's fsync):
//! measured about 10 ms in all (`benches/purge.py`). redb reuses the freed pages, so the file
//! stops growing by the dead chunks' size. A deleted id is never given out again, so no dead
//! chunk appears after the delete that recorded its group, and one pass over a group is enough.

use super::*;
use crate::store::read_some_blocks;
use redb::{ReadableTable, ReadableTableMetadata};

/// How long a slice works before it commits (the commit takes about as long again).
pub(super) const SLICE: Duration = Duration::from_millis(5);
/// Blocks read into memory at once (at most about 64 × 64 KB for a busy group).
pub(super) const BLOCKS_PER_READ: usize = 64;

/// Where purging stands: the group being purged and the first hour not yet rewritten.
pub(super) type PurgeCursor = Option<(u64, i64)>;

impl Writer {
    /// Whether groups wait to be purged.
    pub(super) fn purge_pending(&self) -> bool {
        self.stats.purge_groups.load(Relaxed) > 0
    }

    /// Records the groups of deleted series in `PURGE` (inside the delete's transaction) and
    /// restarts a group being purged from its first hour: its earlier blocks may hold new dead chunks.
    /// Returns how many groups are then listed.
    pub(super) fn mark_for_purge(&mut self, txn: &redb::WriteTransaction, ids: &[u64]) -> Result<u64> {
        let mut purge = txn.open_table(PURGE)?;
        for id in ids {
            let group = block::group_of(*id);
            purge.insert(group, ())?;
            if self.purge_at.is_some_and(|(g, _)| g == group) {
                self.purge_at = None;
            }
        }
        Ok(purge.len()?)
    }

    /// One slice of [`SLICE`]; a failure is logged and the next slice retries.
    pub(super) fn purge_slice(&mut self) {
        let purged = self.purge(SLICE);
        self.maintenance_failed("purge", purged);
        self.purged_since_maintenance = true;
    }

    /// Rewrites blocks of the groups in `PURGE` without the chunks of deleted series, for about
    /// `budget`, in one durable commit (with the groups it finished taken off the list).
    pub(super) fn purge(&mut self, budget: Duration) -> Result<()> {
        if !self.purge_pending() {
            return Ok(());
        }
        let started = Instant::now();
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_quick_repair(true);
        let mut dropped = 0;
        // Taken on only once committed: a failed commit retries from where this slice began.
        let mut at = self.purge_at;
        let left = {
            let mut purge = txn.open_table(PURGE)?;
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut hours = txn.open_table(CHUNK_HOURS)?;
            let series = txn.open_table(SERIES_BY_ID)?;
            loop {
                let Some(group) = purge.first()?.map(|(g, _)| g.value()) else { break 0 };
                let from = match at {
                    Some((g, hour)) if g == group => hour,
                    _ => i64::MIN,
                };
                let blocks = read_some_blocks(&chunks, group, (from, i64::MAX), BLOCKS_PER_READ)?;
                let live: Vec<u64> = live_ids(&series, group)?;
                for (hour, bytes) in &blocks {
                    let (kept, gone) = block::retain(bytes, |id| Ok(live.binary_search(&id).is_ok()))?;
                    if gone > 0 {
                        block::put(&mut chunks, &mut hours, (group, *hour), &kept)?;
                        dropped += gone;
                    }
                }
                match blocks.last() {
                    Some(&(hour, _)) if blocks.len() == BLOCKS_PER_READ && hour < i64::MAX => {
                        at = Some((group, hour + 1));
                    }
                    _ => {
                        purge.remove(group)?;
                        at = None;
                    }
                }
                if started.elapsed() >= budget {
                    break purge.len()?;
                }
            }
        };
        let work = started.elapsed();
        txn.commit()?;
        self.purge_at = at;
        log::debug!(
            "purge slice: {dropped} chunks, {work:?} of work, {:?} with the commit",
            started.elapsed()
        );
        self.stats.purge_groups.store(left, Relaxed);
        self.stats.purged_chunks.fetch_add(dropped, Relaxed);
        if left == 0 {
            log::info!("purge done: the chunks of deleted series are gone");
        }
        Ok(())
    }
}

/// The ids of `group` that name a series, sorted.
fn live_ids(series: &impl ReadableTable<u64, &'static str>, group: u64) -> Result<Vec<u64>> {
    let first = group * block::GROUP_SIZE;
    let mut ids = Vec::new();
    for row in series.range(first..first + block::GROUP_SIZE)? {
        ids.push(row?.0.value());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::BatchBuilder;
    use crate::model::TimeBounds;
    use std::collections::BTreeMap;

    /// More hours than [`BLOCKS_PER_READ`], so a group takes two reads.
    const HOURS: i64 = 70;

    /// One point an hour of each series for `HOURS` hours, and of `solo` in three hours before
    /// them (blocks it alone holds); sealed.
    fn write(w: &mut Writer, series: &[&str], solo: &str) -> i64 {
        let now = now_ms();
        let t0 = hour_start(now) - (HOURS + 4) * HOUR_MS;
        let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 24 * HOUR_MS));
        for h in 0..3 {
            b.push(solo, &[], (t0 + h * HOUR_MS, h as f64)).unwrap();
        }
        for h in 3..HOURS + 3 {
            for name in series {
                b.push(name, &[], (t0 + h * HOUR_MS, h as f64)).unwrap();
            }
        }
        w.step(vec![WriterMsg::Write { batch: b.finish(), reply: None }]);
        let keys = w.first_seq.keys().copied().collect();
        w.seal(keys).unwrap();
        t0
    }

    /// The name of each series id, taken before deletes.
    fn names(store: &Store) -> HashMap<u64, String> {
        store.catalog.read().by_key.values().map(|(id, k)| (*id, k.name.to_string())).collect()
    }

    /// How many stored blocks hold a chunk of each series (by name).
    fn chunks_of(store: &Store, names: &HashMap<u64, String>) -> BTreeMap<String, usize> {
        let txn = store.db().unwrap().begin_read().unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        let mut out = BTreeMap::new();
        for (_, b) in crate::store::read_blocks(&chunks, 0, i64::MIN, i64::MAX).unwrap() {
            for (id, _) in block::index(&b).unwrap() {
                *out.entry(names[&id].clone()).or_default() += 1;
            }
        }
        out
    }

    fn delete(w: &mut Writer, name: &str) {
        let series = crate::query::select(&w.store, &crate::query::Selector::parse(name).unwrap());
        assert_eq!(w.delete_series(&series).unwrap(), 1);
    }

    /// Purges in the smallest slices (one read each) until nothing is left; returns the slices.
    fn purge_all(w: &mut Writer) -> usize {
        let mut slices = 0;
        while w.purge_pending() {
            w.purge(Duration::ZERO).unwrap();
            slices += 1;
            assert!(slices < 20, "purging does not end");
        }
        slices
    }

    #[test]
    fn purging_drops_dead_chunks_and_empty_blocks_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut w = Writer::for_test(&store);
        let t0 = write(&mut w, &["a", "b"], "solo");
        let names = names(&store);
        delete(&mut w, "a");
        delete(&mut w, "solo");
        let all = BTreeMap::from([("a".into(), 70), ("b".into(), 70), ("solo".into(), 3)]);
        assert_eq!(chunks_of(&store, &names), all, "a delete leaves the chunks");
        drop(w);

        let mut w = Writer::for_test(&store);
        assert!(w.purge_pending(), "the group is still listed after a restart");
        assert_eq!(purge_all(&mut w), 2, "73 blocks: two reads");
        assert_eq!(chunks_of(&store, &names), BTreeMap::from([("b".into(), 70)]));
        assert_eq!(store.counts().unwrap().blocks as i64, HOURS, "solo's blocks are gone");
        let txn = store.db().unwrap().begin_read().unwrap();
        assert_eq!(txn.open_table(CHUNK_HOURS).unwrap().len().unwrap() as i64, HOURS);
        assert_eq!(txn.open_table(PURGE).unwrap().len().unwrap(), 0);
        assert_eq!((w.stats.purged_chunks.load(Relaxed), w.stats.purge_groups.load(Relaxed)), (73, 0));
        let sel = crate::query::Selector::parse("b").unwrap();
        let got = crate::query::read_raw(&store, &sel, t0, now_ms(), 1_000_000).unwrap();
        let want: Vec<Point> = (3..HOURS + 3).map(|h| (t0 + h * HOUR_MS, h as f64)).collect();
        assert_eq!(got[0].points, want, "the kept series loses nothing");
    }

    /// A series of a group being purged deleted mid-way has chunks behind the cursor too.
    #[test]
    fn a_delete_during_a_purge_restarts_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut w = Writer::for_test(&store);
        write(&mut w, &["a", "b", "c"], "solo");
        let names = names(&store);
        delete(&mut w, "a");
        w.purge(Duration::ZERO).unwrap();
        assert!(w.purge_at.is_some(), "one read done, more to go");
        delete(&mut w, "b");
        purge_all(&mut w);
        assert_eq!(chunks_of(&store, &names), BTreeMap::from([("c".into(), 70), ("solo".into(), 3)]));
    }
}
