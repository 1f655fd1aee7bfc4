//! What Redis has not confirmed: keys whose SET or UNLINK failed, timed out or was skipped while
//! Redis was unreachable, invalidation patterns likewise, and "everything" after a failed clear
//! (or when there is too much to track). Until a repair has removed them from Redis, L2 reads
//! they cover are misses, so a value replaced, deleted or invalidated during an outage cannot
//! come back from Redis afterwards. Keys are perfd's full keys (`strategy:key`), without prefix.

use crate::cache::glob::Glob;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// Keys tracked one by one; past this the repair clears perfd's whole prefix instead.
const MAX_KEYS: usize = 10_000;
/// Patterns tracked one by one; likewise.
const MAX_PATTERNS: usize = 100;

#[derive(Default)]
struct Inner {
    /// Every note takes the next generation; a repair forgets only what its snapshot saw, so a
    /// note made while the repair ran survives it.
    generation: u64,
    keys: HashMap<String, u64>,
    patterns: Vec<(Glob, u64)>,
    everything: Option<u64>,
}

impl Inner {
    fn next(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }

    /// Everything noted so far is covered by clearing the prefix.
    fn everything(&mut self, generation: u64) {
        self.keys.clear();
        self.patterns.clear();
        self.everything = Some(generation);
    }
}

/// One repair's work, taken at one generation.
pub struct Repair {
    pub generation: u64,
    /// Clear perfd's whole prefix (then `keys` and `patterns` are empty).
    pub everything: bool,
    pub keys: Vec<String>,
    pub patterns: Vec<String>,
}

#[derive(Default)]
pub struct Unconfirmed {
    /// Lets reads skip the lock while nothing is unconfirmed (the usual case).
    any: AtomicBool,
    inner: Mutex<Inner>,
}

impl Unconfirmed {
    pub fn key(&self, key: &str) {
        let mut i = self.inner.lock();
        let g = i.next();
        i.keys.insert(key.to_owned(), g);
        if i.keys.len() > MAX_KEYS {
            i.everything(g);
        }
        self.any.store(true, Relaxed);
    }

    pub fn pattern(&self, pattern: Glob) {
        let mut i = self.inner.lock();
        let g = i.next();
        i.patterns.push((pattern, g));
        if i.patterns.len() > MAX_PATTERNS {
            i.everything(g);
        }
        self.any.store(true, Relaxed);
    }

    pub fn everything(&self) {
        let mut i = self.inner.lock();
        let g = i.next();
        i.everything(g);
        self.any.store(true, Relaxed);
    }

    /// Whether an L2 read of `key` might return what an unconfirmed write replaced or removed.
    pub fn covers(&self, key: &str) -> bool {
        if !self.any.load(Relaxed) {
            return false;
        }
        let i = self.inner.lock();
        i.everything.is_some() || i.keys.contains_key(key) || i.patterns.iter().any(|(p, _)| p.matches(key))
    }

    /// What to remove from Redis now, or `None` when everything is confirmed.
    pub fn snapshot(&self) -> Option<Repair> {
        if !self.any.load(Relaxed) {
            return None;
        }
        let i = self.inner.lock();
        Some(Repair {
            generation: i.generation,
            everything: i.everything.is_some(),
            keys: i.keys.keys().cloned().collect(),
            patterns: i.patterns.iter().map(|(p, _)| p.as_str().to_owned()).collect(),
        })
    }

    /// Forgets what a successful repair at `generation` removed.
    pub fn repaired(&self, generation: u64) {
        let mut i = self.inner.lock();
        i.keys.retain(|_, g| *g > generation);
        i.patterns.retain(|(_, g)| *g > generation);
        if i.everything.is_some_and(|g| g <= generation) {
            i.everything = None;
        }
        let any = !i.keys.is_empty() || !i.patterns.is_empty() || i.everything.is_some();
        self.any.store(any, Relaxed);
    }

    /// Keys and patterns waiting for a repair (a pending clear of the prefix counts as one).
    pub fn len(&self) -> usize {
        let i = self.inner.lock();
        i.keys.len() + i.patterns.len() + usize::from(i.everything.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_covered_until_the_repair_that_saw_them() {
        let u = Unconfirmed::default();
        assert!(!u.covers("crew_config:a") && u.snapshot().is_none());
        u.key("crew_config:a");
        u.pattern(Glob::new("crew_config:team-*").unwrap());
        assert!(u.covers("crew_config:a") && u.covers("crew_config:team-7"));
        assert!(!u.covers("crew_config:b"));
        let repair = u.snapshot().unwrap();
        assert_eq!((repair.keys.len(), repair.patterns.len(), repair.everything), (1, 1, false));
        // Noted while the repair ran: it must survive the repair.
        u.key("crew_config:b");
        u.repaired(repair.generation);
        assert!(!u.covers("crew_config:a") && !u.covers("crew_config:team-7"));
        assert!(u.covers("crew_config:b"));
        assert_eq!(u.len(), 1);
        u.repaired(u.snapshot().unwrap().generation);
        assert!(u.snapshot().is_none() && u.len() == 0);
    }

    #[test]
    fn too_many_keys_or_a_failed_clear_cover_everything() {
        let u = Unconfirmed::default();
        for i in 0..=MAX_KEYS {
            u.key(&format!("llm_response:{i}"));
        }
        let repair = u.snapshot().unwrap();
        assert!(repair.everything && repair.keys.is_empty(), "bounded: {} keys", repair.keys.len());
        assert!(u.covers("memory_query:anything"));
        u.repaired(repair.generation);
        assert!(!u.covers("memory_query:anything"));
        u.everything();
        assert!(u.covers("x:y") && u.len() == 1);
    }
}
