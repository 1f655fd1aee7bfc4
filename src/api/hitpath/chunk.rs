//! A chunked request body, byte by byte, by actix-http's own rules (`h1/chunked.rs`), so that
//! [`super::framing`] knows where the body ends and the next head begins. The chunk data itself
//! is skipped by the caller, not stepped through.

/// Where a chunked body is: actix-http's `ChunkedState`, with the chunk size read so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Chunk {
    SizeFirst,
    SizeRest(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

impl Chunk {
    /// The state after `b`: `Ok(None)` at the body's end, `Err(())` where actix-http fails it.
    pub fn step(self, b: u8) -> Result<Option<Chunk>, ()> {
        use Chunk::*;
        let hex = |b: u8| (b as char).to_digit(16).map(u64::from);
        Ok(Some(match (self, b) {
            (SizeFirst, b) => SizeRest(hex(b).ok_or(())?),
            (SizeRest(n), b) if hex(b).is_some() => {
                SizeRest(n.checked_mul(16).ok_or(())? + hex(b).unwrap_or(0))
            }
            (SizeRest(n) | SizeLws(n), b'\t' | b' ') => SizeLws(n),
            (SizeRest(n) | SizeLws(n), b';') => Extension(n),
            (SizeRest(n) | SizeLws(n) | Extension(n), b'\r') => SizeLf(n),
            (Extension(_), 0x00..=0x08 | 0x0a..=0x1f | 0x7f) => return Err(()),
            (Extension(n), _) => Extension(n),
            (SizeLf(0), b'\n') => EndCr,
            (SizeLf(n), b'\n') => Data(n),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => SizeFirst,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (EndLf, b'\n') => return Ok(None),
            _ => return Err(()),
        }))
    }
}
