//! Request framing over the bytes a handed-over client sends, so that [`super::Handed`] can
//! time each head, refuse a head actix-http would refuse (with JSON, [`super::refusal`]), and
//! end the input after a request that closes the connection.
//!
//! A head goes to actix-http only once it is complete and checked; until then its bytes are
//! held here. Bodies pass as they come, of a known length or chunked (followed by actix-http's
//! own chunk rules, `h1/chunked.rs`); after an upgrade, `CONNECT` or a chunk actix-http would
//! refuse, nothing more is followed (nor timed).

pub use super::chunk::Chunk;
use super::refusal::{Refusal, read_head};
use bytes::BytesMut;
use std::time::{Duration, Instant};

/// A head not complete at this length is refused (actix-http's own limit, `MAX_BUFFER_SIZE`).
pub const MAX_HEAD: usize = 128 * 1024;

/// Where the client's byte stream is.
#[derive(Debug, PartialEq)]
pub enum Framing {
    /// In a head, or between requests.
    Head,
    /// In a body with this many bytes to come.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Past an upgrade, `CONNECT`, or a chunked body actix-http refuses: no longer followed.
    Untracked,
    /// Past the end of a request that closes the connection, or a refused head: nothing more
    /// is read.
    Closed,
}

/// Follows request framing over the bytes read.
#[derive(Debug)]
pub struct HeadClock {
    timeout: Duration,
    pub(super) framing: Framing,
    /// The current head's bytes so far.
    pub(super) head: Vec<u8>,
    /// When its first byte came; `None` between requests.
    started: Option<Instant>,
    /// The head's bytes went to actix-http before it was complete ([`HeadClock::release`]): it
    /// is only followed, no longer checked or answered here.
    released: bool,
    /// The request under way (its head complete) closes the connection.
    closing: bool,
}

/// Collects what actix-http gets from one read: a prefix of the bytes read, passed where they
/// are, then (once anything else must come first or instead) everything in `out`.
struct Output<'a> {
    bytes: &'a [u8],
    out: &'a mut BytesMut,
    /// `bytes[..pass]` go as they are.
    pass: usize,
    in_place: bool,
}

impl Output<'_> {
    /// `bytes[from..to]` go to actix-http, after everything before.
    fn take(&mut self, from: usize, to: usize) {
        if self.in_place && from == self.pass {
            self.pass = to;
        } else {
            let bytes = self.bytes;
            self.insert(&bytes[from..to]);
        }
    }

    /// Up to `left` bytes from `from` go to actix-http; how many there were.
    fn take_up_to(&mut self, from: usize, left: u64) -> u64 {
        let n = left.min((self.bytes.len() - from) as u64);
        self.take(from, from + n as usize);
        n
    }

    /// Other bytes go to actix-http, after everything before.
    fn insert(&mut self, other: &[u8]) {
        self.in_place = false;
        self.out.extend_from_slice(other);
    }
}

impl HeadClock {
    pub fn new(timeout: Duration) -> HeadClock {
        HeadClock {
            timeout,
            framing: Framing::Head,
            head: Vec::new(),
            started: None,
            released: false,
            closing: false,
        }
    }

    /// When the head under way must be complete.
    pub fn deadline(&self) -> Option<Instant> {
        match self.framing {
            Framing::Head => Some(self.started? + self.timeout),
            _ => None,
        }
    }

    /// Part of a head is held here, not yet given to actix-http.
    pub fn holding(&self) -> bool {
        self.framing == Framing::Head && !self.head.is_empty() && !self.released
    }

    /// Takes the next bytes the client sent (`now` is read only if a head is left unfinished).
    /// Returns how many of them go to actix-http as they are; what goes after them (a held head
    /// once complete, or the request that answers a refused one) is appended to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut BytesMut, now: impl Fn() -> Instant) -> usize {
        let mut o = Output { bytes, out, pass: 0, in_place: true };
        let mut at = 0;
        while at < bytes.len() {
            at = match self.framing {
                Framing::Untracked => {
                    o.take(at, bytes.len());
                    bytes.len()
                }
                Framing::Closed => break,
                Framing::Body(left) => {
                    let n = o.take_up_to(at, left);
                    self.framing = if n == left { self.after_body() } else { Framing::Body(left - n) };
                    at + n as usize
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    let n = o.take_up_to(at, left);
                    self.framing =
                        Framing::Chunked(if n == left { Chunk::DataCr } else { Chunk::Data(left - n) });
                    at + n as usize
                }
                Framing::Chunked(chunk) => {
                    o.take(at, at + 1);
                    self.framing = match chunk.step(bytes[at]) {
                        Ok(Some(next)) => Framing::Chunked(next),
                        Ok(None) => self.after_body(),
                        Err(()) => Framing::Untracked, // actix-http answers 400 and closes
                    };
                    at + 1
                }
                Framing::Head => match self.feed_head(&mut o, at, &now) {
                    Some(next) => next,
                    None => break,
                },
            };
        }
        o.pass
    }

    /// Head bytes from `at`: where what follows the head starts, or `None` when the rest of the
    /// bytes are held (an unfinished head) or dropped (after a refused one).
    fn feed_head(&mut self, o: &mut Output, at: usize, now: &impl Fn() -> Instant) -> Option<usize> {
        let bytes = o.bytes;
        if self.head.is_empty() {
            // Line ends before a request line: skipped, as httparse skips them.
            if bytes[at] == b'\n' {
                return Some(at + 1);
            }
            if bytes[at..].starts_with(b"\r\n") {
                return Some(at + 2);
            }
        }
        let Some(end) = head_end(&self.head, &bytes[at..]).map(|e| at + e) else {
            self.started.get_or_insert_with(now);
            self.head.extend_from_slice(&bytes[at..]);
            if self.released {
                o.take(at, bytes.len());
                if self.head.len() > MAX_HEAD {
                    self.framing = Framing::Untracked; // actix-http refuses it
                }
            } else if self.head.len() >= MAX_HEAD {
                let line_ended = memchr::memchr(b'\n', &self.head).is_some();
                let refusal = if line_ended { Refusal::HeadTooLarge } else { Refusal::LineTooLong };
                self.refuse(o, refusal.request(self.head.starts_with(b"HEAD ")));
            }
            return None;
        };
        let read = if self.head.is_empty() {
            read_head(&bytes[at..end]) // the usual case: a whole head in one read, not copied
        } else {
            self.head.extend_from_slice(&bytes[at..end]);
            read_head(&self.head)
        };
        match read {
            // Only line ends (a lone CR held, then LF): passed on, still between requests.
            None if !self.released => o.take(at, end),
            Some(Err(refusal)) if !self.released => {
                let whole = if self.head.is_empty() { &bytes[at..end] } else { &self.head[..] };
                let head = whole.starts_with(b"HEAD ");
                self.refuse(o, refusal.request(head));
                return None;
            }
            read => {
                if !self.released && !self.head.is_empty() {
                    let held = std::mem::take(&mut self.head);
                    o.insert(&held[..held.len() - (end - at)]);
                }
                o.take(at, end);
                // A released head actix-http refuses (or that did not parse here) ends what is
                // followed.
                let (framing, closing) = read.and_then(Result::ok).unwrap_or((Framing::Untracked, false));
                self.closing = closing;
                self.framing = if framing == Framing::Head { self.after_body() } else { framing };
            }
        }
        self.end_head();
        Some(end)
    }

    /// The head under way has not come in time: if actix-http has none of it, the request that
    /// answers it 408 is appended to `out` and the input ends (`true`); else `false`.
    pub fn time_out(&mut self, out: &mut BytesMut) -> bool {
        if self.released {
            return false;
        }
        out.extend_from_slice(&Refusal::Timeout.request(self.head.starts_with(b"HEAD ")));
        self.framing = Framing::Closed;
        true
    }

    /// Gives the held part of the head to actix-http now (appended to `out`): actix-http's
    /// keep-alive timer runs until it reads a byte, and would close a connection whose next
    /// head is slow to arrive. The head is then only followed.
    pub fn release(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.head);
        self.released = true;
    }

    /// Where a request's input is once its body is in.
    fn after_body(&self) -> Framing {
        if self.closing { Framing::Closed } else { Framing::Head }
    }

    /// Gives actix-http `request` (a refusal's) in place of the rest: the input ends.
    fn refuse(&mut self, o: &mut Output, request: Vec<u8>) {
        o.insert(&request);
        self.framing = Framing::Closed;
        self.end_head();
    }

    fn end_head(&mut self) {
        self.started = None;
        self.head.clear();
        if self.head.capacity() > 8192 {
            self.head = Vec::new(); // a long head once: not kept for the connection's life
        }
        self.released = false;
    }
}

/// Where a head whose first bytes are `held` ends in `bytes` (the offset just past its blank
/// line: `\n\n` or `\n\r\n`, as httparse reads lines), if it does; the blank line may straddle
/// the two.
fn head_end(held: &[u8], bytes: &[u8]) -> Option<usize> {
    if !held.is_empty() {
        let tail = &held[held.len().saturating_sub(2)..];
        let mut joint = [0u8; 4];
        let joint_len = tail.len() + bytes.len().min(2);
        joint[..tail.len()].copy_from_slice(tail);
        joint[tail.len()..joint_len].copy_from_slice(&bytes[..joint_len - tail.len()]);
        if let Some(end) = blank_line_end(&joint[..joint_len]).filter(|&e| e > tail.len()) {
            return Some(end - tail.len());
        }
    }
    blank_line_end(bytes)
}

fn blank_line_end(s: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', s).find_map(|p| match (s.get(p + 1), s.get(p + 2)) {
        (Some(b'\n'), _) => Some(p + 2),
        (Some(b'\r'), Some(b'\n')) => Some(p + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
