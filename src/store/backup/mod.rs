//! Backups: a consistent snapshot of every table (one read transaction, taken while ingestion
//! goes on) in one file, and restoring it.
//!
//! The file ([`format`]) holds every table's rows as redb's own key and value bytes, streamed
//! through deflate with a SHA-256 at the end; neither writing nor reading holds the database
//! in memory. A file is written under a temporary name, fsynced, then renamed, so a crash
//! never leaves a partial file under the final name. A restore verifies the whole file first,
//! builds the new database under a temporary name and renames it over the old one.

mod format;

use super::Store;
use super::tables::*;
use crate::error::{Error, Result};
use format::{Hashing, ItemOut, Load, Row, Summary, put};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// What a backup holds, for the API, `perfd check` and the log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupInfo {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub created_ms: i64,
    /// The schema of the database it holds: a perfd of an older schema refuses the backup.
    pub schema_version: u32,
    pub series: u64,
    pub chunk_blocks: u64,
    pub wal_entries: u64,
    pub thresholds: u64,
    pub alert_events: u64,
    pub profiles: u64,
    pub cache_entries: u64,
}

impl BackupInfo {
    fn of(s: &Summary) -> BackupInfo {
        let rows = |name: &str| s.rows.get(name).copied().unwrap_or(0);
        BackupInfo {
            created_ms: s.created_ms,
            schema_version: s.schema_version,
            bytes: s.bytes,
            sha256: s.sha256.iter().map(|x| format!("{x:02x}")).collect(),
            series: rows(SERIES_BY_ID.name()),
            chunk_blocks: rows(CHUNK_HOURS.name()),
            wal_entries: rows(WAL.name()),
            thresholds: rows(THRESHOLDS.name()),
            alert_events: rows(ALERT_EVENTS.name()),
            profiles: rows(PROFILES.name()),
            cache_entries: rows(CACHE_SNAPSHOT.name()),
            ..BackupInfo::default()
        }
    }
}

/// Calls `$f(args…, TABLE)` for every table a backup holds, in order. Not among them: the
/// profiles' index by finish time (rebuilt on open). `PURGE` is: a backup taken before a
/// delete's purge ended holds the dead chunks, and the restored perfd purges them. (A perfd
/// older than `PURGE` skips the table, as every reader skips a table it does not know.)
macro_rules! each_table {
    ($f:ident, $($arg:expr),*) => {{
        $f($($arg,)* META)?;
        $f($($arg,)* SERIES_BY_KEY)?;
        $f($($arg,)* SERIES_BY_ID)?;
        $f($($arg,)* CHUNKS)?;
        $f($($arg,)* CHUNK_HOURS)?;
        $f($($arg,)* WAL)?;
        $f($($arg,)* CACHE_SNAPSHOT)?;
        $f($($arg,)* THRESHOLDS)?;
        $f($($arg,)* SILENCES)?;
        $f($($arg,)* ALERT_EVENTS)?;
        $f($($arg,)* ALERT_STATES)?;
        $f($($arg,)* PROFILES)?;
        $f($($arg,)* PURGE)?;
    }};
}

/// Streams one table: its name, then its rows; counts them in `rows`.
fn dump<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    w: &mut impl Write,
    rows: &mut BTreeMap<String, u64>,
    def: TableDefinition<K, V>,
) -> Result<()> {
    put(w, &ItemOut::Table(def.name()))?;
    let mut n = 0;
    for row in txn.open_table(def)?.iter()? {
        let (k, v) = row?;
        let (k, v) = (k.value(), v.value());
        put(w, &ItemOut::Row(K::as_bytes(&k).as_ref(), V::as_bytes(&v).as_ref()))?;
        n += 1;
    }
    rows.insert(def.name().to_owned(), n);
    Ok(())
}

/// Writes a snapshot of `store` to `path` (temp file, fsync, rename). The read transaction is
/// held while the file is written (a long one pins pages: the database file may grow by what
/// is written meanwhile).
pub fn write(store: &Store, path: &Path) -> Result<BackupInfo> {
    if same_file(path, &store.path) {
        // `perfd backup --out <data-dir>/perfd.redb` renamed the backup over the database.
        return Err(Error::InvalidInput(format!(
            "{} is the database itself; write the backup elsewhere",
            path.display()
        )));
    }
    let tmp = path.with_extension("pfbk.tmp");
    let written = write_file(store, &tmp).and_then(|summary| {
        std::fs::rename(&tmp, path)?;
        Ok(summary)
    });
    let summary = match written {
        Ok(summary) => summary,
        Err(e) => {
            // A partial file on a full disk would keep it full.
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
                e => e,
            });
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let mut i = BackupInfo::of(&summary);
    i.file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(i)
}

/// The backup file itself, fsynced.
fn write_file(store: &Store, tmp: &Path) -> Result<Summary> {
    let mut out = Hashing::new(BufWriter::new(std::fs::File::create(tmp)?));
    out.write_all(format::MAGIC)?;
    out.write_all(&format::FORMAT.to_le_bytes())?;
    let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
    let created_ms = crate::model::now_ms();
    let txn = store.db()?.begin_read()?;
    // The file's own version: a downgraded file's backup restores into the older perfd.
    let schema_version = super::stored_schema(&txn)?;
    put(&mut z, &format::Header { schema_version, created_ms })?;
    let mut rows = BTreeMap::new();
    each_table!(dump, &txn, &mut z, &mut rows);
    drop(txn);
    put(&mut z, &ItemOut::End)?;
    let out = z.finish()?;
    let bytes = out.bytes + 32;
    let (sha256, mut file) = out.digest();
    file.write_all(&sha256)?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(Summary { schema_version, created_ms, rows, bytes, sha256 })
}

/// Counts rows: what `check` needs of them.
struct Count;

impl Load for Count {
    fn table(&mut self, _: &str, rows: &mut dyn Iterator<Item = Result<Row>>) -> Result<()> {
        skip(rows)
    }
}

/// Reads through rows, stopping at the first error.
fn skip(rows: &mut dyn Iterator<Item = Result<Row>>) -> Result<()> {
    for row in rows {
        row?;
    }
    Ok(())
}

/// A backup file, verified: its length and SHA-256.
struct Verified<'a> {
    path: &'a Path,
    len: u64,
    sha256: [u8; 32],
}

impl Verified<'_> {
    fn file(path: &Path) -> Result<Verified<'_>> {
        if path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{} is a directory, not a backup file (a data dir is checked with --data-dir)",
                path.display()
            )));
        }
        let (f, len) = open(path)?;
        let sha256 = format::verify(f, len, &path.display().to_string())?;
        Ok(Verified { path, len, sha256 })
    }

    /// Decodes it into `load`.
    fn read(&self, load: &mut dyn Load) -> Result<BackupInfo> {
        let what = self.path.display().to_string();
        let (f, _) = open(self.path)?;
        let mut i = BackupInfo::of(&format::decode(f, self.len, self.sha256, &what, load)?);
        i.file = what;
        Ok(i)
    }
}

fn open(path: &Path) -> Result<(BufReader<std::fs::File>, u64)> {
    let f = std::fs::File::open(path).map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
    let len = f.metadata()?.len();
    Ok((BufReader::with_capacity(1 << 16, f), len))
}

/// Verifies backup bytes and reports what they hold (the fuzz target's entry point).
pub fn check_bytes(bytes: &[u8]) -> Result<BackupInfo> {
    let len = bytes.len() as u64;
    let sha256 = format::verify(bytes, len, "backup")?;
    Ok(BackupInfo::of(&format::decode(bytes, len, sha256, "backup", &mut Count)?))
}

/// Verifies a backup and reports what it holds.
pub fn check(path: &Path) -> Result<BackupInfo> {
    Verified::file(path)?.read(&mut Count)
}

/// Restores a verified backup into `data_dir/perfd.redb`: built under a temporary name, then
/// renamed over the old file, so the existing data is untouched unless the restore succeeds.
pub fn restore(path: &Path, data_dir: &Path, force: bool) -> Result<BackupInfo> {
    let backup = Verified::file(path)?; // refused before the data dir is touched
    std::fs::create_dir_all(data_dir)?;
    let target = data_dir.join("perfd.redb");
    let existed = target.exists() && !is_bare(&target);
    if existed && !force {
        return Err(Error::Conflict(format!(
            "{} already holds a database; pass --force to replace it",
            data_dir.display()
        )));
    }
    let held = hold(&target, data_dir)?;
    let restored = replace(&backup, data_dir, &target);
    drop(held);
    if restored.is_err() && !existed {
        let _ = std::fs::remove_file(&target); // the empty database `hold` created (or found)
    }
    restored
}

/// Whether `target` is a database file with no table at all: the empty file [`hold`] creates
/// for a restore into a new data dir, left behind when that restore was killed. It holds
/// nothing to lose, so a restore may replace it without `--force`. Opened read-only, so a file
/// that is refused stays as it was.
fn is_bare(target: &Path) -> bool {
    let Ok(db) = redb::ReadOnlyDatabase::open(target) else { return false };
    let tables = db.begin_read().and_then(|txn| Ok(txn.list_tables()?.next().is_none()));
    tables.unwrap_or(false)
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

/// Inserts each table's rows into the write transaction's table of that name; a table this
/// perfd does not know (from a newer one) is skipped.
struct IntoDb<'a>(&'a redb::WriteTransaction);

fn load<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::WriteTransaction,
    name: &str,
    rows: &mut dyn Iterator<Item = Result<Row>>,
    done: &mut bool,
    def: TableDefinition<K, V>,
) -> Result<()> {
    if *done || name != def.name() {
        return Ok(());
    }
    *done = true;
    let mut t = txn.open_table(def)?;
    for row in rows {
        let (k, v) = row?;
        t.insert(K::from_bytes(&k), V::from_bytes(&v))?;
    }
    Ok(())
}

impl Load for IntoDb<'_> {
    fn table(&mut self, name: &str, rows: &mut dyn Iterator<Item = Result<Row>>) -> Result<()> {
        let mut done = false;
        each_table!(load, self.0, name, &mut *rows, &mut done);
        if done { Ok(()) } else { skip(rows) }
    }
}

/// Writes the backup's rows to a new database file and renames it over `target`.
fn replace(backup: &Verified, data_dir: &Path, target: &Path) -> Result<BackupInfo> {
    let tmp: PathBuf = data_dir.join("perfd.redb.restore");
    let _ = std::fs::remove_file(&tmp);
    let built = (|| -> Result<BackupInfo> {
        let db = Database::builder().create(&tmp)?;
        let txn = db.begin_write()?;
        let info = backup.read(&mut IntoDb(&txn))?;
        txn.commit()?;
        Ok(info)
    })();
    let info = match built {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, target)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(info)
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
/// holds a read transaction open while it writes.
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

#[cfg(test)]
mod tests;
