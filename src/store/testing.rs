//! Test support for the store's own tests: a file with sealed blocks shared by two series, and
//! the state a series delete leaves behind before its purge has run.

use super::Store;
use super::tables::*;
use crate::config::Config;
use crate::ingest::BatchBuilder;
use crate::model::{HOUR_MS, Point, TimeBounds, hour_start, now_ms};
use crate::query::{Selector, select};
use crate::writer::WriterHandle;
use redb::{ReadableDatabase, ReadableTable};
use std::path::Path;
use std::sync::Arc;

/// Writes `m{k="gone"}` and `m{k="kept"}` (ids 1 and 2, one block group) with the same 2,000
/// points over closed hours, seals them and stops the writer. Returns the points.
pub fn two_sealed_series(dir: &Path) -> Vec<Point> {
    let cfg = Config::for_test(dir);
    let now = now_ms();
    let t0 = hour_start(now) - 3 * HOUR_MS;
    let points: Vec<Point> = (0..2000).map(|i| (t0 + i * 1000, i as f64)).collect();
    let store = Arc::new(Store::open(dir).unwrap());
    let writer = WriterHandle::start(store, cfg.writer.clone(), cfg.storage.clone()).unwrap();
    let mut b = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
    for p in &points {
        b.push("m", &[("k", "gone")], *p).unwrap();
        b.push("m", &[("k", "kept")], *p).unwrap();
    }
    writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
    writer.seal_all().unwrap();
    writer.shutdown();
    points
}

/// Takes `m{k="gone"}` out of the series tables as a delete does, without a writer, so no
/// purge can run: its chunks stay in their blocks. With `listed`, its group goes into `PURGE`
/// as the delete's commit puts it (the state until the purge has run); without, the state an
/// older perfd left, whose deletes had no purge.
pub fn forget_gone(store: &Store, listed: bool) {
    let gone = select(store, &Selector::parse(r#"m{k="gone"}"#).unwrap());
    let txn = store.db().unwrap().begin_write().unwrap();
    {
        let mut by_key = txn.open_table(SERIES_BY_KEY).unwrap();
        let mut by_id = txn.open_table(SERIES_BY_ID).unwrap();
        let mut purge = txn.open_table(PURGE).unwrap();
        for (id, key) in &gone {
            by_key.remove(key.canonical().as_str()).unwrap();
            by_id.remove(id).unwrap();
            if listed {
                purge.insert(super::block::group_of(*id), ()).unwrap();
            }
        }
    }
    txn.commit().unwrap();
}

/// The series ids of every chunk stored in block group 0.
pub fn chunk_ids(store: &Store) -> Vec<u64> {
    let txn = store.db().unwrap().begin_read().unwrap();
    let chunks = txn.open_table(CHUNKS).unwrap();
    let blocks = super::read_blocks(&chunks, 0, i64::MIN, i64::MAX).unwrap();
    blocks.iter().flat_map(|(_, b)| super::block::index(b).unwrap()).map(|(id, _)| id).collect()
}

/// The groups listed in `PURGE`.
pub fn purge_list(store: &Store) -> Vec<u64> {
    let txn = store.db().unwrap().begin_read().unwrap();
    let purge = txn.open_table(PURGE).unwrap();
    purge.iter().unwrap().map(|r| r.unwrap().0.value()).collect()
}
