//! Chunk codec: one series-hour of points ⇄ bytes. Pure functions; no I/O.
//!
//! Layout of a chunk (all integers little-endian):
//!
//! ```text
//! u8      format: high nibble = version (1), bit 1 = no value falls (a counter without a
//!         reset, so its increase is last − first), low bit = value mode (0 decimal, 1 XOR)
//! varint  count (≥ 1)
//! zigzag  first timestamp (unix ms)
//! varint  last − first timestamp
//! f64 ×5  sum, min, max, first value, last value      ← the summary header
//! u8      Rice parameter for timestamps
//! u8 ×2   decimal exponent e, Rice parameter for values (decimal mode only)
//! bits    count−1 timestamp codes, then count value codes, MSB first
//! ```
//!
//! Timestamps are delta-of-delta coded; in decimal mode every value `v` equals `i / 10^e` bit for
//! bit for an integer `i`, and the first `i` and then successive differences are coded. Both
//! streams zig-zag their differences and write them as Rice codes whose parameter is chosen per
//! chunk (a regular interval costs one bit a point; a gauge with two decimals about one byte).
//! Other values use Gorilla XOR coding. The summary header lets hourly aggregates skip decoding.
//! Decoding never panics on bad bytes.

use super::bits::{BitReader, BitWriter, get_rice, put_rice_all, rice_parameter, unzigzag, zigzag};
pub(crate) use super::bits::{get_varint, put_varint};
use crate::error::{Error, Result};
use crate::model::Point;

const VERSION: u8 = 1 << 4;
const MODE_XOR: u8 = 1;
/// No value is below the one before it. Chunks written before the flag existed lack it, so its
/// absence only means a rate must decode them.
const NEVER_FALLS: u8 = 2;
/// Largest decimal exponent tried; beyond 10^9 the integers stop being small.
const MAX_EXP: u32 = 9;
const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// |i| must stay below 2^53 so `i as f64` is exact.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// Rounds to the nearest integer (ties to even). Adding and subtracting 1.5 × 2^52 does it in two
/// instructions where `f64::round` is a library call; outside ±2^51 the values are integers (or
/// unrepresentable as `i`) already. Encoders verify exactness, so the tie rule never matters.
fn round(x: f64) -> f64 {
    const MAGIC: f64 = 6_755_399_441_055_744.0;
    if x.abs() < 2_251_799_813_685_248.0 { (x + MAGIC) - MAGIC } else { x.round() }
}

/// The summary of a chunk, readable without decoding its points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkHeader {
    pub count: u32,
    pub first_ts: i64,
    pub last_ts: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first: f64,
    pub last: f64,
    /// No value is below the one before it: the increase is `last − first` (false for chunks
    /// written before the flag existed).
    pub never_falls: bool,
}

/// Sorts by timestamp and keeps, for each timestamp, the value that came last (last write wins).
pub fn normalize(points: &mut Vec<Point>) {
    // A stable sort keeps arrival order among equal timestamps, so the last of a run is newest.
    points.sort_by_key(|p| p.0);
    let mut out = 0;
    for i in 0..points.len() {
        if i + 1 < points.len() && points[i + 1].0 == points[i].0 {
            continue;
        }
        points[out] = points[i];
        out += 1;
    }
    points.truncate(out);
}

/// Encodes points that are sorted by timestamp with no duplicates (see [`normalize`]).
pub fn encode(points: &[Point]) -> Vec<u8> {
    debug_assert!(points.windows(2).all(|w| w[0].0 < w[1].0));
    let mut out = Vec::with_capacity(64 + points.len() * 2);
    let Some(&(first_ts, first)) = points.first() else {
        return out;
    };
    let (last_ts, last) = points[points.len() - 1];
    let exp = decimal_exponent(points);
    let never_falls = points.windows(2).all(|w| w[1].1 >= w[0].1);
    out.push(VERSION | if exp.is_none() { MODE_XOR } else { 0 } | if never_falls { NEVER_FALLS } else { 0 });
    put_varint(&mut out, points.len() as u64);
    put_varint(&mut out, zigzag(first_ts));
    put_varint(&mut out, last_ts.wrapping_sub(first_ts) as u64);
    let (mut sum, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &(_, v) in points {
        sum += v;
        min = f64::min(min, v);
        max = f64::max(max, v);
    }
    for f in [sum, min, max, first, last] {
        out.extend_from_slice(&f.to_le_bytes());
    }
    let mut prev_delta = 0i64;
    let ts_codes: Vec<u64> = points
        .windows(2)
        .map(|pair| {
            let delta = pair[1].0.wrapping_sub(pair[0].0);
            let z = zigzag(delta.wrapping_sub(prev_delta));
            prev_delta = delta;
            z
        })
        .collect();
    let k_ts = rice_parameter(&ts_codes);
    out.push(k_ts as u8);
    let value_codes: Option<Vec<u64>> = exp.map(|e| {
        let mut prev = 0i64;
        points
            .iter()
            .map(|&(_, v)| {
                let i = round(v * POW10[e as usize]) as i64;
                let z = zigzag(i.wrapping_sub(prev));
                prev = i;
                z
            })
            .collect()
    });
    match (exp, value_codes) {
        (Some(e), Some(codes)) => {
            let k_val = rice_parameter(&codes);
            out.extend_from_slice(&[e as u8, k_val as u8]);
            let mut w = BitWriter::new(out);
            put_rice_all(&mut w, &ts_codes, k_ts);
            put_rice_all(&mut w, &codes, k_val);
            w.finish()
        }
        _ => {
            let mut w = BitWriter::new(out);
            put_rice_all(&mut w, &ts_codes, k_ts);
            put_xor(&mut w, points);
            w.finish()
        }
    }
}

/// Reads only the summary header.
pub fn header(bytes: &[u8]) -> Result<ChunkHeader> {
    Ok(read_header(bytes)?.0)
}

/// Decodes every point of a chunk.
pub fn decode(bytes: &[u8]) -> Result<Vec<Point>> {
    let (h, pos, layout) = read_header(bytes)?;
    let mut r = BitReader::new(&bytes[pos..]);
    let n = h.count as usize;
    // Each point after the first takes at least two bits; a larger count is a damaged chunk.
    if n > 1 + (bytes.len() - pos) * 4 {
        return Err(corrupt("count exceeds payload"));
    }
    let mut ts = Vec::with_capacity(n);
    ts.push(h.first_ts);
    let (mut prev, mut delta) = (h.first_ts, 0i64);
    for _ in 1..n {
        delta = delta.wrapping_add(unzigzag(get_rice(&mut r, layout.k_ts)?));
        prev = prev.wrapping_add(delta);
        ts.push(prev);
    }
    let mut points = Vec::with_capacity(n);
    match layout.exp {
        Some(e) => {
            let mut i = 0i64;
            for t in ts {
                i = i.wrapping_add(unzigzag(get_rice(&mut r, layout.k_val)?));
                points.push((t, i as f64 / POW10[e as usize]));
            }
        }
        None => get_xor(&mut r, &ts, &mut points)?,
    }
    Ok(points)
}

/// How a chunk's bit stream is coded.
struct Layout {
    exp: Option<u32>,
    k_ts: u32,
    k_val: u32,
}

fn read_header(bytes: &[u8]) -> Result<(ChunkHeader, usize, Layout)> {
    let mut pos = 0;
    let format = *bytes.first().ok_or_else(|| corrupt("empty chunk"))?;
    pos += 1;
    if format & 0xF0 != VERSION || format & 0x0C != 0 {
        return Err(corrupt(format!("unknown chunk format {format:#x}")));
    }
    let count = get_varint(bytes, &mut pos)?;
    let first_ts = unzigzag(get_varint(bytes, &mut pos)?);
    let span = get_varint(bytes, &mut pos)?;
    if count == 0 || count > u32::MAX as u64 {
        return Err(corrupt("bad count or span"));
    }
    let mut f = [0f64; 5];
    for slot in &mut f {
        let b = bytes.get(pos..pos + 8).ok_or_else(|| corrupt("truncated header"))?;
        *slot = f64::from_le_bytes(b.try_into().map_err(|_| corrupt("truncated header"))?);
        pos += 8;
    }
    let byte = |pos: usize| bytes.get(pos).copied().map(u32::from).ok_or_else(|| corrupt("truncated header"));
    let k_ts = byte(pos)?;
    pos += 1;
    let (exp, k_val) = if format & MODE_XOR == 0 {
        let (e, k) = (byte(pos)?, byte(pos + 1)?);
        pos += 2;
        if e > MAX_EXP {
            return Err(corrupt("bad decimal exponent"));
        }
        (Some(e), k)
    } else {
        (None, 0)
    };
    if k_ts > 63 || k_val > 63 {
        return Err(corrupt("bad Rice parameter"));
    }
    let h = ChunkHeader {
        count: count as u32,
        first_ts,
        last_ts: first_ts.wrapping_add(span as i64),
        sum: f[0],
        min: f[1],
        max: f[2],
        first: f[3],
        last: f[4],
        never_falls: format & NEVER_FALLS != 0,
    };
    Ok((h, pos, Layout { exp, k_ts, k_val }))
}

/// Takes a chunk back to the format perfd read before [`NEVER_FALLS`] existed (schema 1, see
/// `store::downgrade`): clears the flag, which only ever saved decoding. Whether it was set.
pub(super) fn clear_never_falls(chunk: &mut [u8]) -> bool {
    match chunk.first_mut() {
        Some(format) if *format & 0xF0 == VERSION && *format & NEVER_FALLS != 0 => {
            *format &= !NEVER_FALLS;
            true
        }
        _ => false,
    }
}

pub(super) fn corrupt(msg: impl Into<String>) -> Error {
    Error::Corrupt(format!("chunk: {}", msg.into()))
}

/// The smallest exponent that represents every value exactly, if one does.
fn decimal_exponent(points: &[Point]) -> Option<u32> {
    let exact = |v: f64, e: u32| {
        let i = round(v * POW10[e as usize]);
        i.abs() < MAX_EXACT && ((i as i64) as f64 / POW10[e as usize]).to_bits() == v.to_bits()
    };
    let mut e = 0;
    for &(_, v) in points {
        while !exact(v, e) {
            e += 1;
            if e > MAX_EXP {
                return None;
            }
        }
    }
    // A value exact at its own exponent may not be exact at a larger one; check them all.
    points.iter().all(|&(_, v)| exact(v, e)).then_some(e)
}

fn put_xor(w: &mut BitWriter, points: &[Point]) {
    let mut prev = points[0].1.to_bits();
    w.put(prev, 64);
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for &(_, v) in &points[1..] {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.put(0, 1);
            continue;
        }
        let (lz, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
        if lead != u32::MAX && lz >= lead && tz >= trail {
            w.put(0b10, 2);
            w.put(x >> trail, 64 - lead - trail);
        } else {
            let sig = 64 - lz - tz;
            w.put(0b11, 2);
            w.put(lz as u64, 5);
            w.put((sig & 63) as u64, 6); // 64 is written as 0
            w.put(x >> tz, sig);
            (lead, trail) = (lz, tz);
        }
    }
}

fn get_xor(r: &mut BitReader, ts: &[i64], points: &mut Vec<Point>) -> Result<()> {
    let mut prev = r.get(64)?;
    points.push((ts[0], f64::from_bits(prev)));
    let (mut lead, mut trail) = (u32::MAX, 0u32);
    for &t in &ts[1..] {
        if r.get(1)? == 1 {
            if r.get(1)? == 0 {
                if lead == u32::MAX {
                    return Err(corrupt("XOR window used before it was set"));
                }
            } else {
                lead = r.get(5)? as u32;
                let sig = match r.get(6)? as u32 {
                    0 => 64,
                    s => s,
                };
                if lead + sig > 64 {
                    return Err(corrupt("XOR window out of range"));
                }
                trail = 64 - lead - sig;
            }
            prev ^= r.get(64 - lead - trail)? << trail;
        }
        points.push((t, f64::from_bits(prev)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(points: &[Point]) {
        let bytes = encode(points);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), points.len());
        for (a, b) in points.iter().zip(&back) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "{} vs {}", a.1, b.1);
        }
        let h = header(&bytes).unwrap();
        assert_eq!(h.count as usize, points.len());
        assert_eq!(h.first_ts, points[0].0);
        assert_eq!(h.last_ts, points[points.len() - 1].0);
        assert_eq!(h.never_falls, points.windows(2).all(|w| w[1].1 >= w[0].1));
    }

    #[test]
    fn special_values_round_trip() {
        let vals = [
            0.0,
            -0.0,
            1.5,
            -2.25,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e-310,
            42.0,
            42.0,
            42.0,
            0.1,
            0.2,
            0.30000000000000004,
            1e300,
            -1e-300,
        ];
        let pts: Vec<Point> = vals.iter().enumerate().map(|(i, &v)| (i as i64 * 7 - 3, v)).collect();
        round_trip(&pts);
    }

    #[test]
    fn gauges_with_two_decimals_are_compact() {
        let pts: Vec<Point> = (0..3600)
            .map(|i| (1_700_000_000_000 + i * 1000, ((i * 37 % 200) as f64 + 4000.0) / 100.0))
            .collect();
        let bytes = encode(&pts);
        round_trip(&pts);
        assert!(bytes.len() < 3 * pts.len(), "{} bytes", bytes.len());
        assert_eq!(bytes[0] & MODE_XOR, 0, "should use decimal mode");
    }

    #[test]
    fn normalize_keeps_last_write() {
        let mut p = vec![(5, 1.0), (1, 2.0), (5, 3.0), (2, 4.0), (5, 9.0)];
        normalize(&mut p);
        assert_eq!(p, vec![(1, 2.0), (2, 4.0), (5, 9.0)]);
    }

    #[test]
    fn garbage_never_panics() {
        let pts: Vec<Point> = (0..100).map(|i| (i * 1000, i as f64 * 0.37)).collect();
        let good = encode(&pts);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            let _ = decode(&bad);
        }
    }

    proptest! {
        #[test]
        fn any_points_round_trip(
            raw in prop::collection::vec((any::<i64>(), any::<u64>()), 1..300),
            regular in any::<bool>(),
        ) {
            let mut pts: Vec<Point> = raw.iter().enumerate().map(|(i, &(t, bits))| {
                let ts = if regular { 1_600_000_000_000 + i as i64 * 10_000 } else { t >> 2 };
                let v = f64::from_bits(bits);
                (ts, if v.is_finite() { v } else { bits as f64 })
            }).collect();
            normalize(&mut pts);
            round_trip(&pts);
        }

        #[test]
        fn decimal_points_round_trip(
            raw in prop::collection::vec((0i64..5_000, -1_000_000i64..1_000_000, 0u32..4), 1..300),
        ) {
            let mut pts: Vec<Point> = raw.iter()
                .map(|&(t, i, e)| (t * 997, i as f64 / POW10[e as usize]))
                .collect();
            normalize(&mut pts);
            round_trip(&pts);
        }
    }
}
