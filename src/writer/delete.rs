//! Deleting: whole series (their keys go at once, their chunks with the purge, `purge.rs`), or
//! the points of some series within a time range (Prometheus' `delete_series` with `start` and
//! `end`), rewritten out of their chunks at once.

use super::*;

impl Writer {
    /// Carries out a `DeleteSeries` or `DeletePoints` message and answers it.
    pub(super) fn delete(&mut self, m: WriterMsg) {
        match m {
            WriterMsg::DeleteSeries(series, t) => {
                let r =
                    self.fault.check().and_then(|()| self.delete_series(&series).map_err(|e| self.failed(e)));
                let _ = t.send(r);
            }
            WriterMsg::DeletePoints(ids, range, t) => {
                let r = self
                    .fault
                    .check()
                    .and_then(|()| self.delete_points(&ids, range).map_err(|e| self.failed(e)));
                let _ = t.send(r);
            }
            _ => {}
        }
    }

    /// Seals the series' open hours (so the WAL no longer needs them), then removes their keys
    /// from the tables and the catalog in one durable commit; returns how many were known.
    pub(super) fn delete_series(&mut self, series: &[(u64, Arc<SeriesKey>)]) -> Result<usize> {
        // Through the catalog's hashed index: one deleted already (or made anew) is left alone.
        let known: Vec<(u64, String)> = {
            let catalog = self.store.catalog.read();
            series
                .iter()
                .map(|(id, key)| (*id, key.canonical()))
                .filter(|(id, canonical)| catalog.ids.get(canonical.as_str()) == Some(id))
                .collect()
        };
        let doomed: std::collections::HashSet<u64> = known.iter().map(|(id, _)| *id).collect();
        let open: Vec<(u64, i64)> =
            self.first_seq.keys().filter(|(id, _)| doomed.contains(id)).copied().collect();
        self.seal(open)?;
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.set_quick_repair(true);
        {
            let mut by_key = txn.open_table(SERIES_BY_KEY)?;
            let mut by_id = txn.open_table(SERIES_BY_ID)?;
            for (id, canonical) in &known {
                by_key.remove(canonical.as_str())?;
                by_id.remove(id)?;
            }
        }
        let ids: Vec<u64> = known.iter().map(|(id, _)| *id).collect();
        let groups = self.mark_for_purge(&txn, &ids)?;
        txn.commit()?;
        self.stats.purge_groups.store(groups, Relaxed);
        let mut catalog = self.store.catalog.write();
        for (_, canonical) in &known {
            catalog.remove(canonical);
        }
        Ok(known.len())
    }

    /// Removes the points of `ids` from `start` to `end` (inclusive) and returns how many went.
    /// Their open hours in the range are sealed first and the WAL checkpointed, so no WAL entry
    /// still holds a removed point for a replay to bring back; then every stored block of theirs
    /// in the range is rewritten without those points, in one durable commit. The series stay.
    pub(super) fn delete_points(&mut self, ids: &[u64], (start, end): (i64, i64)) -> Result<u64> {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let overlaps = |hour: i64| hour <= end && hour.saturating_add(HOUR_MS) > start;
        let open: Vec<(u64, i64)> = self
            .first_seq
            .keys()
            .filter(|(id, hour)| ids.binary_search(id).is_ok() && overlaps(*hour))
            .copied()
            .collect();
        self.seal(open)?;
        // Not only those: an entry that fed an hour sealed earlier stays while it also feeds one
        // still open (a batch spanning hours). The checkpoint leaves only open points in the WAL.
        self.checkpoint()?;
        // Stored timestamps lie inside the retention window, far from either end of i64.
        let hours = (hour_start(start.max(0)), hour_start(end.min(i64::MAX / 2)));
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_quick_repair(true);
        let mut removed = 0;
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut index = txn.open_table(CHUNK_HOURS)?;
            for group in ids.chunk_by(|a, b| block::group_of(*a) == block::group_of(*b)) {
                let g = block::group_of(group[0]);
                for (hour, bytes) in crate::store::read_blocks(&chunks, g, hours.0, hours.1)? {
                    let mut gone = 0;
                    let mut kept = Vec::new();
                    for (id, range) in block::index(&bytes)? {
                        let chunk = &bytes[range];
                        if group.binary_search(&id).is_err() {
                            kept.push((id, chunk.to_vec()));
                            continue;
                        }
                        let points = codec::decode(chunk)?;
                        let left: Vec<Point> =
                            points.iter().filter(|p| p.0 < start || p.0 > end).copied().collect();
                        gone += (points.len() - left.len()) as u64;
                        if left.len() == points.len() {
                            kept.push((id, chunk.to_vec()));
                        } else if !left.is_empty() {
                            kept.push((id, codec::encode(&left)));
                        }
                    }
                    if gone > 0 {
                        block::put(&mut chunks, &mut index, (g, hour), &kept)?;
                        removed += gone;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(removed)
    }
}
