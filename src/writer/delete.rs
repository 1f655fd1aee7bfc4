//! Deleting: whole series (their keys go at once, their chunks with the purge, `purge.rs`), or
//! the points of some series within a time range (Prometheus' `delete_series` with `start` and
//! `end`), rewritten out of their blocks a slice at a time, with the writer's other messages
//! handled in between, and answered when the last slice has committed.

use super::purge::BLOCKS_PER_READ;
use super::*;
use crate::store::read_some_blocks;

/// How long a slice of a range delete works before its durable commit, which takes about as
/// long again (the pages it dirtied): a write that arrives meanwhile waits for one slice at most.
/// Twice a purge slice, since a client waits for the delete; with 25 ms slices writes waited up
/// to 50 ms (`benches/purge.py`).
const SLICE: Duration = Duration::from_millis(10);

/// A range delete under way.
pub(super) struct RangeDelete {
    /// The series, sorted: a group's ids are adjacent.
    ids: Vec<u64>,
    /// The times (ms, inclusive) whose points go.
    range: (i64, i64),
    /// The hours of the blocks that may hold them, first and last.
    hours: (i64, i64),
    /// Where the next slice starts: the index in `ids` of its group's first id, and an hour.
    at: (usize, i64),
    removed: u64,
    reply: Sender<Result<u64>>,
}

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
                    .and_then(|()| self.begin_delete(ids, range).map_err(|e| self.failed(e)));
                match r {
                    Ok((ids, hours)) => {
                        let at = (0, hours.0);
                        self.deleting.push_back(RangeDelete { ids, range, hours, at, removed: 0, reply: t });
                    }
                    Err(e) => {
                        let _ = t.send(Err(e));
                    }
                }
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

    /// Starts removing the points of `ids` from `start` to `end` (inclusive): their open hours in
    /// the range are sealed and the WAL checkpointed, so no WAL entry still holds a point to be
    /// removed for a replay to bring back. Returns the ids sorted and the hours to rewrite.
    /// (Points written after this are not the delete's: those of a block no slice has reached
    /// yet go too, as if written before it; after a crash the WAL may bring them back.)
    fn begin_delete(
        &mut self,
        mut ids: Vec<u64>,
        (start, end): (i64, i64),
    ) -> Result<(Vec<u64>, (i64, i64))> {
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
        Ok((ids, (hour_start(start.max(0)), hour_start(end.min(i64::MAX / 2)))))
    }

    /// Whether range deletes are under way.
    pub(super) fn deleting(&self) -> bool {
        !self.deleting.is_empty()
    }

    /// One slice of the oldest range delete; answers it when its last slice has committed, or
    /// with the error that stopped it (the points removed by earlier slices stay removed).
    pub(super) fn delete_slice(&mut self) {
        self.delete_for(SLICE);
    }

    fn delete_for(&mut self, budget: Duration) {
        let Some(mut job) = self.deleting.pop_front() else { return };
        let r =
            self.fault.check().and_then(|()| self.delete_some(&mut job, budget).map_err(|e| self.failed(e)));
        match r {
            Ok(false) => self.deleting.push_front(job),
            Ok(true) => {
                let _ = job.reply.send(Ok(job.removed));
            }
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }

    /// Answers the range deletes still under way at a shutdown.
    pub(super) fn abandon_deletes(&mut self) {
        for job in self.deleting.drain(..) {
            let _ = job.reply.send(Err(Error::Unavailable(format!(
                "perfd is stopping: the delete removed {} points before it stopped; send it again to finish it",
                job.removed
            ))));
        }
    }

    /// Answers the range deletes under way with the store's failure, rather than keep their
    /// clients waiting for the store to come back (the points removed so far stay removed).
    pub(super) fn refuse_deletes(&mut self) {
        while let Some(job) = self.deleting.pop_front() {
            let why =
                self.fault.check().err().unwrap_or_else(|| Error::Unavailable("the store failed".into()));
            let _ = job.reply.send(Err(why));
        }
    }

    /// Rewrites `job`'s blocks without its points for about `budget`, in one durable commit;
    /// returns whether it is done.
    fn delete_some(&mut self, job: &mut RangeDelete, budget: Duration) -> Result<bool> {
        let started = Instant::now();
        let mut txn = self.store.db()?.begin_write()?;
        txn.set_quick_repair(true);
        let (mut at, mut removed) = (job.at, 0);
        {
            let mut chunks = txn.open_table(CHUNKS)?;
            let mut index = txn.open_table(CHUNK_HOURS)?;
            while at.0 < job.ids.len() {
                let g = block::group_of(job.ids[at.0]);
                let n = job.ids[at.0..].iter().take_while(|id| block::group_of(**id) == g).count();
                let group = &job.ids[at.0..at.0 + n];
                let blocks = read_some_blocks(&chunks, g, (at.1, job.hours.1), BLOCKS_PER_READ)?;
                for (hour, bytes) in &blocks {
                    let (kept, gone) = without_points(bytes, group, job.range)?;
                    if gone > 0 {
                        block::put(&mut chunks, &mut index, (g, *hour), &kept)?;
                        removed += gone;
                    }
                }
                at = match blocks.last() {
                    Some(&(hour, _)) if blocks.len() == BLOCKS_PER_READ && hour < job.hours.1 => {
                        (at.0, hour + 1)
                    }
                    _ => (at.0 + n, job.hours.0),
                };
                if started.elapsed() >= budget {
                    break;
                }
            }
        }
        if removed > 0 {
            txn.commit()?;
        } else {
            // Nothing changed: no fsync to pay for.
            txn.abort()?;
        }
        job.at = at;
        job.removed += removed;
        Ok(at.0 == job.ids.len())
    }
}

/// A block's chunks without the points of `ids` from `start` to `end` (inclusive), and how many
/// points went. A chunk wholly inside or outside the range is judged by its header alone.
fn without_points(bytes: &[u8], ids: &[u64], (start, end): (i64, i64)) -> Result<(block::Chunks, u64)> {
    let mut gone = 0;
    let mut kept = Vec::new();
    for (id, range) in block::index(bytes)? {
        let chunk = &bytes[range];
        if ids.binary_search(&id).is_err() {
            kept.push((id, chunk.to_vec()));
            continue;
        }
        let h = codec::header(chunk)?;
        if h.last_ts < start || h.first_ts > end {
            kept.push((id, chunk.to_vec()));
        } else if h.first_ts >= start && h.last_ts <= end {
            gone += u64::from(h.count);
        } else {
            let points = codec::decode(chunk)?;
            let left: Vec<Point> = points.iter().filter(|p| p.0 < start || p.0 > end).copied().collect();
            gone += (points.len() - left.len()) as u64;
            if !left.is_empty() {
                kept.push((id, codec::encode(&left)));
            }
        }
    }
    Ok((kept, gone))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::BatchBuilder;
    use crate::model::TimeBounds;
    use crate::query::{Selector, read_raw};

    /// Series `s0`…`s69` (two block groups), a point every 20 minutes over 70 closed hours
    /// (more than a read's [`BLOCKS_PER_READ`]); sealed. Returns the first hour and the points.
    fn write(w: &mut Writer) -> (i64, Vec<Point>) {
        let now = now_ms();
        let t0 = hour_start(now) - 72 * HOUR_MS;
        let points: Vec<Point> = (0..70 * 3).map(|i| (t0 + i * 20 * 60_000, i as f64)).collect();
        let mut b = BatchBuilder::new(TimeBounds::new(now, 30 * 24 * HOUR_MS));
        for s in 0..70 {
            for p in &points {
                b.push(&format!("s{s}"), &[], *p).unwrap();
            }
        }
        w.step(vec![WriterMsg::Write { batch: b.finish(), reply: None }]);
        let keys = w.first_seq.keys().copied().collect();
        w.seal(keys).unwrap();
        (t0, points)
    }

    fn read(w: &Writer, name: &str) -> Vec<Point> {
        let got = read_raw(&w.store, &Selector::parse(name).unwrap(), 0, now_ms(), 10_000_000).unwrap();
        got.into_iter().next().map(|s| s.points).unwrap_or_default()
    }

    /// A range delete over two groups runs in slices (each the smallest: one read), a write
    /// between them is taken, and the answer counts every point removed: cut out of chunks the
    /// range's ends split, and whole chunks judged by their headers.
    #[test]
    fn a_range_delete_runs_in_slices_with_writes_between() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut w = Writer::for_test(&store);
        let (t0, points) = write(&mut w);
        let even: Vec<u64> = (0..70)
            .step_by(2)
            .map(|s| crate::query::select(&store, &Selector::parse(&format!("s{s}")).unwrap())[0].0)
            .collect();
        assert!(even.iter().any(|id| block::group_of(*id) == 1), "the series span two groups");
        let range = (t0 + 30 * 60_000, t0 + 69 * HOUR_MS + 10 * 60_000);
        let (t, answer) = crossbeam_channel::bounded(1);
        w.step(vec![WriterMsg::DeletePoints(even, range, t)]);
        let mut slices = 0;
        while w.deleting() {
            let late = (t0 + 71 * HOUR_MS + slices, 1.0);
            let mut b = BatchBuilder::new(TimeBounds::new(now_ms(), 30 * 24 * HOUR_MS));
            b.push("between", &[], late).unwrap();
            w.step(vec![WriterMsg::Write { batch: b.finish(), reply: None }]);
            w.delete_for(Duration::ZERO);
            slices += 1;
            assert!(slices < 20, "the delete does not end");
        }
        assert_eq!(slices, 4, "two reads for each of two groups");
        let left: Vec<Point> = points.iter().filter(|p| p.0 < range.0 || p.0 > range.1).copied().collect();
        let want = 35 * (points.len() - left.len()) as u64;
        assert_eq!(answer.recv().unwrap().unwrap(), want);
        for s in 0..70 {
            let name = format!("s{s}");
            assert_eq!(read(&w, &name), if s % 2 == 0 { left.clone() } else { points.clone() }, "{name}");
        }
        assert_eq!(read(&w, "between").len(), 4, "the writes between slices");
    }

    /// A stop answers a range delete under way rather than leave its client waiting.
    #[test]
    fn a_shutdown_answers_a_range_delete_under_way() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut w = Writer::for_test(&store);
        let (t0, _) = write(&mut w);
        let (t, answer) = crossbeam_channel::bounded(1);
        w.step(vec![WriterMsg::DeletePoints(vec![1, 2], (t0, t0 + 70 * HOUR_MS), t)]);
        w.delete_for(Duration::ZERO);
        assert!(w.deleting(), "one read (64 hours of 3 points, two series) of 70 done");
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(WriterMsg::Shutdown(stop)).unwrap();
        w.run(rx);
        stopped.recv().unwrap();
        let e = answer.recv().unwrap().unwrap_err().to_string();
        assert!(e.contains("removed 384 points before it stopped"), "{e}");
    }
}
