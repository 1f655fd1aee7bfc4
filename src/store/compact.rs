//! Offline compaction (`perfd check --compact`): the database rewritten into a fresh file, less
//! the chunks of deleted series.

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable};

impl Store {
    /// Rewrites the database into a fresh file, table by table in key order, and replaces the
    /// old file with it (fsync, then rename). redb's own `compact` moves pages but keeps
    /// half-empty leaves and, measured here, sometimes twice the needed file size. Offline only:
    /// it needs exclusive access.
    pub fn compact(self) -> Result<()> {
        let path = self.path.clone();
        let tmp = path.with_extension("redb.compact");
        let _ = std::fs::remove_file(&tmp);
        {
            let mut dst = Database::builder().create(&tmp)?;
            let src = self.db()?.begin_read()?;
            let mut txn = dst.begin_write()?;
            txn.set_quick_repair(true);
            copy_table(&src, &txn, META)?;
            copy_table(&src, &txn, SERIES_BY_KEY)?;
            copy_table(&src, &txn, SERIES_BY_ID)?;
            // Every chunk of a deleted series is left out, so nothing is left to purge.
            let dropped = copy_live_chunks(&src, &txn)?;
            if dropped > 0 {
                log::info!("compaction dropped the chunks of {dropped} deleted series-hours");
            }
            copy_table(&src, &txn, WAL)?;
            copy_table(&src, &txn, CACHE_SNAPSHOT)?;
            for t in [THRESHOLDS, SILENCES, ALERT_EVENTS, ALERT_STATES, PROFILES] {
                copy_table(&src, &txn, t)?;
            }
            copy_table(&src, &txn, PROFILES_BY_FINISH)?;
            txn.commit()?;
            drop(src);
            // The file grows ahead of its contents while written; compaction trims the tail.
            while dst.compact().map_err(|e| Error::Store(e.into()))? {}
        }
        drop(self);
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        // Measured here: the new file gives back its spare tail only when reopened and closed
        // once more without a quick-repair commit.
        let db = Database::builder().open(&path)?;
        db.begin_write()?.abort()?;
        drop(db);
        Ok(())
    }
}

/// Copies the chunk blocks and their retention index, each block without the chunks of series
/// no longer in `SERIES_BY_ID` (deleted: see `WriterHandle::delete_series`), and without the
/// blocks left empty; returns how many chunks were left out. Blocks are read from `CHUNKS`
/// itself (its key order puts a block's parts together), so none is lost to a missing index row.
fn copy_live_chunks(src: &redb::ReadTransaction, dst: &redb::WriteTransaction) -> Result<u64> {
    let series = src.open_table(SERIES_BY_ID)?;
    let mut to = dst.open_table(CHUNKS)?;
    let mut hours = dst.open_table(CHUNK_HOURS)?;
    let mut dropped = 0;
    let mut block: Option<((u64, i64), Vec<u8>)> = None;
    let mut flush = |block: Option<((u64, i64), Vec<u8>)>| -> Result<()> {
        let Some((at, bytes)) = block else { return Ok(()) };
        let (live, left_out) = super::block::retain(&bytes, |id| Ok(series.get(id)?.is_some()))?;
        dropped += left_out;
        super::block::put(&mut to, &mut hours, at, &live)
    };
    for row in src.open_table(CHUNKS)?.iter()? {
        let (k, v) = row?;
        let (group, hour, _) = k.value();
        match &mut block {
            Some((at, bytes)) if *at == (group, hour) => bytes.extend_from_slice(v.value()),
            _ => flush(block.replace(((group, hour), v.value().to_vec())))?,
        }
    }
    flush(block)?;
    Ok(dropped)
}

/// Copies every row of one table between databases.
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    src: &redb::ReadTransaction,
    dst: &redb::WriteTransaction,
    def: redb::TableDefinition<K, V>,
) -> Result<()> {
    let from = src.open_table(def)?;
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::BatchBuilder;
    use crate::model::Point;
    use crate::model::TimeBounds;
    use crate::writer::WriterHandle;
    use std::sync::Arc;

    #[test]
    fn compaction_into_a_fresh_file_keeps_every_point() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::for_test(dir.path());
        let now = crate::model::now_ms();
        let t0 = crate::model::hour_start(now) - 3 * crate::model::HOUR_MS;
        let want: Vec<Point> = (0..5000).map(|i| (t0 + i * 997, (i % 300) as f64 / 4.0)).collect();
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            let writer = WriterHandle::start(store.clone(), cfg.writer.clone(), cfg.storage.clone()).unwrap();
            let mut b = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
            for p in &want {
                b.push("m", &[("k", "v")], *p).unwrap();
            }
            writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
            writer.seal_all().unwrap();
            writer.shutdown();
        }
        Store::open(dir.path()).unwrap().compact().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sel = crate::query::Selector::parse("m").unwrap();
        let got = crate::query::read_raw(&store, &sel, t0, now, 1_000_000).unwrap();
        assert_eq!(got[0].points, want);
        assert!(!dir.path().join("perfd.redb.compact").exists());
    }

    /// The chunks of a series deleted without a purge (by a perfd before purging existed) stay
    /// in their blocks, out of reach, until compaction leaves them out; the other series of the
    /// block keep every point. (Taken out of the tables directly: a writer would purge them.)
    #[test]
    fn compaction_leaves_out_the_chunks_of_deleted_series() {
        use crate::store::testing::{chunk_ids, forget_gone, two_sealed_series};
        let dir = tempfile::tempdir().unwrap();
        let points = two_sealed_series(dir.path());
        {
            let store = Store::open(dir.path()).unwrap();
            forget_gone(&store, false);
            assert_eq!(chunk_ids(&store).len(), 2, "two series-hours per block, one of them deleted");
        }
        Store::open(dir.path()).unwrap().compact().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(chunk_ids(&store).len(), 1, "the deleted series' chunk is gone");
        let got = crate::query::read_raw(
            &store,
            &crate::query::Selector::parse("m").unwrap(),
            0,
            crate::model::now_ms(),
            1_000_000,
        );
        let got = got.unwrap();
        assert_eq!((got.len(), got[0].labels["k"].as_str()), (1, "kept"));
        assert_eq!(got[0].points, points);
    }
}
