//! Backups: a consistent snapshot of every table (one read transaction, taken while ingestion
//! goes on) in one file, and restoring it.
//!
//! Format (`.pfbk`): `b"PFBK"`, `u16 LE` format version (1), then a deflate stream of one
//! rmp-serde (named) [`Snapshot`], then the SHA-256 of everything before it (32 bytes). Rows are
//! stored as redb's own key/value bytes, table by table. A file is written under a temporary
//! name, fsynced, then renamed, so a crash never leaves a partial file under the final name.

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PFBK";
const FORMAT: u16 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    schema_version: u32,
    created_ms: i64,
    tables: Vec<TableDump>,
}

#[derive(Serialize, Deserialize)]
struct TableDump {
    name: String,
    rows: Vec<Row>,
}

#[derive(Serialize, Deserialize)]
struct Row(#[serde(with = "serde_bytes")] Vec<u8>, #[serde(with = "serde_bytes")] Vec<u8>);

/// What a backup holds, for the API, `perfd check` and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupInfo {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_ms: i64,
    pub series: u64,
    pub chunk_blocks: u64,
    pub wal_entries: u64,
    pub thresholds: u64,
    pub alert_events: u64,
    pub profiles: u64,
    pub cache_entries: u64,
}

fn dump<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<TableDump> {
    let mut rows = Vec::new();
    for row in txn.open_table(def)?.iter()? {
        let (k, v) = row?;
        rows.push(Row(K::as_bytes(&k.value()).as_ref().to_vec(), V::as_bytes(&v.value()).as_ref().to_vec()));
    }
    Ok(TableDump { name: def.name().to_owned(), rows })
}

fn load<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    def: TableDefinition<K, V>,
    dump: &TableDump,
) -> Result<()> {
    let mut t = txn.open_table(def)?;
    for Row(k, v) in &dump.rows {
        t.insert(K::from_bytes(k), V::from_bytes(v))?;
    }
    Ok(())
}

/// Applies `f` to every table definition with its name (the one list both directions use).
macro_rules! each_table {
    ($f:ident, $($arg:expr),*) => {{
        vec![
            $f($($arg,)* META)?,
            $f($($arg,)* SERIES_BY_KEY)?,
            $f($($arg,)* SERIES_BY_ID)?,
            $f($($arg,)* CHUNKS)?,
            $f($($arg,)* CHUNK_HOURS)?,
            $f($($arg,)* WAL)?,
            $f($($arg,)* CACHE_SNAPSHOT)?,
            $f($($arg,)* THRESHOLDS)?,
            $f($($arg,)* SILENCES)?,
            $f($($arg,)* ALERT_EVENTS)?,
            $f($($arg,)* ALERT_STATES)?,
            $f($($arg,)* PROFILES)?,
        ]
    }};
}

fn info(s: &Snapshot) -> BackupInfo {
    let rows = |name: &str| s.tables.iter().find(|t| t.name == name).map_or(0, |t| t.rows.len() as u64);
    BackupInfo {
        created_ms: s.created_ms,
        series: rows("series_by_id"),
        chunk_blocks: rows("chunk_hours"),
        wal_entries: rows("wal"),
        thresholds: rows("thresholds"),
        alert_events: rows("alert_events"),
        profiles: rows("profiles"),
        cache_entries: rows("cache_snapshot"),
        ..BackupInfo::default()
    }
}

/// Writes a snapshot of `store` to `path` (temp file, fsync, rename).
pub fn write(store: &Store, path: &Path) -> Result<BackupInfo> {
    if same_file(path, &store.path) {
        // `perfd backup --out <data-dir>/perfd.redb` renamed the backup over the database.
        return Err(Error::InvalidInput(format!(
            "{} is the database itself; write the backup elsewhere",
            path.display()
        )));
    }
    let txn = store.db()?.begin_read()?;
    let snapshot = Snapshot {
        schema_version: SCHEMA_VERSION,
        created_ms: crate::model::now_ms(),
        tables: each_table!(dump, &txn),
    };
    drop(txn);
    let body = rmp_serde::to_vec_named(&snapshot)
        .map_err(|e| Error::Internal(format!("encoding the backup: {e}")))?;
    let mut out = Vec::with_capacity(body.len() / 2 + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    z.write_all(&body)?;
    let mut out = z.finish()?;
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    let tmp = path.with_extension("pfbk.tmp");
    let written = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    })();
    if let Err(e) = written {
        // A partial file on a full disk would keep it full.
        let _ = std::fs::remove_file(&tmp);
        return Err(match e {
            Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            e => e,
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let mut i = info(&snapshot);
    i.file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    i.bytes = out.len() as u64;
    i.sha256 = hex(&digest);
    Ok(i)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads and verifies a backup file (magic, version, checksum, decoding).
fn read(path: &Path) -> Result<(Snapshot, BackupInfo)> {
    if path.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is a directory, not a backup file (a data dir is checked with --data-dir)",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
    let (snapshot, mut i) = parse(&bytes, &path.display().to_string())?;
    i.file = path.display().to_string();
    Ok((snapshot, i))
}

/// Verifies backup bytes and reports what they hold (the fuzz target's entry point).
pub fn check_bytes(bytes: &[u8]) -> Result<BackupInfo> {
    Ok(parse(bytes, "backup")?.1)
}

fn parse(bytes: &[u8], what: &str) -> Result<(Snapshot, BackupInfo)> {
    let bad = |m: &str| Error::InvalidInput(format!("{what}: {m}"));
    if bytes.len() < 6 + 32 || &bytes[..4] != MAGIC {
        return Err(bad("not a perfd backup (bad magic or too short)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT {
        return Err(bad(&format!("backup format {version} is not supported (this perfd reads {FORMAT})")));
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    let digest = Sha256::digest(content);
    if digest.as_slice() != sum {
        return Err(bad("checksum mismatch: the file is truncated or altered"));
    }
    let mut body = Vec::new();
    flate2::read::DeflateDecoder::new(&content[6..])
        .read_to_end(&mut body)
        .map_err(|e| bad(&format!("corrupt: {e}")))?;
    let snapshot: Snapshot = rmp_serde::from_slice(&body).map_err(|e| bad(&format!("corrupt: {e}")))?;
    if snapshot.schema_version > SCHEMA_VERSION {
        return Err(bad("made by a newer perfd"));
    }
    let mut i = info(&snapshot);
    i.bytes = bytes.len() as u64;
    i.sha256 = hex(&digest);
    Ok((snapshot, i))
}

/// Verifies a backup and reports what it holds.
pub fn check(path: &Path) -> Result<BackupInfo> {
    Ok(read(path)?.1)
}

/// Restores a verified backup into `data_dir/perfd.redb`: built under a temporary name, then
/// renamed over the old file, so the existing data is untouched unless the restore succeeds.
pub fn restore(path: &Path, data_dir: &Path, force: bool) -> Result<BackupInfo> {
    let (snapshot, info) = read(path)?;
    std::fs::create_dir_all(data_dir)?;
    let target = data_dir.join("perfd.redb");
    let existed = target.exists();
    if existed && !force {
        return Err(Error::Conflict(format!(
            "{} already holds a database; pass --force to replace it",
            data_dir.display()
        )));
    }
    let held = hold(&target, data_dir)?;
    let restored = replace(&snapshot, data_dir, &target);
    drop(held);
    if restored.is_err() && !existed {
        let _ = std::fs::remove_file(&target); // the empty database `hold` created
    }
    restored.map(|()| info)
}

/// Opens the database file (creating an empty one if there is none) and keeps it open while a
/// restore replaces it, so no perfd starts on it meanwhile; a perfd that has it open already
/// makes the restore fail (it would go on writing to the replaced file, and everything it
/// wrote after the restore would be lost). A file redb cannot open (a damaged database: what a
/// restore is for) is replaced without being held; a repair it would need is not run.
fn hold(target: &Path, data_dir: &Path) -> Result<Option<Database>> {
    let mut builder = Database::builder();
    builder.set_repair_callback(|session| session.abort());
    match builder.create(target) {
        Ok(db) => Ok(Some(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Conflict(format!(
            "the database in {} is open in a running perfd: stop it first (a restore replaces the \
             whole database; `perfd backup --url` works while it runs)",
            data_dir.display()
        ))),
        Err(e) => {
            log::warn!("restore: {} does not open ({e}); replacing it", target.display());
            Ok(None)
        }
    }
}

/// Writes the snapshot to a new database file and renames it over `target`.
fn replace(snapshot: &Snapshot, data_dir: &Path, target: &Path) -> Result<()> {
    let tmp: PathBuf = data_dir.join("perfd.redb.restore");
    let _ = std::fs::remove_file(&tmp);
    {
        let db = Database::builder().create(&tmp)?;
        let txn = db.begin_write()?;
        let by_name = |name: &str| snapshot.tables.iter().find(|t| t.name == name);
        let empty = TableDump { name: String::new(), rows: Vec::new() };
        let restore_one =
            |def_name: String, f: &dyn Fn(&TableDump) -> Result<()>| f(by_name(&def_name).unwrap_or(&empty));
        restore_one(META.name().to_owned(), &|d| load(&txn, META, d))?;
        restore_one(SERIES_BY_KEY.name().to_owned(), &|d| load(&txn, SERIES_BY_KEY, d))?;
        restore_one(SERIES_BY_ID.name().to_owned(), &|d| load(&txn, SERIES_BY_ID, d))?;
        restore_one(CHUNKS.name().to_owned(), &|d| load(&txn, CHUNKS, d))?;
        restore_one(CHUNK_HOURS.name().to_owned(), &|d| load(&txn, CHUNK_HOURS, d))?;
        restore_one(WAL.name().to_owned(), &|d| load(&txn, WAL, d))?;
        restore_one(CACHE_SNAPSHOT.name().to_owned(), &|d| load(&txn, CACHE_SNAPSHOT, d))?;
        for def in [THRESHOLDS, SILENCES, ALERT_EVENTS, ALERT_STATES, PROFILES] {
            restore_one(def.name().to_owned(), &|d| load(&txn, def, d))?;
        }
        txn.commit()?;
    }
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Whether both paths name one existing file (through links too).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// `<data-dir>/backups/perfd-<UTC time>.pfbk`; the client never chooses the path.
pub fn new_path(data_dir: &Path) -> Result<PathBuf> {
    let dir = data_dir.join("backups");
    std::fs::create_dir_all(&dir)?;
    let stamp = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string().replace(':', "-");
    // Two backups in one millisecond get -2, -3, … (callers hold `ONE_AT_A_TIME`).
    let mut path = dir.join(format!("perfd-{stamp}.pfbk"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = dir.join(format!("perfd-{stamp}-{n}.pfbk"));
    }
    Ok(path)
}

/// One backup at a time in this process: concurrent ones in one millisecond shared a name and
/// a temp file (one failed with a 500, and could have replaced the other's file), and each
/// holds a whole snapshot in memory.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// Writes a backup to a new file in `<data_dir>/backups` (see [`new_path`]).
pub fn write_new(store: &Store, data_dir: &Path) -> Result<BackupInfo> {
    let _one = ONE_AT_A_TIME.lock();
    write(store, &new_path(data_dir)?)
}

/// Backups in `<data-dir>/backups`, newest first.
pub fn list(data_dir: &Path) -> Result<Vec<serde_json::Value>> {
    let dir = data_dir.join("backups");
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".pfbk") {
                let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(serde_json::json!({"file": name, "bytes": bytes}));
            }
        }
    }
    out.sort_by(|a, b| b["file"].as_str().cmp(&a["file"].as_str()));
    Ok(out)
}

/// Deletes the oldest `perfd-*.pfbk` files beyond the newest `keep`; returns how many went.
pub fn prune(data_dir: &Path, keep: usize) -> Result<usize> {
    let list = list(data_dir)?;
    let mut removed = 0;
    for old in list.iter().skip(keep) {
        if let Some(name) = old["file"].as_str().filter(|n| n.starts_with("perfd-")) {
            std::fs::remove_file(data_dir.join("backups").join(name))?;
            removed += 1;
        }
    }
    Ok(removed)
}
