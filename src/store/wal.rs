//! WAL batch encoding: the points of one group commit, by series. Small series are stored raw,
//! larger ones as a codec chunk (`codec.rs`). See `store/tables.rs` for when entries go.

use super::codec::{corrupt, decode, encode, get_varint, normalize, put_varint};
use crate::error::Result;
use crate::model::Point;
use std::ops::Range;

/// Series with at least this many points in a WAL batch are stored as a chunk; fewer are stored
/// raw, since a chunk's 41-byte summary would outweigh what it saves.
const WAL_CHUNK_MIN_POINTS: usize = 8;

/// Encodes one WAL batch: `varint series_count`, then per series `varint id` and either
/// `0u8, varint n, n × (i64 LE timestamp, f64 LE value)` or `1u8, varint len, chunk` (points
/// normalized, last write wins). See `store/tables.rs`.
pub fn encode_wal(series: &[(u64, &[Point])]) -> Vec<u8> {
    let n: usize = series.iter().map(|s| s.1.len()).sum();
    let mut out = Vec::with_capacity(8 + series.len() * 6 + n * 4);
    put_varint(&mut out, series.len() as u64);
    for (id, points) in series {
        put_varint(&mut out, *id);
        if points.len() >= WAL_CHUNK_MIN_POINTS {
            let mut sorted = points.to_vec();
            normalize(&mut sorted);
            let chunk = encode(&sorted);
            out.push(1);
            put_varint(&mut out, chunk.len() as u64);
            out.extend_from_slice(&chunk);
        } else {
            out.push(0);
            put_varint(&mut out, points.len() as u64);
            for &(t, v) in *points {
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

/// The entries of a WAL batch: each series id, its kind (0 raw, 1 chunk) and the byte range of
/// its body, checked to lie inside the batch.
fn index_wal(bytes: &[u8]) -> Result<Vec<(u64, u8, Range<usize>)>> {
    let mut pos = 0;
    let count = get_varint(bytes, &mut pos)? as usize;
    let mut out = Vec::with_capacity(count.min(bytes.len()));
    for _ in 0..count {
        let id = get_varint(bytes, &mut pos)?;
        let kind = *bytes.get(pos).ok_or_else(|| corrupt("truncated WAL batch"))?;
        pos += 1;
        let n = get_varint(bytes, &mut pos)? as usize;
        let size = if kind == 0 { n.saturating_mul(16) } else { n };
        let end = pos
            .checked_add(size)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| corrupt("truncated WAL batch"))?;
        out.push((id, kind, pos..end));
        pos = end;
    }
    Ok(out)
}

/// Decodes a WAL batch written by [`encode_wal`].
pub fn decode_wal(bytes: &[u8]) -> Result<Vec<(u64, Vec<Point>)>> {
    let mut out = Vec::new();
    for (id, kind, range) in index_wal(bytes)? {
        let body = &bytes[range];
        let points = match kind {
            0 => body
                .chunks_exact(16)
                .map(|c| {
                    let (t, v) = c.split_at(8);
                    let t = i64::from_le_bytes(t.try_into().unwrap_or_default());
                    let v = f64::from_le_bytes(v.try_into().unwrap_or_default());
                    (t, v)
                })
                .collect(),
            1 => decode(body)?,
            _ => return Err(corrupt("unknown WAL entry kind")),
        };
        out.push((id, points));
    }
    Ok(out)
}

/// Clears the "no value falls" flag of every chunk in a WAL batch (see
/// `codec::clear_never_falls`); how many chunks had it. The batch keeps its length.
pub(super) fn clear_never_falls(bytes: &mut [u8]) -> Result<u64> {
    let mut cleared = 0;
    for (_, kind, range) in index_wal(bytes)? {
        if kind == 1 && super::codec::clear_never_falls(&mut bytes[range]) {
            cleared += 1;
        }
    }
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_round_trip() {
        let a = [(1, 1.5), (2, -0.0)];
        let b = [(3, f64::MAX)];
        // Enough points to be stored as a chunk; unsorted with a duplicate: last write wins.
        let c: Vec<Point> = (0..20).rev().map(|i| (i, i as f64 * 0.5)).chain([(3, 99.0)]).collect();
        let bytes = encode_wal(&[(7, &a), (u64::MAX, &b), (9, &c)]);
        let back = decode_wal(&bytes).unwrap();
        let mut c_norm = c.clone();
        normalize(&mut c_norm);
        assert_eq!(c_norm[3], (3, 99.0));
        assert_eq!(back, vec![(7, a.to_vec()), (u64::MAX, b.to_vec()), (9, c_norm)]);
        assert!(bytes.len() < 2 * 16 + 16 + 20 * 16 / 2, "chunked WAL entries are compact");
        for cut in 0..bytes.len() {
            assert!(decode_wal(&bytes[..cut]).is_err());
        }
    }
}
