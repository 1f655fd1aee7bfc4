//! The store: the redb file plus the in-memory state readers need (catalog, open hours).
//!
//! Only the writer thread (`writer.rs`) mutates anything here; HTTP handlers and the sampler read.
//! Readers must see every acknowledged point: the writer commits first and then publishes to
//! `open`/`catalog`; a reader copies `open` first and then begins its read transaction, so a
//! point being sealed is seen in `open`, in `CHUNKS`, or in both (duplicates are dropped by
//! timestamp), never in neither.

pub mod backup;
mod bits;
pub mod block;
pub mod codec;
mod compact;
mod downgrade;
pub mod records;
mod reopen;
pub mod retention;
mod snapshot;
pub mod tables;
#[cfg(test)]
pub(crate) mod testing;
pub mod wal;

pub use downgrade::Downgrade;
pub use snapshot::encode_cache_entry;

use crate::error::{Error, Result};
use crate::model::{Point, SeriesKey};
use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use reopen::{Closed, met_a_reopen};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tables::*;

/// Points of hours not yet sealed: series id → hour start → points in arrival order.
pub type OpenHours = HashMap<u64, BTreeMap<i64, Vec<Point>>>;

/// Every known series, for selector matching without touching redb.
#[derive(Default)]
pub struct Catalog {
    /// Ordered, for selector matching by name prefix.
    pub by_key: BTreeMap<String, (u64, Arc<SeriesKey>)>,
    /// The same keys hashed, for the writer's exact lookups on every ingested series.
    pub ids: HashMap<Box<str>, u64, foldhash::fast::RandomState>,
}

impl Catalog {
    pub fn insert(&mut self, canonical: String, id: u64, key: Arc<SeriesKey>) {
        self.ids.insert(canonical.as_str().into(), id);
        self.by_key.insert(canonical, (id, key));
    }

    pub fn remove(&mut self, canonical: &str) {
        self.ids.remove(canonical);
        self.by_key.remove(canonical);
    }

    /// Series whose name is `name` (exactly), in key order.
    pub fn with_name<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (u64, &'a Arc<SeriesKey>)> + 'a {
        let exact = self.by_key.get(name).map(|(id, k)| (*id, k));
        let prefix = format!("{name}{{");
        let labelled = self
            .by_key
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, (id, k))| (*id, k));
        exact.into_iter().chain(labelled)
    }
}

pub struct Store {
    /// `None` only while [`Store::reopen`] replaces it; see [`Store::db`].
    db: RwLock<Option<Arc<Database>>>,
    pub path: PathBuf,
    /// Written by the writer only, after the commit that made the points durable.
    pub open: RwLock<OpenHours>,
    /// Written by the writer only, after the commit that created the series.
    pub catalog: RwLock<Catalog>,
    /// Next id for thresholds, silences and alert events (one sequence for all three).
    pub next_record_id: std::sync::atomic::AtomicU64,
    /// Bumped by each reopen between replacing memory and publishing the new file, so a read
    /// that copied memory before and opened the file after can tell (see `read_hours`).
    reopens: std::sync::atomic::AtomicU64,
    /// Set while [`Store::reopen`] runs, so readers wait for it instead of failing.
    reopening: std::sync::atomic::AtomicBool,
    /// Why the last reopen failed, while the database stays closed: what [`Store::db`] answers.
    closed: parking_lot::Mutex<Option<Closed>>,
}

/// One sealed or open hour of one series as a reader sees it.
pub enum HourData {
    /// A sealed chunk with no open points on top: its header may answer aggregates.
    Sealed(Vec<u8>),
    /// Decoded, merged and normalized points.
    Points(Vec<Point>),
}

impl Store {
    /// [`Store::open`] for the offline commands (`check`, `backup`): a data dir without a
    /// database is an error, where it used to get an empty one (and an empty backup).
    pub fn open_existing(dir: &Path) -> Result<Store> {
        if !dir.join("perfd.redb").exists() {
            return Err(Error::NotFound(format!(
                "no perfd database in {} (is --data-dir right?)",
                dir.display()
            )));
        }
        Store::open_as(dir, false)
    }

    /// Opens (or creates) `dir/perfd.redb` to serve it: checks the schema version, takes an
    /// older file to this perfd's (see `tables::SCHEMA_VERSION`) and loads the catalog.
    pub fn open(dir: &Path) -> Result<Store> {
        Store::open_as(dir, true)
    }

    /// `upgrade`: a daemon, which writes this schema's chunks. The offline commands leave an
    /// older file's version alone, so `check`, `backup` or `check --downgrade` do not take a
    /// file away from the older perfd it belongs to.
    fn open_as(dir: &Path, upgrade: bool) -> Result<Store> {
        std::fs::create_dir_all(dir)
            .map_err(|e| std::io::Error::new(e.kind(), format!("data dir {}: {e}", dir.display())))?;
        let path = dir.join("perfd.redb");
        let db = open_database(&path, true)?;
        let store = Store {
            db: RwLock::new(Some(Arc::new(db))),
            path,
            open: RwLock::default(),
            catalog: RwLock::default(),
            next_record_id: Default::default(),
            reopens: Default::default(),
            reopening: Default::default(),
            closed: Default::default(),
        };
        store.init_tables(upgrade)?;
        store.load_catalog()?;
        store.next_record_id.store(records::max_id(&store)? + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(store)
    }

    fn init_tables(&self, upgrade: bool) -> Result<()> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_quick_repair(true);
        {
            let mut meta = txn.open_table(META)?;
            let stored = meta.get("schema_version")?.map(|v| v.value().to_vec());
            match stored {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                }
                Some(v) => {
                    let version = u32::from_le_bytes(
                        v.as_slice()
                            .try_into()
                            .map_err(|_| Error::Corrupt("meta.schema_version is not 4 bytes".into()))?,
                    );
                    if version > SCHEMA_VERSION {
                        return Err(Error::Conflict(format!(
                            "database schema version {version} is newer than this perfd ({SCHEMA_VERSION})"
                        )));
                    }
                    if version < SCHEMA_VERSION && upgrade {
                        log::info!("database schema version {version} taken to {SCHEMA_VERSION}");
                        meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                    }
                }
            }
            txn.open_table(SERIES_BY_KEY)?;
            txn.open_table(SERIES_BY_ID)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(CHUNK_HOURS)?;
            txn.open_table(PURGE)?;
            txn.open_table(WAL)?;
            txn.open_table(CACHE_SNAPSHOT)?;
            txn.open_table(THRESHOLDS)?;
            txn.open_table(SILENCES)?;
            txn.open_table(ALERT_EVENTS)?;
            txn.open_table(ALERT_STATES)?;
            txn.open_table(PROFILES)?;
        }
        records::index_profiles(&txn)?;
        records::build_alert_states(&txn)?;
        txn.commit()?;
        Ok(())
    }

    fn load_catalog(&self) -> Result<()> {
        *self.catalog.write() = read_catalog(&self.db()?.begin_read()?)?;
        Ok(())
    }

    /// A fresh id for a threshold, silence or alert event.
    pub fn new_record_id(&self) -> u64 {
        self.next_record_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn series_count(&self) -> usize {
        self.catalog.read().by_key.len()
    }

    /// The hours of `series` that overlap `[start, end]`, oldest first, each either a sealed chunk
    /// or merged points. Points outside `[start, end]` may remain; callers filter.
    /// A read that meets a reopen (see `writer::fault`) is tried again, up to twice.
    pub fn read_hours(&self, series: &[u64], start: i64, end: i64) -> Result<Vec<Vec<(i64, HourData)>>> {
        let mut tries = 0;
        loop {
            match self.read_hours_once(series, start, end) {
                Err(e) if tries < 2 && met_a_reopen(&e) => {
                    tries += 1;
                    // A handle that failed just before the writer began its reopen: let it begin.
                    std::thread::sleep(Duration::from_millis(5));
                }
                read => return read,
            }
        }
    }

    fn read_hours_once(&self, series: &[u64], start: i64, end: i64) -> Result<Vec<Vec<(i64, HourData)>>> {
        let (h0, h1) = (crate::model::hour_start(start), crate::model::hour_start(end));
        let reopens = self.reopens.load(Ordering::Acquire);
        // Copy open points before the read transaction starts (see the module doc).
        let open: Vec<BTreeMap<i64, Vec<Point>>> = {
            let open = self.open.read();
            series
                .iter()
                .map(|id| {
                    open.get(id)
                        .map(|hours| hours.range(h0..=h1).map(|(h, p)| (*h, p.clone())).collect())
                        .unwrap_or_default()
                })
                .collect()
        };
        let txn = self.db()?.begin_read()?;
        if self.reopens.load(Ordering::Acquire) != reopens {
            // Memory from before a reopen and the file from after may both lack a seal the
            // reopen undid (seal commits are not durable).
            return Err(Error::Unavailable("the database was reopened during this read; retry".into()));
        }
        let chunks = txn.open_table(CHUNKS)?;
        // Each block is read and indexed once, however many of its series are asked for.
        let mut sealed: Vec<BTreeMap<i64, Vec<u8>>> = vec![BTreeMap::new(); series.len()];
        let mut by_group: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, id) in series.iter().enumerate() {
            by_group.entry(block::group_of(*id)).or_default().push(i);
        }
        for (group, wanted) in by_group {
            for (hour, bytes) in read_blocks(&chunks, group, h0, h1)? {
                let index = block::index(&bytes)?;
                for &i in &wanted {
                    if let Some((_, r)) = index.iter().find(|(id, _)| *id == series[i]) {
                        sealed[i].insert(hour, bytes[r.clone()].to_vec());
                    }
                }
            }
        }
        sealed.into_iter().zip(open).map(|(sealed, open)| merge_hours(sealed, open)).collect()
    }

    /// Counts for `/api/v1/metrics/database` and `perfd check`.
    pub fn counts(&self) -> Result<StoreCounts> {
        let txn = self.db()?.begin_read()?;
        let open_points = self.open.read().values().flat_map(|h| h.values()).map(Vec::len).sum();
        let chunks = txn.open_table(CHUNKS)?;
        Ok(StoreCounts {
            schema_version: self.schema_version()?,
            series: txn.open_table(SERIES_BY_ID)?.len()?,
            blocks: chunks.len()?,
            chunk_bytes: chunks.stats()?.stored_bytes(),
            wal_entries: txn.open_table(WAL)?.len()?,
            open_points,
            file_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
        })
    }
}

/// Every series the database knows.
pub fn read_catalog(txn: &redb::ReadTransaction) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for row in txn.open_table(SERIES_BY_KEY)?.iter()? {
        let (k, id) = row?;
        let key = SeriesKey::parse(k.value())
            .map_err(|e| Error::Corrupt(format!("series key {:?}: {e}", k.value())))?;
        catalog.insert(k.value().to_owned(), id.value(), Arc::new(key));
    }
    Ok(catalog)
}

/// The schema version a file is stamped with (`init_tables` stamps every file it opens).
pub(crate) fn stored_schema(txn: &redb::ReadTransaction) -> Result<u32> {
    let stored = txn.open_table(META)?.get("schema_version")?.map(|v| v.value().to_vec());
    Ok(stored.and_then(|v| v.try_into().ok()).map_or(SCHEMA_VERSION, u32::from_le_bytes))
}

/// Opens the file (creating it if `create`); another process holding it is a `Conflict`.
fn open_database(path: &Path, create: bool) -> Result<Database> {
    let builder = Database::builder();
    let opened = if create { builder.create(path) } else { builder.open(path) };
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            Error::Conflict(format!("{} is already open in another perfd process", path.display()))
        }
        e => e.into(),
    })
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreCounts {
    /// The file's (`tables::SCHEMA_VERSION` once a daemon has served it).
    pub schema_version: u32,
    pub series: u64,
    /// Chunk blocks (one per series group and hour).
    pub blocks: u64,
    /// Bytes of sealed chunk data (keys and values), before redb's page overhead.
    pub chunk_bytes: u64,
    pub wal_entries: u64,
    pub open_points: usize,
    pub file_bytes: u64,
}

/// The blocks of `group` for hours `h0..=h1`, each reassembled from its parts.
pub fn read_blocks(
    chunks: &impl ReadableTable<(u64, i64, u32), &'static [u8]>,
    group: u64,
    h0: i64,
    h1: i64,
) -> Result<Vec<(i64, Vec<u8>)>> {
    read_some_blocks(chunks, group, (h0, h1), usize::MAX)
}

/// The first `limit` blocks of `group` from hour `h0` through `h1`, as [`read_blocks`] reads
/// them: for work done a bounded slice at a time.
pub fn read_some_blocks(
    chunks: &impl ReadableTable<(u64, i64, u32), &'static [u8]>,
    group: u64,
    (h0, h1): (i64, i64),
    limit: usize,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut out: Vec<(i64, Vec<u8>)> = Vec::new();
    for row in chunks.range((group, h0, 0)..=(group, h1, u32::MAX))? {
        let (k, v) = row?;
        let hour = k.value().1;
        match out.last_mut() {
            Some((h, bytes)) if *h == hour => bytes.extend_from_slice(v.value()),
            _ => {
                if out.len() == limit {
                    break;
                }
                out.push((hour, v.value().to_vec()));
            }
        }
    }
    Ok(out)
}

/// One series' hours in order: sealed chunks as they are, or merged with open points on top.
fn merge_hours(
    mut sealed: BTreeMap<i64, Vec<u8>>,
    open: BTreeMap<i64, Vec<Point>>,
) -> Result<Vec<(i64, HourData)>> {
    let mut out = Vec::with_capacity(sealed.len() + open.len());
    for (hour, extra) in open {
        // Sealed hours before this open one come first.
        while let Some(entry) = sealed.first_entry().filter(|e| *e.key() < hour) {
            let (h, bytes) = entry.remove_entry();
            out.push((h, HourData::Sealed(bytes)));
        }
        let mut points = match sealed.remove(&hour) {
            Some(bytes) => codec::decode(&bytes)?,
            None => Vec::new(),
        };
        points.extend(extra);
        out.push((hour, HourData::Points(normalized(points))));
    }
    out.extend(sealed.into_iter().map(|(h, b)| (h, HourData::Sealed(b))));
    Ok(out)
}

fn normalized(mut pts: Vec<Point>) -> Vec<Point> {
    codec::normalize(&mut pts);
    pts
}
