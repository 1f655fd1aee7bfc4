//! Promotion fences. An entry read from L2 goes into L1 only if no write to its key (nor an
//! invalidation or clear) was in flight when the read began or started since. Without this, a
//! GET that missed L1 while a PUT or DELETE of the same key ran could put the older value from
//! Redis into L1, where it would outlive the write that replaced it.
//!
//! Keys share 256 shards by hash; a write to another key of the same shard only costs a skipped
//! promotion (the value is still returned, just not kept in L1).

use parking_lot::Mutex;
use std::hash::BuildHasher;

const SHARDS: usize = 256;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Writes started and not yet finished.
    in_flight: u32,
    /// Bumped when a write starts and when it ends.
    version: u64,
}

pub struct Fences {
    hasher: foldhash::fast::RandomState,
    shards: Box<[Mutex<State>]>,
    /// Invalidations and clears, which touch any key.
    global: Mutex<State>,
}

/// Taken before an L2 read; [`Fences::promote`] checks it after.
pub struct Ticket {
    shard: usize,
    at: State,
    global: State,
}

/// One write in flight, from before its L1 change until its L2 call returned. Ends on drop, so
/// a cancelled request (client gone) ends it too.
pub struct Write<'a>(&'a Mutex<State>);

impl Drop for Write<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight -= 1;
        s.version += 1;
    }
}

fn start(lock: &Mutex<State>) -> Write<'_> {
    let mut s = lock.lock();
    s.in_flight += 1;
    s.version += 1;
    Write(lock)
}

impl Default for Fences {
    fn default() -> Self {
        Fences {
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            global: Mutex::default(),
        }
    }
}

impl Fences {
    fn shard(&self, full_key: &str) -> usize {
        self.hasher.hash_one(full_key) as usize % SHARDS
    }

    pub fn ticket(&self, full_key: &str) -> Ticket {
        let global = *self.global.lock();
        let shard = self.shard(full_key);
        Ticket { shard, at: *self.shards[shard].lock(), global }
    }

    /// Marks a write of one key; hold it across both levels.
    pub fn write(&self, full_key: &str) -> Write<'_> {
        start(&self.shards[self.shard(full_key)])
    }

    /// Marks a write that may touch any key (invalidate, clear).
    pub fn write_all(&self) -> Write<'_> {
        start(&self.global)
    }

    /// Runs `insert` if the ticket still holds: nothing was in flight when it was taken and
    /// nothing started or ended since. Checked and run under the locks writers start under.
    pub fn promote(&self, t: &Ticket, insert: impl FnOnce()) -> bool {
        let global = self.global.lock();
        let shard = self.shards[t.shard].lock();
        let clean = t.at.in_flight == 0 && t.global.in_flight == 0;
        if clean && *shard == t.at && *global == t.global {
            insert();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_during_or_before_the_read_blocks_the_promotion() {
        let f = Fences::default();
        assert!(f.promote(&f.ticket("s:a"), || ()), "no write: promoted");
        let t = f.ticket("s:a");
        drop(f.write("s:a"));
        assert!(!f.promote(&t, || ()), "a write started and ended during the read");
        let w = f.write("s:a");
        let t = f.ticket("s:a");
        drop(w);
        assert!(!f.promote(&t, || ()), "a write was in flight when the read began");
        let t = f.ticket("s:a");
        let all = f.write_all();
        assert!(!f.promote(&t, || ()), "an invalidation is running");
        drop(all);
        assert!(f.promote(&f.ticket("s:a"), || ()), "all writes over: promoted again");
    }

    #[test]
    fn writes_to_other_shards_do_not_interfere() {
        let f = Fences::default();
        let other = (0..).map(|i| format!("s:{i}")).find(|k| f.shard(k) != f.shard("s:a")).unwrap();
        let t = f.ticket("s:a");
        let _w = f.write(&other);
        let mut ran = false;
        assert!(f.promote(&t, || ran = true) && ran);
    }
}
