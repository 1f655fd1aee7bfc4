//! The bit-level primitives of the chunk codec: MSB-first bit packing, Rice codes with an escape
//! for outliers, zig-zag and LEB128 varints. Pure functions; decoding never panics on bad bytes.

use super::codec::corrupt;
use crate::error::Result;

/// Quotients from this value on are escaped: the code is this many ones and then 64 raw bits.
const RICE_ESCAPE: u64 = 24;

/// The Rice parameter that codes `codes` in the fewest bits: near log2 of their mean, checked
/// exactly on the neighbours.
pub(super) fn rice_parameter(codes: &[u64]) -> u32 {
    if codes.is_empty() {
        return 0;
    }
    let mean = (codes.iter().map(|&z| z as u128).sum::<u128>() / codes.len() as u128) as u64;
    let guess = 63 - mean.max(1).leading_zeros();
    let cost = |k: u32| -> u64 {
        codes
            .iter()
            .map(|&z| if z >> k < RICE_ESCAPE { (z >> k) + 1 + k as u64 } else { RICE_ESCAPE + 64 })
            .sum()
    };
    (guess.saturating_sub(1)..=(guess + 1).min(63)).min_by_key(|&k| cost(k)).unwrap_or(guess)
}

pub(super) fn put_rice_all(w: &mut BitWriter, codes: &[u64], k: u32) {
    for &z in codes {
        let q = z >> k;
        if q < RICE_ESCAPE {
            // q ones, then a zero, then the low k bits.
            w.put((1u64 << (q + 1)) - 2, q as u32 + 1);
            w.put(z, k);
        } else {
            w.put((1u64 << RICE_ESCAPE) - 1, RICE_ESCAPE as u32);
            w.put(z, 64);
        }
    }
}

#[inline]
pub(super) fn get_rice(r: &mut BitReader, k: u32) -> Result<u64> {
    let q = r.unary(RICE_ESCAPE as u32)? as u64;
    if q == RICE_ESCAPE {
        return r.get(64);
    }
    Ok((q << k) | r.get(k)?)
}

#[inline]
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(super) fn unzigzag(z: u64) -> i64 {
    ((z >> 1) as i64) ^ -((z & 1) as i64)
}

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(crate) fn get_varint(bytes: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or_else(|| corrupt("truncated varint"))?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(corrupt("varint too long"))
}

/// MSB-first bit packing into a byte vector.
pub(super) struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    /// Bits pending in `acc` (always < 8 between calls).
    nbits: u32,
}

impl BitWriter {
    /// Appends to `out` (which may already hold a header).
    pub(super) fn new(out: Vec<u8>) -> BitWriter {
        BitWriter { out, acc: 0, nbits: 0 }
    }

    /// Appends the low `n` bits of `v` (n ≤ 64).
    #[inline]
    pub(super) fn put(&mut self, v: u64, n: u32) {
        if n > 56 {
            self.put(v >> 32, n - 32);
            self.put(v & 0xffff_ffff, 32);
            return;
        }
        let v = if n == 0 { 0 } else { v & (u64::MAX >> (64 - n)) };
        self.acc = (self.acc << n) | v;
        self.nbits += n;
        while self.nbits >= 8 {
            self.nbits -= 8;
            self.out.push((self.acc >> self.nbits) as u8);
        }
        self.acc &= (1u64 << self.nbits) - 1;
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push((self.acc << (8 - self.nbits)) as u8);
        }
        self.out
    }
}

pub(super) struct BitReader<'a> {
    bytes: &'a [u8],
    /// Position in bits.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader { bytes, pos: 0 }
    }

    /// The next up-to-57 unread bits, MSB first, zero-padded past the end.
    #[inline]
    fn window(&self) -> u64 {
        let start = self.pos / 8;
        let w = match self.bytes.get(start..start + 8) {
            Some(b) => u64::from_be_bytes(b.try_into().unwrap_or_default()),
            None => {
                let mut pad = [0u8; 8];
                let tail = &self.bytes[start.min(self.bytes.len())..];
                pad[..tail.len()].copy_from_slice(tail);
                u64::from_be_bytes(pad)
            }
        };
        w << (self.pos % 8)
    }

    #[inline]
    fn take(&mut self, n: u32) -> Result<()> {
        if self.pos + n as usize > self.bytes.len() * 8 {
            return Err(corrupt("truncated bit stream"));
        }
        self.pos += n as usize;
        Ok(())
    }

    /// Reads `n` bits (n ≤ 64) as the low bits of the result.
    #[inline]
    pub(super) fn get(&mut self, n: u32) -> Result<u64> {
        if n > 56 {
            let hi = self.get(n - 32)?;
            return Ok((hi << 32) | self.get(32)?);
        }
        if n == 0 {
            return Ok(0);
        }
        let w = self.window();
        self.take(n)?;
        Ok(w >> (64 - n))
    }

    /// Counts leading one bits (at most `max` ≤ 56) and consumes them and the zero after them,
    /// unless `max` ones come first (then only those are consumed).
    #[inline]
    pub(super) fn unary(&mut self, max: u32) -> Result<u32> {
        let ones = self.window().leading_ones().min(max);
        self.take(if ones == max { ones } else { ones + 1 })?;
        Ok(ones)
    }
}
