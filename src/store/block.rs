//! Chunk blocks: the chunks of up to [`GROUP_SIZE`] series for one hour, stored as one redb value.
//!
//! redb gives each value a power-of-two run of 4 KiB pages and splits leaves in half, so a lone
//! 400-byte series-hour (a 10 s scrape) costs about 2× its size on disk and a 180 KB value 1.4×.
//! So the chunks of a group of series for one hour are packed into one block, and the block is
//! stored as parts of [`PART_SIZE`] bytes, one part per leaf page: measured here at 1.03× (see
//! the README's storage notes). All series' hours close at the same moment, so sealing writes each
//! block once. Layout: `u8 version (1)`, `varint n`, `n × (varint series id, varint length)`
//! sorted by id, then the `n` chunks (see `codec.rs`) in the same order.

use crate::error::{Error, Result};
use std::ops::Range;

/// Series per block. 64 × a 1 s series-hour (~4 KB) stays well under a megabyte per value.
pub const GROUP_SIZE: u64 = 64;
const VERSION: u8 = 1;
/// Largest part stored under one key: with the 20-byte key it just fills a 4 KiB leaf page
/// (4,070 bytes already spills into an 8 KiB page).
pub const PART_SIZE: usize = 4040;

/// The parts a block is stored as, numbered from 0.
pub fn parts(block: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    block.chunks(PART_SIZE).enumerate().map(|(i, p)| (i as u32, p))
}

/// The block a series belongs to.
pub fn group_of(series_id: u64) -> u64 {
    series_id / GROUP_SIZE
}

/// The index of a block: each series id with the byte range of its chunk.
pub fn index(bytes: &[u8]) -> Result<Vec<(u64, Range<usize>)>> {
    let bad = |m: &str| Error::Corrupt(format!("chunk block: {m}"));
    if bytes.first() != Some(&VERSION) {
        return Err(bad("unknown version"));
    }
    let mut pos = 1;
    let n = super::codec::get_varint(bytes, &mut pos)? as usize;
    if n > bytes.len() {
        return Err(bad("entry count exceeds size"));
    }
    let mut lens = Vec::with_capacity(n);
    for _ in 0..n {
        let id = super::codec::get_varint(bytes, &mut pos)?;
        let len = super::codec::get_varint(bytes, &mut pos)? as usize;
        lens.push((id, len));
    }
    let mut out = Vec::with_capacity(n);
    for (id, len) in lens {
        let end = pos.checked_add(len).filter(|&e| e <= bytes.len()).ok_or_else(|| bad("truncated"))?;
        out.push((id, pos..end));
        pos = end;
    }
    Ok(out)
}

/// The chunk of `series_id` in a block, if it has one.
pub fn find(bytes: &[u8], series_id: u64) -> Result<Option<&[u8]>> {
    Ok(index(bytes)?.into_iter().find(|(id, _)| *id == series_id).map(|(_, r)| &bytes[r]))
}

/// Builds a block from `(series id, chunk)` pairs sorted by id.
pub fn build(chunks: &[(u64, Vec<u8>)]) -> Vec<u8> {
    debug_assert!(chunks.windows(2).all(|w| w[0].0 < w[1].0));
    let size: usize = chunks.iter().map(|c| c.1.len() + 8).sum();
    let mut out = Vec::with_capacity(size + 8);
    out.push(VERSION);
    super::codec::put_varint(&mut out, chunks.len() as u64);
    for (id, c) in chunks {
        super::codec::put_varint(&mut out, *id);
        super::codec::put_varint(&mut out, c.len() as u64);
    }
    for (_, c) in chunks {
        out.extend_from_slice(c);
    }
    out
}

/// `(series id, chunk)` pairs sorted by id: what [`build`] takes.
pub type Chunks = Vec<(u64, Vec<u8>)>;

/// The chunks of a block whose series `live` keeps, in id order, and how many were left out.
pub fn retain(bytes: &[u8], mut live: impl FnMut(u64) -> Result<bool>) -> Result<(Chunks, u64)> {
    let mut kept = Vec::new();
    let mut dropped = 0;
    for (id, range) in index(bytes)? {
        if live(id)? {
            kept.push((id, bytes[range].to_vec()));
        } else {
            dropped += 1;
        }
    }
    Ok((kept, dropped))
}

/// Stores `chunks` as the block of `group` for `hour`, replacing the one there (whose tail parts
/// go: a re-encoded block can be shorter), and indexes it for retention. No chunks deletes the
/// block and its index row.
pub fn put(
    table: &mut redb::Table<(u64, i64, u32), &'static [u8]>,
    hours: &mut redb::Table<(i64, u64), ()>,
    (group, hour): (u64, i64),
    chunks: &[(u64, Vec<u8>)],
) -> Result<()> {
    let mut count = 0;
    if chunks.is_empty() {
        hours.remove((hour, group))?;
    } else {
        for (part, data) in parts(&build(chunks)) {
            table.insert((group, hour, part), data)?;
            count = part + 1;
        }
        hours.insert((hour, group), ())?;
    }
    table.retain_in((group, hour, count)..=(group, hour, u32::MAX), |_, _| false)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_find() {
        let b = build(&[(3, vec![1, 2, 3]), (9, vec![]), (70, vec![4])]);
        assert_eq!(find(&b, 3).unwrap(), Some(&[1u8, 2, 3][..]));
        assert_eq!(find(&b, 9).unwrap(), Some(&[][..]));
        assert_eq!(find(&b, 70).unwrap(), Some(&[4u8][..]));
        assert_eq!(find(&b, 4).unwrap(), None);
        for cut in 0..b.len() - 1 {
            assert!(index(&b[..cut]).is_err() || cut == 0 && b.is_empty());
        }
    }
}
