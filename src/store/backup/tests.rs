use super::*;
use crate::config::Config;
use crate::store::testing::{chunk_ids, forget_gone, purge_list, two_sealed_series};
use crate::writer::WriterHandle;
use std::sync::Arc;

/// A backup taken after a series delete but before its purge ended holds the dead chunks;
/// it must also hold the purge list, or the restored file keeps them until a compaction
/// (backups left `PURGE` out before).
#[test]
fn a_restored_backup_finishes_the_purge_its_source_had_pending() {
    let dir = tempfile::tempdir().unwrap();
    two_sealed_series(dir.path());
    let file = dir.path().join("b.pfbk");
    {
        let store = Store::open(dir.path()).unwrap();
        forget_gone(&store, true);
        write(&store, &file).unwrap();
    }
    let other = tempfile::tempdir().unwrap();
    restore(&file, other.path(), false).unwrap();
    let store = Arc::new(Store::open(other.path()).unwrap());
    assert_eq!(purge_list(&store), vec![0], "the purge list came along");
    assert_eq!(chunk_ids(&store), vec![1, 2], "the dead chunk as well");
    let cfg = Config::for_test(other.path());
    let writer = WriterHandle::start(store.clone(), cfg.writer.clone(), cfg.storage.clone()).unwrap();
    // Stopping runs a maintenance round, which purges a slice (enough for one block).
    writer.shutdown();
    assert_eq!(chunk_ids(&store), vec![2], "the restored perfd purged it");
    assert!(purge_list(&store).is_empty());
}
