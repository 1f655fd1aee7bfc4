//! The backup file (`.pfbk`), written and read as a stream: neither side holds the database in
//! memory (format 1 held the whole snapshot, twice, while writing and reading).
//!
//! `b"PFBK"`, a `u16 LE` format version, a deflate stream, then the SHA-256 of everything
//! before it (32 bytes).
//! - Format 2 (written now): the deflate stream holds rmp-serde (named) values one after
//!   another: a [`Header`], then for each table `Table(name)` and one `Row(key, value)` per row
//!   (redb's own key and value bytes), then `End`.
//! - Format 1 (read still): the deflate stream holds one [`SnapshotV1`].
//!
//! Reading verifies the checksum in a pass of its own ([`verify`]) before anything is decoded,
//! so a truncated or altered file is refused before it touches a database.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};

pub const MAGIC: &[u8; 4] = b"PFBK";
pub const FORMAT: u16 = 2;
const DIGEST: u64 = 32;

#[derive(Serialize, Deserialize)]
pub struct Header {
    pub schema_version: u32,
    pub created_ms: i64,
}

/// One value of a format-2 stream, as written (borrowing the row's bytes).
#[derive(Serialize)]
pub enum ItemOut<'a> {
    Table(&'a str),
    Row(#[serde(with = "serde_bytes")] &'a [u8], #[serde(with = "serde_bytes")] &'a [u8]),
    End,
}

/// The same value as read.
#[derive(Deserialize)]
enum ItemIn {
    Table(String),
    Row(#[serde(with = "serde_bytes")] Vec<u8>, #[serde(with = "serde_bytes")] Vec<u8>),
    End,
}

#[derive(Deserialize)]
struct SnapshotV1 {
    schema_version: u32,
    created_ms: i64,
    tables: Vec<TableV1>,
}

#[derive(Deserialize)]
struct TableV1 {
    name: String,
    rows: Vec<RowV1>,
}

#[derive(Deserialize)]
struct RowV1(#[serde(with = "serde_bytes")] Vec<u8>, #[serde(with = "serde_bytes")] Vec<u8>);

/// Counts what passes through, and hashes it.
pub struct Hashing<T> {
    pub inner: T,
    hasher: Sha256,
    pub bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Hashing<T> {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    pub fn digest(self) -> ([u8; 32], T) {
        (self.hasher.finalize().into(), self.inner)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Writes one stream value. A failed write is an I/O error (so a full disk is told as one:
/// 507, not 500).
pub fn put(w: &mut impl Write, item: &impl Serialize) -> Result<()> {
    use rmp::encode::ValueWriteError::{InvalidDataWrite, InvalidMarkerWrite};
    rmp_serde::encode::write_named(w, item).map_err(|e| match e {
        rmp_serde::encode::Error::InvalidValueWrite(InvalidMarkerWrite(io) | InvalidDataWrite(io)) => {
            Error::Io(io)
        }
        e => Error::Internal(format!("encoding the backup: {e}")),
    })
}

/// A row's key and value bytes.
pub type Row = (Vec<u8>, Vec<u8>);

/// Where the rows of a backup go as it is read: counted (`check`) or into a database.
pub trait Load {
    /// The rows of one table, in the order written.
    fn table(&mut self, name: &str, rows: &mut dyn Iterator<Item = Result<Row>>) -> Result<()>;
}

/// What a backup holds: its header and the rows per table.
pub struct Summary {
    /// The schema of the database it holds (`store::tables::SCHEMA_VERSION`).
    pub schema_version: u32,
    pub created_ms: i64,
    pub rows: BTreeMap<String, u64>,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

fn bad(what: &str, m: &str) -> Error {
    Error::InvalidInput(format!("{what}: {m}"))
}

/// Checks the magic, the format and the checksum of a backup of `len` bytes; its SHA-256.
pub fn verify(mut r: impl Read, len: u64, what: &str) -> Result<[u8; 32]> {
    if len < 6 + DIGEST {
        return Err(bad(what, "not a perfd backup (bad magic or too short)"));
    }
    let mut h = Hashing::new((&mut r).take(len - DIGEST));
    let mut head = [0u8; 6];
    h.read_exact(&mut head)?;
    if &head[..4] != MAGIC {
        return Err(bad(what, "not a perfd backup (bad magic or too short)"));
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if !(1..=FORMAT).contains(&version) {
        return Err(bad(
            what,
            &format!("backup format {version} is not supported (this perfd reads 1 to {FORMAT})"),
        ));
    }
    io::copy(&mut h, &mut io::sink())?;
    let (digest, _) = h.digest();
    let mut sum = [0u8; 32];
    r.read_exact(&mut sum)?;
    if digest != sum {
        return Err(bad(what, "checksum mismatch: the file is truncated or altered"));
    }
    Ok(digest)
}

/// Decodes a backup [`verify`] passed, giving each table's rows to `load`.
pub fn decode(r: impl Read, len: u64, sha256: [u8; 32], what: &str, load: &mut dyn Load) -> Result<Summary> {
    let mut r = r.take(len - DIGEST);
    let mut head = [0u8; 6];
    r.read_exact(&mut head)?;
    let corrupt = |e: &dyn std::fmt::Display| bad(what, &format!("corrupt: {e}"));
    let z = flate2::read::DeflateDecoder::new(r);
    let (schema_version, created_ms, rows) = match u16::from_le_bytes([head[4], head[5]]) {
        1 => decode_v1(z, load, &corrupt)?,
        _ => decode_v2(z, load, &corrupt)?,
    };
    Ok(Summary { schema_version, created_ms, rows, bytes: len, sha256 })
}

/// A backup of a newer schema than this perfd's is refused (not "corrupt": only newer).
fn newer(schema_version: u32) -> Result<()> {
    if schema_version > super::super::SCHEMA_VERSION {
        return Err(Error::InvalidInput(format!(
            "the backup was made by a newer perfd (schema {schema_version}; this one reads up to {})",
            super::super::SCHEMA_VERSION
        )));
    }
    Ok(())
}

fn decode_v1(
    z: impl Read,
    load: &mut dyn Load,
    corrupt: &dyn Fn(&dyn std::fmt::Display) -> Error,
) -> Result<(u32, i64, BTreeMap<String, u64>)> {
    let s: SnapshotV1 = rmp_serde::from_read(z).map_err(|e| corrupt(&e))?;
    newer(s.schema_version)?;
    let mut counts = BTreeMap::new();
    for t in s.tables {
        counts.insert(t.name.clone(), t.rows.len() as u64);
        load.table(&t.name, &mut t.rows.into_iter().map(|RowV1(k, v)| Ok((k, v))))?;
    }
    Ok((s.schema_version, s.created_ms, counts))
}

fn decode_v2(
    z: impl Read,
    load: &mut dyn Load,
    corrupt: &dyn Fn(&dyn std::fmt::Display) -> Error,
) -> Result<(u32, i64, BTreeMap<String, u64>)> {
    let mut de = rmp_serde::Deserializer::new(z);
    let header = Header::deserialize(&mut de).map_err(|e| corrupt(&e))?;
    newer(header.schema_version)?;
    let mut counts = BTreeMap::new();
    let mut next = ItemIn::deserialize(&mut de).map_err(|e| corrupt(&e))?;
    loop {
        let name = match next {
            ItemIn::Table(name) => name,
            ItemIn::End => return Ok((header.schema_version, header.created_ms, counts)),
            ItemIn::Row(..) => return Err(corrupt(&"a row before its table")),
        };
        // The table's rows run until the next table or the end; `after` keeps which.
        let (mut n, mut after, mut failed) = (0u64, None, false);
        let mut rows = std::iter::from_fn(|| {
            if after.is_some() || failed {
                return None;
            }
            match ItemIn::deserialize(&mut de) {
                Ok(ItemIn::Row(k, v)) => {
                    n += 1;
                    Some(Ok((k, v)))
                }
                Ok(other) => {
                    after = Some(other);
                    None
                }
                Err(e) => {
                    failed = true;
                    Some(Err(corrupt(&e)))
                }
            }
        });
        load.table(&name, &mut rows)?;
        // A loader that stopped early (an error) has returned above; one that read every row
        // leaves the item after them in `after`.
        counts.insert(name, n);
        next = after.ok_or_else(|| corrupt(&"a table's rows were not all read"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with a right checksum over `stream` (the deflated part's plain bytes).
    fn file(version: u16, stream: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        let mut z = flate2::write::DeflateEncoder::new(out, flate2::Compression::fast());
        z.write_all(stream).unwrap();
        let mut out = z.finish().unwrap();
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// (table, key, value) as read.
    type Got = Vec<(String, Vec<u8>, Vec<u8>)>;

    struct Rows(Got);

    impl Load for Rows {
        fn table(&mut self, name: &str, rows: &mut dyn Iterator<Item = Result<Row>>) -> Result<()> {
            for row in rows {
                let (k, v) = row?;
                self.0.push((name.to_owned(), k, v));
            }
            Ok(())
        }
    }

    fn read(bytes: &[u8]) -> Result<(Summary, Got)> {
        let len = bytes.len() as u64;
        let sha = verify(bytes, len, "t")?;
        let mut rows = Rows(Vec::new());
        Ok((decode(bytes, len, sha, "t", &mut rows)?, rows.0))
    }

    fn items(items: &[ItemOut]) -> Vec<u8> {
        let mut stream = Vec::new();
        put(&mut stream, &Header { schema_version: 1, created_ms: 7 }).unwrap();
        for i in items {
            put(&mut stream, i).unwrap();
        }
        stream
    }

    #[test]
    fn tables_and_rows_come_back_in_order() {
        let stream = items(&[
            ItemOut::Table("a"),
            ItemOut::Row(b"k1", b"v1"),
            ItemOut::Row(b"k2", b""),
            ItemOut::Table("empty"),
            ItemOut::Table("b"),
            ItemOut::Row(b"", b"v3"),
            ItemOut::End,
        ]);
        let (summary, rows) = read(&file(FORMAT, &stream)).unwrap();
        assert_eq!(summary.created_ms, 7);
        assert_eq!(summary.rows, BTreeMap::from([("a".into(), 2), ("empty".into(), 0), ("b".into(), 1)]));
        let got: Vec<_> = rows.iter().map(|(t, k, v)| (t.as_str(), &k[..], &v[..])).collect();
        assert_eq!(got, vec![("a", &b"k1"[..], &b"v1"[..]), ("a", b"k2", b""), ("b", b"", b"v3")]);
    }

    /// A write that fails mid-stream (a full disk) is an I/O error, which the API tells as a
    /// 507; it was an internal error (500) when it failed inside a value.
    #[test]
    fn a_failed_write_is_an_io_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::StorageFull.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = put(&mut Full, &ItemOut::Row(b"k", b"v")).unwrap_err();
        assert!(matches!(&err, Error::Io(e) if e.kind() == io::ErrorKind::StorageFull), "{err:?}");
    }

    /// Content that passes the checksum but does not decode is an error, never a panic or a
    /// partial success.
    #[test]
    fn a_bad_stream_under_a_good_checksum_is_refused() {
        let whole = items(&[ItemOut::Table("a"), ItemOut::Row(b"k", b"v"), ItemOut::End]);
        for stream in [
            &b"not msgpack at all"[..],
            &whole[..whole.len() - 1],                                    // no End
            &items(&[ItemOut::Row(b"k", b"v"), ItemOut::End])[..],        // a row before a table
            &items(&[ItemOut::Table("a"), ItemOut::Row(b"k", b"v")])[..], // ends inside a table
        ] {
            let err = read(&file(FORMAT, stream)).err().expect("refused");
            assert!(err.to_string().contains("corrupt"), "{err}");
        }
        let err = read(&file(9, &whole)).err().expect("an unknown format");
        assert!(err.to_string().contains("format 9"), "{err}");
        let mut newer = Vec::new();
        put(&mut newer, &Header { schema_version: u32::MAX, created_ms: 0 }).unwrap();
        put(&mut newer, &ItemOut::End).unwrap();
        let err = read(&file(FORMAT, &newer)).err().expect("a newer schema");
        assert!(err.to_string().contains("newer perfd"), "{err}");
        let mut altered = file(FORMAT, &whole);
        altered[8] ^= 1;
        assert!(read(&altered).err().expect("refused").to_string().contains("checksum"));
    }
}
