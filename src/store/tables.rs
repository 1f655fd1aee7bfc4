//! Every redb table perfd keeps, and the on-disk layout of each.
//!
//! ```text
//! META          &str            -> &[u8]   "schema_version" (u32 LE), "next_series_id" (u64 LE)
//! SERIES_BY_KEY &str            -> u64     canonical series key (model::SeriesKey::canonical) -> id
//! SERIES_BY_ID  u64             -> &str    id -> canonical key
//! CHUNKS        (u64, i64, u32) -> &[u8]   (series group, hour start ms, part) -> part of a chunk block
//! CHUNK_HOURS   (i64, u64)      -> ()      (hour start ms, series group): the retention index
//! PURGE         u64             -> ()      series group whose blocks may still hold chunks of
//!                                          deleted series; emptied by the writer (`writer::purge`)
//! WAL           u64             -> &[u8]   sequence -> one batch of accepted points of open hours
//! CACHE_SNAPSHOT &str           -> &[u8]   full cache key -> L1 entry saved at shutdown (rmp-serde, named)
//! THRESHOLDS    u64             -> &[u8]   id -> alert threshold (rmp-serde, named)
//! SILENCES      u64             -> &[u8]   id -> silence (rmp-serde, named)
//! ALERT_EVENTS  u64             -> &[u8]   id (increasing) -> alert state change (rmp-serde, named)
//! ALERT_STATES  u64             -> &[u8]   threshold id -> the event that left its alert firing (rows
//!                                          only for firing alerts; restored on start)
//! PROFILES      u64             -> &[u8]   execution id -> finished execution profile (rmp-serde, named)
//! PROFILES_BY_FINISH (i64, u64) -> ()      (finished ms, execution id): windows and retention;
//!                                          derived from PROFILES (rebuilt on open when they
//!                                          differ in length, so backups leave it out)
//! ```
//!
//! A WAL batch is `varint series_count`, then per series `varint id` and its points, raw or as a
//! codec chunk (see `wal::encode_wal`). A WAL entry is deleted once every open hour it fed is sealed
//! into `CHUNKS`. A series' group is `id / block::GROUP_SIZE`; tuple keys sort numerically, so one
//! group's blocks are contiguous and in time order. Each block (`store::block`) holds one codec
//! chunk per series and is split into parts of at most `block::PART_SIZE` bytes.

use redb::TableDefinition;

/// Bumped when a table's layout changes incompatibly; perfd refuses to open a newer file and a
/// daemon takes an older one to this version as it opens it.
/// - 1: the first layout.
/// - 2: chunks may carry the "no value falls" flag (`codec.rs`), which a perfd of schema 1
///   rejects as an unknown chunk format. `perfd check --downgrade` takes a file back to 1
///   (`store::downgrade`).
pub const SCHEMA_VERSION: u32 = 2;

pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub const SERIES_BY_KEY: TableDefinition<&str, u64> = TableDefinition::new("series_by_key");
pub const SERIES_BY_ID: TableDefinition<u64, &str> = TableDefinition::new("series_by_id");
pub const CHUNKS: TableDefinition<(u64, i64, u32), &[u8]> = TableDefinition::new("chunks");
pub const CHUNK_HOURS: TableDefinition<(i64, u64), ()> = TableDefinition::new("chunk_hours");
pub const PURGE: TableDefinition<u64, ()> = TableDefinition::new("purge");
pub const WAL: TableDefinition<u64, &[u8]> = TableDefinition::new("wal");
pub const CACHE_SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("cache_snapshot");
pub const THRESHOLDS: TableDefinition<u64, &[u8]> = TableDefinition::new("thresholds");
pub const SILENCES: TableDefinition<u64, &[u8]> = TableDefinition::new("silences");
pub const ALERT_EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_events");
pub const ALERT_STATES: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_states");
pub const PROFILES: TableDefinition<u64, &[u8]> = TableDefinition::new("profiles");
pub const PROFILES_BY_FINISH: TableDefinition<(i64, u64), ()> = TableDefinition::new("profiles_by_finish");
