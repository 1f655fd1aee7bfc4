//! L1: the in-process quick_cache. Not an LRU (S3-FIFO-like), so callers never assume an order.
//!
//! quick_cache has no TTL: every entry carries its expiry, reads drop expired entries, and
//! [`L1::sweep`] removes the rest periodically.

use super::Entry;
use quick_cache::{Lifecycle, Weighter, sync::Cache};
use std::collections::BTreeMap;
use std::sync::Arc as Shared;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Weighs entries by bytes when a byte budget is set, else counts them.
#[derive(Clone)]
pub struct EntryWeighter {
    by_bytes: bool,
}

/// What an entry weighs beyond its key and value bytes, with a byte budget.
pub const ENTRY_OVERHEAD: u64 = 64;

impl Weighter<String, Shared<Entry>> for EntryWeighter {
    fn weight(&self, key: &String, val: &Shared<Entry>) -> u64 {
        if self.by_bytes { (key.len() + val.value.len()) as u64 + ENTRY_OVERHEAD } else { 1 }
    }
}

/// Evictions (capacity pressure, never explicit removals), in all and per key prefix (the
/// strategy: what comes before the first `:`).
#[derive(Default)]
pub struct Evictions {
    pub total: AtomicU64,
    pub by_prefix: BTreeMap<String, AtomicU64>,
}

impl Evictions {
    pub fn of(&self, prefix: &str) -> u64 {
        self.by_prefix.get(prefix).map_or(0, |n| n.load(Relaxed))
    }
}

#[derive(Clone)]
pub struct EvictionCounter(Arc<Evictions>);

impl Lifecycle<String, Shared<Entry>> for EvictionCounter {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), key: String, _: Shared<Entry>) {
        self.0.total.fetch_add(1, Relaxed);
        if let Some(n) = key.split_once(':').and_then(|(prefix, _)| self.0.by_prefix.get(prefix)) {
            n.fetch_add(1, Relaxed);
        }
    }
}

/// Entries and bytes (keys and values) that L1 holds for one key prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
}

#[derive(Debug, PartialEq)]
pub enum Lookup {
    Hit(Shared<Entry>),
    /// It was there but past its expiry (and is now removed).
    Expired,
    Missing,
}

pub struct L1 {
    /// Values behind an `Arc`: a lookup clones one pointer, not a `Bytes` and a content type.
    cache: Cache<String, Shared<Entry>, EntryWeighter, foldhash::fast::RandomState, EvictionCounter>,
    pub evictions: Arc<Evictions>,
    /// The heaviest entry the cache keeps: about one shard's share of the byte budget
    /// (`u64::MAX` without one). quick_cache drops a heavier entry on insert, without a word.
    pub max_weight: u64,
}

impl L1 {
    /// `max_bytes` 0 means no byte budget: the cache holds `max_entries` entries. Evictions are
    /// also counted per key prefix in `prefixes` (the strategies).
    pub fn new<'a>(max_entries: usize, max_bytes: u64, prefixes: impl IntoIterator<Item = &'a str>) -> L1 {
        let by_bytes = max_bytes > 0;
        let capacity = if by_bytes { max_bytes } else { max_entries as u64 };
        let by_prefix = prefixes.into_iter().map(|p| (p.to_owned(), AtomicU64::new(0))).collect();
        let evictions = Arc::new(Evictions { total: AtomicU64::new(0), by_prefix });
        let counter = EvictionCounter(evictions.clone());
        let cache =
            Cache::with(max_entries, capacity, EntryWeighter { by_bytes }, Default::default(), counter);
        let max_weight = if by_bytes { largest_weight(max_entries, capacity) } else { u64::MAX };
        L1 { cache, evictions, max_weight }
    }

    /// The live entry for `key`; an expired one is removed on the way.
    pub fn get(&self, key: &str, now_ms: i64) -> Lookup {
        match self.cache.get(key) {
            Some(e) if e.expires_at_ms > now_ms => Lookup::Hit(e),
            Some(_) => {
                self.cache.remove_if(key, |e| e.expires_at_ms <= now_ms);
                Lookup::Expired
            }
            None => Lookup::Missing,
        }
    }

    pub fn insert(&self, key: String, entry: Shared<Entry>) {
        self.cache.insert(key, entry);
    }

    pub fn remove(&self, key: &str) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Removes every entry `drop` selects; returns how many. Counted as they go, not as a
    /// difference of lengths, which writes made meanwhile on other threads would skew.
    pub fn remove_where(&self, drop: impl Fn(&str, &Entry) -> bool) -> u64 {
        let removed = std::cell::Cell::new(0u64);
        self.cache.retain(|k, e| {
            let gone = drop(k, e);
            removed.set(removed.get() + u64::from(gone));
            !gone
        });
        removed.get()
    }

    /// Drops expired entries; returns how many.
    pub fn sweep(&self, now_ms: i64) -> u64 {
        self.remove_where(|_, e| e.expires_at_ms <= now_ms)
    }

    pub fn clear(&self) -> u64 {
        let n = self.cache.len() as u64;
        self.cache.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub fn capacity(&self) -> u64 {
        self.cache.capacity()
    }

    /// Bytes of keys and values held (computed by walking the cache; for stats, not hot paths).
    pub fn bytes(&self) -> u64 {
        self.cache.iter().map(|(k, e)| (k.len() + e.value.len()) as u64).sum()
    }

    /// What each key prefix holds (one walk of the cache; for stats, not hot paths). Keys
    /// without a `:` are left out.
    pub fn usage_by_prefix(&self) -> BTreeMap<String, Usage> {
        let mut out: BTreeMap<String, Usage> = BTreeMap::new();
        for (k, e) in self.cache.iter() {
            let Some((prefix, _)) = k.split_once(':') else { continue };
            let bytes = (k.len() + e.value.len()) as u64;
            match out.get_mut(prefix) {
                Some(u) => {
                    u.entries += 1;
                    u.bytes += bytes;
                }
                None => {
                    out.insert(prefix.to_owned(), Usage { entries: 1, bytes });
                }
            }
        }
        out
    }

    /// The `limit` smallest live keys `select` takes, in order, and how many it takes in all.
    /// Memory is bounded by `limit`, not by the cache.
    pub fn keys(&self, now_ms: i64, select: impl Fn(&str) -> bool, limit: usize) -> KeyListing {
        let mut smallest: std::collections::BinaryHeap<KeyOrder> = std::collections::BinaryHeap::new();
        let mut matched = 0u64;
        for (k, e) in self.cache.iter() {
            if e.expires_at_ms <= now_ms || !select(&k) {
                continue;
            }
            matched += 1;
            if smallest.len() < limit {
                smallest.push(KeyOrder(k, e));
            } else if smallest.peek().is_some_and(|largest| k < largest.0) {
                smallest.pop();
                smallest.push(KeyOrder(k, e));
            }
        }
        let keys = smallest.into_sorted_vec().into_iter().map(|KeyOrder(k, e)| (k, e)).collect();
        (keys, matched)
    }

    /// Every live entry, for the warm-restart snapshot.
    pub fn entries(&self, now_ms: i64) -> Vec<(String, Shared<Entry>)> {
        self.cache.iter().filter(|(_, e)| e.expires_at_ms > now_ms).collect()
    }
}

/// Listed entries in key order, and how many matched in all.
pub type KeyListing = (Vec<(String, Shared<Entry>)>, u64);

/// An entry ordered by its key alone (for [`L1::keys`]' heap).
struct KeyOrder(String, Shared<Entry>);

impl PartialEq for KeyOrder {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for KeyOrder {}

impl PartialOrd for KeyOrder {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyOrder {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// The heaviest entry quick_cache 0.7 admits: a shard's "hot" target, 97 % of the shard's
/// share of the weight capacity (`shard.rs`), where `Cache::with` makes four shards per core,
/// rounded up to a power of two, halved while a shard would hold fewer than 32 items
/// (`sync.rs`). A test checks that an entry of this weight is kept and a heavier one is not, so
/// a change in quick_cache shows.
fn largest_weight(estimated_items: usize, capacity: u64) -> u64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two() as u64;
    while (estimated_items as u64).saturating_add(shards - 1) / shards < 32 && shards > 1 {
        shards /= 2;
    }
    let shard = capacity.saturating_add(shards - 1) / shards;
    ((shard as f64 * 0.97) as u64).clamp(shard.min(1), shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(v: &str, expires_at_ms: i64) -> Shared<Entry> {
        Shared::new(Entry { value: Bytes::copy_from_slice(v.as_bytes()), content_type: None, expires_at_ms })
    }

    #[test]
    fn expired_entries_are_never_served_and_are_swept() {
        let l1 = L1::new(100, 0, []);
        l1.insert("a".into(), entry("1", 1000));
        l1.insert("b".into(), entry("2", 2000));
        assert!(matches!(l1.get("a", 999), Lookup::Hit(_)));
        assert_eq!(l1.get("a", 1000), Lookup::Expired);
        assert_eq!(l1.get("a", 1000), Lookup::Missing);
        assert_eq!(l1.sweep(2000), 1);
        assert!(l1.is_empty());
    }

    #[test]
    fn keys_lists_the_smallest_live_matches_in_order() {
        let l1 = L1::new(1000, 0, []);
        for i in (0..300).rev() {
            l1.insert(format!("k{i:03}"), entry("v", if i % 10 == 0 { 500 } else { 2000 }));
        }
        let (keys, matched) = l1.keys(1000, |k| k.ends_with('1') || k.ends_with('0'), 5);
        let names: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["k001", "k011", "k021", "k031", "k041"], "expired k000, k010… left out");
        assert_eq!(matched, 30);
        let (keys, matched) = l1.keys(1000, |_| true, 1000);
        assert_eq!((keys.len(), matched), (270, 270));
        assert!(keys.windows(2).all(|w| w[0].0 < w[1].0));
    }

    /// Entries written on another thread during a removal do not change its count (it was the
    /// difference of two lengths, so an invalidation under writes under-reported).
    #[test]
    fn remove_where_counts_what_it_removed_under_concurrent_writes() {
        let l1 = std::sync::Arc::new(L1::new(1 << 20, 0, []));
        for i in 0..50_000 {
            l1.insert(format!("old{i}"), entry("v", i64::MAX));
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (l1, stop) = (l1.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut j = 0u64;
                while !stop.load(Relaxed) {
                    l1.insert(format!("new{j}"), entry("v", i64::MAX));
                    j += 1;
                }
                j
            })
        };
        // Bounded: until the writer has started writing.
        for _ in 0..10_000_000 {
            if l1.len() > 50_000 {
                break;
            }
            std::hint::spin_loop();
        }
        let removed = l1.remove_where(|k, _| k.starts_with("old"));
        stop.store(true, Relaxed);
        let written = writer.join().unwrap();
        assert_eq!(removed, 50_000);
        assert_eq!(l1.len() as u64, written);
    }

    #[test]
    fn evictions_and_usage_are_counted_per_prefix() {
        let l1 = L1::new(10, 0, ["a", "b"]);
        l1.insert("b:keep".into(), entry("12345", i64::MAX));
        for i in 0..100 {
            l1.insert(format!("a:{i}"), entry("v", i64::MAX));
        }
        l1.insert("other".into(), entry("v", i64::MAX));
        let usage = l1.usage_by_prefix();
        let held =
            usage.values().map(|u| u.entries).sum::<u64>() + u64::from(l1.get("other", 0) != Lookup::Missing);
        assert_eq!(held, l1.len() as u64);
        let ev = &l1.evictions;
        // Every entry not held was evicted, and counted under its prefix.
        let a_held = usage.get("a").map_or(0, |u| u.entries);
        assert_eq!(ev.of("a"), 100 - a_held);
        assert_eq!(ev.of("b"), 1 - usage.get("b").map_or(0, |u| u.entries));
        assert_eq!(ev.of("zzz"), 0);
        assert!(ev.total.load(Relaxed) >= ev.of("a") + ev.of("b"));
        if let Some(b) = usage.get("b") {
            assert_eq!(*b, Usage { entries: 1, bytes: 6 + 5 });
        }
    }

    /// Regression: with a byte budget, a value heavier than one shard's share was taken (204)
    /// and silently never stored. `max_weight` is that share: an entry of that weight is kept,
    /// one byte more is not.
    #[test]
    fn the_heaviest_entry_kept_is_max_weight() {
        for (items, budget) in [(1000, 1 << 20), (1000, 8 << 20), (10, 1 << 20), (100_000, 64 << 20)] {
            let l1 = L1::new(items, budget, []);
            assert!(l1.max_weight < budget || items < 64, "{items} {budget}: {}", l1.max_weight);
            for (extra, kept) in [(0, true), (1, false)] {
                let len = (l1.max_weight - ENTRY_OVERHEAD - 1) as usize + extra;
                l1.insert("k".into(), entry(&"x".repeat(len), i64::MAX));
                let got = l1.get("k", 0) != Lookup::Missing;
                assert_eq!(got, kept, "{items} items, {budget} bytes: a {len}-byte value");
                l1.remove("k");
            }
        }
        assert_eq!(L1::new(10, 0, []).max_weight, u64::MAX);
    }

    #[test]
    fn entry_count_and_byte_budget_hold() {
        let l1 = L1::new(10, 0, []);
        for i in 0..100 {
            l1.insert(format!("k{i}"), entry("v", i64::MAX));
        }
        assert!(l1.len() <= 10, "{}", l1.len());
        assert!(l1.evictions.total.load(Relaxed) >= 90);
        let l1 = L1::new(1000, 10_000, []);
        for i in 0..100 {
            l1.insert(format!("k{i}"), entry(&"x".repeat(500), i64::MAX));
        }
        // Which entries survive is the cache's choice (not LRU); only the budget is asserted.
        assert!(l1.bytes() <= 10_000, "{}", l1.bytes());
        assert!(l1.len() >= 5);
    }
}
