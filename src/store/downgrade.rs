//! Offline downgrade (`perfd check --downgrade`): a database taken back to schema 1, which the
//! perfd built before schema 2 opens.
//!
//! Schema 2 only added the "no value falls" flag to chunks (`codec::clear_never_falls`), an
//! optimisation an older perfd rejects as an unknown chunk format. Clearing it in every sealed
//! block and every WAL batch, and writing version 1, is the whole way back: the chunks keep their
//! lengths, so every block keeps its parts. The work commits in batches and the version is
//! written last, so a downgrade that is stopped part way is simply run again.

use super::Store;
use super::tables::*;
use super::{block, codec, wal};
use crate::error::Result;
use redb::{ReadableDatabase, ReadableTable};

/// Blocks (or WAL batches) rewritten per transaction.
const BATCH: usize = 256;

/// What [`Store::downgrade`] changed.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct Downgrade {
    pub from_schema: u32,
    pub to_schema: u32,
    pub blocks_rewritten: u64,
    pub wal_batches_rewritten: u64,
    /// Chunks whose flag was cleared (in blocks and WAL batches).
    pub chunks_cleared: u64,
}

impl Store {
    /// Takes the database to schema 1. Offline only (open the store with
    /// [`Store::open_existing`], which leaves the version alone).
    pub fn downgrade(&self) -> Result<Downgrade> {
        let mut done = Downgrade { from_schema: self.schema_version()?, to_schema: 1, ..Default::default() };
        let mut from = (0u64, i64::MIN);
        while let Some(next) = self.downgrade_blocks(from, &mut done)? {
            from = next;
        }
        let mut from = 0u64;
        while let Some(next) = self.downgrade_wal(from, &mut done)? {
            from = next;
        }
        let txn = self.db()?.begin_write()?;
        txn.open_table(META)?.insert("schema_version", 1u32.to_le_bytes().as_slice())?;
        txn.commit()?;
        Ok(done)
    }

    /// The schema version the file is stamped with.
    pub fn schema_version(&self) -> Result<u32> {
        super::stored_schema(&self.db()?.begin_read()?)
    }

    /// Up to [`BATCH`] blocks from `from` (group, hour) on; where the next batch starts, if any.
    fn downgrade_blocks(&self, from: (u64, i64), done: &mut Downgrade) -> Result<Option<(u64, i64)>> {
        let txn = self.db()?.begin_write()?;
        let next = {
            let mut table = txn.open_table(CHUNKS)?;
            let mut blocks: Vec<((u64, i64), Vec<u8>)> = Vec::new();
            let mut next = None;
            for row in table.range((from.0, from.1, 0)..)? {
                let (k, v) = row?;
                let (group, hour, _) = k.value();
                let full = blocks.len() == BATCH;
                match blocks.last_mut() {
                    Some((at, bytes)) if *at == (group, hour) => bytes.extend_from_slice(v.value()),
                    _ if full => {
                        next = Some((group, hour));
                        break;
                    }
                    _ => blocks.push(((group, hour), v.value().to_vec())),
                }
            }
            for ((group, hour), mut bytes) in blocks {
                let mut cleared = 0;
                for (_, range) in block::index(&bytes)? {
                    cleared += u64::from(codec::clear_never_falls(&mut bytes[range]));
                }
                if cleared > 0 {
                    for (part, data) in block::parts(&bytes) {
                        table.insert((group, hour, part), data)?;
                    }
                    done.blocks_rewritten += 1;
                    done.chunks_cleared += cleared;
                }
            }
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Up to [`BATCH`] WAL batches from sequence `from` on; where the next run starts, if any.
    fn downgrade_wal(&self, from: u64, done: &mut Downgrade) -> Result<Option<u64>> {
        let txn = self.db()?.begin_write()?;
        let next = {
            let mut table = txn.open_table(WAL)?;
            let mut batches: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut next = None;
            for row in table.range(from..)? {
                let (k, v) = row?;
                if batches.len() == BATCH {
                    next = Some(k.value());
                    break;
                }
                batches.push((k.value(), v.value().to_vec()));
            }
            for (seq, mut bytes) in batches {
                let cleared = wal::clear_never_falls(&mut bytes)?;
                if cleared > 0 {
                    table.insert(seq, bytes.as_slice())?;
                    done.wal_batches_rewritten += 1;
                    done.chunks_cleared += cleared;
                }
            }
            next
        };
        txn.commit()?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::ingest::BatchBuilder;
    use crate::model::{HOUR_MS, Point, TimeBounds, hour_start, now_ms};
    use crate::store::HourData;
    use crate::writer::WriterHandle;
    use std::sync::Arc;

    /// One WAL batch decoded: each series' points.
    type WalBatch = Vec<(u64, Vec<Point>)>;

    /// Every point of series 1 and 2 in sealed hours, then every WAL batch, decoded (a store
    /// opened without a writer has not replayed its WAL).
    fn points(store: &Store) -> (Vec<Vec<Point>>, Vec<WalBatch>) {
        let now = now_ms();
        let hours = store.read_hours(&[1, 2], now - 10 * HOUR_MS, now + HOUR_MS).unwrap();
        let decode = |(_, h): (i64, HourData)| match h {
            HourData::Sealed(bytes) => codec::decode(&bytes).unwrap(),
            HourData::Points(p) => p,
        };
        let sealed = hours.into_iter().map(|s| s.into_iter().flat_map(decode).collect()).collect();
        let txn = store.db().unwrap().begin_read().unwrap();
        let wal_table = txn.open_table(WAL).unwrap();
        let batches = wal_table.iter().unwrap().map(|r| wal::decode_wal(r.unwrap().1.value()).unwrap());
        (sealed, batches.collect())
    }

    /// The format byte of every chunk in the file: sealed blocks, then WAL batches.
    fn formats(store: &Store) -> (Vec<u8>, Vec<u8>) {
        let txn = store.db().unwrap().begin_read().unwrap();
        let chunks = txn.open_table(CHUNKS).unwrap();
        let blocks = crate::store::read_blocks(&chunks, 0, i64::MIN, i64::MAX).unwrap();
        let sealed =
            blocks.iter().flat_map(|(_, b)| block::index(b).unwrap().into_iter().map(|(_, r)| b[r.start]));
        let mut in_wal = Vec::new();
        for row in txn.open_table(WAL).unwrap().iter().unwrap() {
            // A chunk's first byte is its format; flip the flag's bit to see which bytes it is.
            let bytes = row.unwrap().1.value().to_vec();
            let mut cleared = bytes.clone();
            wal::clear_never_falls(&mut cleared).unwrap();
            in_wal.extend(bytes.iter().zip(&cleared).filter(|(a, b)| a != b).map(|(a, _)| *a));
            let mut again = cleared.clone();
            assert_eq!(wal::clear_never_falls(&mut again).unwrap(), 0);
        }
        (sealed.collect(), in_wal)
    }

    #[test]
    fn a_downgraded_file_has_no_flag_and_the_same_points_and_a_daemon_upgrades_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::for_test(dir.path());
        let now = now_ms();
        let t0 = hour_start(now) - 3 * HOUR_MS;
        {
            let store = Arc::new(Store::open(dir.path()).unwrap());
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            let writer = WriterHandle::start(store.clone(), cfg.writer.clone(), cfg.storage.clone()).unwrap();
            let mut b = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
            for i in 0..2000 {
                b.push("c", &[("k", "up")], (t0 + i * 1000, i as f64)).unwrap(); // never falls
                b.push("c", &[("k", "saw")], (t0 + i * 1000, (i % 7) as f64)).unwrap();
            }
            writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
            writer.seal_all().unwrap();
            // The current hour stays open: its points go to the WAL, 8 or more as a chunk.
            let mut b = BatchBuilder::new(TimeBounds::new(now, 86_400_000));
            for i in 0..20 {
                b.push("c", &[("k", "up")], (hour_start(now) + i, i as f64)).unwrap();
            }
            writer.submit(b.finish(), true).unwrap().unwrap().blocking_recv().unwrap().unwrap();
            writer.shutdown();
        }
        let store = Store::open_existing(dir.path()).unwrap();
        let before = points(&store);
        assert_eq!((before.0[0].len(), before.0[1].len()), (2000, 2000));
        assert_eq!(before.1.iter().flatten().map(|(_, p)| p.len()).sum::<usize>(), 20);
        let (sealed, in_wal) = formats(&store);
        assert!(sealed.iter().any(|f| f & 0x02 != 0) && in_wal.iter().all(|f| f & 0x02 != 0), "{sealed:?}");
        assert!(!in_wal.is_empty());

        let done = store.downgrade().unwrap();
        assert_eq!((done.from_schema, done.to_schema), (SCHEMA_VERSION, 1));
        let flagged = sealed.iter().filter(|f| *f & 0x02 != 0).count() + in_wal.len();
        assert_eq!(done.chunks_cleared, flagged as u64);
        assert!(done.blocks_rewritten > 0 && done.wal_batches_rewritten > 0, "{done:?}");
        // What a perfd of schema 1 accepts: the version nibble and at most the XOR mode bit.
        let (sealed, in_wal) = formats(&store);
        assert!(sealed.iter().all(|f| f & 0x0E == 0) && in_wal.is_empty(), "{sealed:?}");
        assert_eq!(points(&store), before);
        assert_eq!(store.schema_version().unwrap(), 1);
        // Run again (as after a stop part way): nothing left to do.
        assert_eq!(store.downgrade().unwrap().chunks_cleared, 0);
        drop(store);

        // Offline opens leave it at 1; a daemon's open takes it to this schema.
        assert_eq!(Store::open_existing(dir.path()).unwrap().schema_version().unwrap(), 1);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(points(&store), before);
    }

    #[test]
    fn a_downgrade_commits_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let chunk = codec::encode(&[(0, 1.0), (1, 2.0)]);
        assert_eq!(chunk[0] & 0x02, 0x02);
        let blocks = BATCH as i64 * 2 + 3;
        let txn = store.db().unwrap().begin_write().unwrap();
        {
            let mut table = txn.open_table(CHUNKS).unwrap();
            let mut hours = txn.open_table(CHUNK_HOURS).unwrap();
            let mut wal_table = txn.open_table(WAL).unwrap();
            for h in 0..blocks {
                block::put(&mut table, &mut hours, (h as u64 % 3, h * HOUR_MS), &[(1, chunk.clone())])
                    .unwrap();
                wal_table.insert(h as u64, wal::encode_wal(&[(1, &[(0, 1.0); 9][..])]).as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let done = store.downgrade().unwrap();
        assert_eq!((done.blocks_rewritten, done.wal_batches_rewritten), (blocks as u64, blocks as u64));
        assert_eq!(done.chunks_cleared, 2 * blocks as u64);
        assert_eq!(store.downgrade().unwrap().chunks_cleared, 0);
    }
}
