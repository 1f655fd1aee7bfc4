//! The tiered cache: L1 quick_cache in process, L2 Redis behind the `redis` feature.
//!
//! Keys are `{strategy}:{key}`; each strategy has a default TTL. Reads try L1, then L2 (promoting
//! into L1 with the remaining TTL); writes go to both. Concurrent misses of one key are
//! coalesced through fill leases: one caller computes, the others wait for its PUT. This module
//! owns no thread; the daemon's sweeper calls [`TieredCache::sweep`].

mod entry;
mod fence;
mod fill;
pub mod glob;
pub mod l1;
pub mod l2;
mod latency;
mod many;
pub mod stats;

use entry::key_is_valid;
pub use entry::{
    ClearLevel, Entry, Level, MAX_CONTENT_TYPE_LEN, MAX_KEY_LEN, MAX_TTL, check_content_type, check_ttl,
    is_header_text,
};
pub use fill::Lease;

use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::model::now_ms;
use bytes::Bytes;
use parking_lot::Mutex;
use stats::{Counters, Latency};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// One strategy: its default TTL, its counters and its lookup latency (split by whether L1
/// answered, so a hit is recorded once and the per-level and total figures are merged from these).
struct Strategy {
    /// The default TTL in nanoseconds (a reload may change it: [`TieredCache::set_ttls`]).
    ttl_ns: AtomicU64,
    counters: Counters,
    l1_answered: Latency,
    beyond_l1: Latency,
}

thread_local! {
    /// `{strategy}:{key}` of the L1 lookup in progress: lookups build the full key here instead
    /// of allocating one per request.
    static FULL_KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

pub struct TieredCache {
    l1: l1::L1,
    l2: l2::L2,
    strategies: BTreeMap<String, Strategy>,
    total: Counters,
    /// The L1 part of lookups L1 did not answer (whole lookups are timed per strategy).
    l1_miss_latency: Latency,
    /// Full key → the lease on filling it. Entries leave on PUT (which wakes the waiters) or
    /// are replaced once expired.
    leases: Mutex<HashMap<String, (Instant, Arc<Notify>)>>,
    /// Keeps an L2 read that raced a write from promoting the older value into L1.
    fences: fence::Fences,
    /// The largest value taken: `cache.max_entry_bytes`, or less when a byte budget's L1
    /// could not keep one that large ([`l1::L1::max_weight`]).
    max_value: usize,
    cfg: CacheConfig,
}

impl Strategy {
    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_ns.load(Relaxed))
    }
}

impl TieredCache {
    pub fn new(cfg: CacheConfig) -> Result<TieredCache> {
        let strategies = cfg.strategies.iter().map(|(k, &ttl)| {
            (
                k.clone(),
                Strategy {
                    ttl_ns: AtomicU64::new(ttl.as_nanos() as u64),
                    counters: Counters::default(),
                    l1_answered: Latency::default(),
                    beyond_l1: Latency::default(),
                },
            )
        });
        let l1 = l1::L1::new(cfg.max_entries, cfg.max_bytes, cfg.strategies.keys().map(String::as_str));
        let max_value = largest_value(&cfg, l1.max_weight);
        Ok(TieredCache {
            l1,
            max_value,
            l2: l2::L2::new(&cfg)?,
            strategies: strategies.collect(),
            total: Counters::default(),
            l1_miss_latency: Latency::default(),
            leases: Mutex::default(),
            fences: fence::Fences::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// The strategy of a valid (strategy, key) pair.
    fn strategy(&self, strategy: &str, key: &str) -> Result<&Strategy> {
        let s = self.strategies.get(strategy).ok_or_else(|| {
            Error::UnknownStrategy(format!(
                "unknown cache strategy {strategy:?}; known: {}",
                self.strategies.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if !key_is_valid(key) {
            return Err(Error::invalid(format!(
                "invalid cache key: must be 1 to {MAX_KEY_LEN} bytes of UTF-8 without control characters"
            )));
        }
        Ok(s)
    }

    /// Validates strategy and key; returns the full key and the strategy's default TTL.
    pub fn full_key(&self, strategy: &str, key: &str) -> Result<(String, Duration)> {
        let s = self.strategy(strategy, key)?;
        Ok((format!("{strategy}:{key}"), s.ttl()))
    }

    /// New default TTLs for the strategies named (a reload); others are left alone. An entry
    /// keeps the expiry it was stored with.
    pub fn set_ttls(&self, ttls: &BTreeMap<String, Duration>) {
        for (name, ttl) in ttls {
            if let Some(s) = self.strategies.get(name) {
                s.ttl_ns.store(ttl.as_nanos() as u64, Relaxed);
            }
        }
    }

    /// Adds one to a counter of the strategy and of the total.
    fn count(&self, s: &Strategy, field: fn(&Counters) -> &AtomicU64) {
        field(&s.counters).fetch_add(1, Relaxed);
        field(&self.total).fetch_add(1, Relaxed);
    }

    /// Counts an L2 call Redis did not answer against the strategy (the L2 level counts it too).
    fn l2_answered<T>(&self, s: &Strategy, r: std::result::Result<T, l2::NoAnswer>) -> Option<T> {
        if r.is_err() {
            self.count(s, |c| &c.l2_errors);
        }
        r.ok()
    }

    /// Records `n` lookups of `ns` each for the strategy (and so in all), L1 answered or not.
    fn timed(&self, s: &Strategy, l1_answered: bool, ns: u64, n: u64) {
        let l = if l1_answered { &s.l1_answered } else { &s.beyond_l1 };
        l.record_ns_times(ns, n);
    }

    /// The live L1 entry, found without allocating (the full key is built in a thread-local).
    fn l1_get(&self, s: &Strategy, strategy: &str, key: &str, now: i64) -> Option<Arc<Entry>> {
        let lookup = FULL_KEY.with_borrow_mut(|full| {
            full.clear();
            full.push_str(strategy);
            full.push(':');
            full.push_str(key);
            self.l1.get(full, now)
        });
        match lookup {
            l1::Lookup::Hit(e) => Some(e),
            l1::Lookup::Expired => {
                self.count(s, |c| &c.expirations);
                None
            }
            l1::Lookup::Missing => None,
        }
    }

    /// The live entry, from L1 or else L2 (then promoted into L1).
    pub async fn get(&self, strategy: &str, key: &str) -> Result<Option<(Arc<Entry>, Level)>> {
        let started = Instant::now();
        let s = self.strategy(strategy, key)?;
        let now = now_ms();
        let mut found = self.l1_get(s, strategy, key, now).map(|e| (e, Level::L1));
        let l1_ns = started.elapsed().as_nanos() as u64;
        if found.is_some() {
            self.timed(s, true, l1_ns, 1);
        } else {
            self.l1_miss_latency.record_ns(l1_ns);
        }
        if found.is_none() && self.l2.enabled() {
            let full = format!("{strategy}:{key}");
            let ticket = self.fences.ticket(&full);
            let read = self.l2.get(&full).await;
            if let Some(e) = self.l2_answered(s, read).flatten().filter(|e| e.expires_at_ms > now) {
                let e = Arc::new(e);
                self.fences.promote(&ticket, || self.l1.insert(full, e.clone()));
                found = Some((e, Level::L2));
            }
        }
        match &found {
            Some((_, Level::L1)) => self.count(s, |c| &c.l1_hits),
            Some((_, Level::L2)) => self.count(s, |c| &c.l2_hits),
            None => self.count(s, |c| &c.misses),
        }
        if found.as_ref().is_none_or(|f| f.1 == Level::L2) {
            let ns = if self.l2.enabled() { started.elapsed().as_nanos() as u64 } else { l1_ns };
            self.timed(s, false, ns, 1);
        }
        Ok(found)
    }

    /// The live L1 entry of a valid key, counted and timed as a hit; `None`, counting nothing,
    /// when the key is invalid or L1 does not hold it: the caller then goes the full way
    /// through [`TieredCache::get`] (the HTTP fast path for cache hits).
    /// `now_ms` is the caller's clock reading (one read less on the hottest path).
    /// Whether a second level is configured (then lookups that miss L1 wait for Redis).
    pub fn has_l2(&self) -> bool {
        self.l2.enabled()
    }

    pub fn get_l1_hit(&self, strategy: &str, key: &str, now_ms: i64) -> Option<Arc<Entry>> {
        let started = Instant::now();
        let s = self.strategy(strategy, key).ok()?;
        let e = self.l1_get(s, strategy, key, now_ms)?;
        self.count(s, |c| &c.l1_hits);
        self.timed(s, true, started.elapsed().as_nanos() as u64, 1);
        Some(e)
    }

    /// The largest value taken, in bytes.
    pub fn max_value(&self) -> usize {
        self.max_value
    }

    /// A value of `len` bytes fits the entry size limit (else [`Error::TooLarge`], a 413).
    pub fn check_value_len(&self, len: usize) -> Result<()> {
        if len > self.max_value {
            let why = match self.max_value < self.cfg.max_entry_bytes {
                true => {
                    format!(" (what L1 keeps of one entry with cache.max_bytes = {})", self.cfg.max_bytes)
                }
                false => String::new(),
            };
            return Err(Error::TooLarge(format!(
                "cache value of {len} bytes is over the {}-byte entry limit{why}",
                self.max_value
            )));
        }
        Ok(())
    }

    /// Stores a value in both levels (TTL: `ttl`, else the strategy's) and wakes fill waiters.
    /// A TTL must be within [`check_ttl`]'s bounds.
    pub async fn set(
        &self,
        strategy: &str,
        key: &str,
        value: Bytes,
        content_type: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let s = self.strategy(strategy, key)?;
        let full = format!("{strategy}:{key}");
        self.check_value_len(value.len())?;
        content_type.map(check_content_type).transpose()?;
        let ttl = ttl.unwrap_or_else(|| s.ttl());
        check_ttl(ttl)?;
        let entry = Arc::new(Entry {
            value,
            content_type: content_type.map(Arc::from),
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as i64),
        });
        // Fences only matter when L2 can promote (no L2: no cost on the write path).
        let write = self.l2.enabled().then(|| self.fences.write(&full));
        self.l1.insert(full.clone(), entry.clone());
        let written = self.l2.set(&full, &entry).await;
        self.l2_answered(s, written);
        drop(write);
        self.count(s, |c| &c.sets);
        self.release(&full);
        Ok(())
    }

    /// Removes a key from both levels and ends its fill lease, if any (a lease holder that
    /// cannot compute the value deletes the key, and a waiter takes the next lease at once
    /// instead of a whole lease TTL later); whether L1 held the key.
    pub async fn delete(&self, strategy: &str, key: &str) -> Result<bool> {
        let s = self.strategy(strategy, key)?;
        let full = format!("{strategy}:{key}");
        let write = self.l2.enabled().then(|| self.fences.write(&full));
        let found = self.l1.remove(&full);
        let deleted = self.l2.delete(&full).await;
        self.l2_answered(s, deleted);
        drop(write);
        self.count(s, |c| &c.deletes);
        self.release(&full);
        Ok(found)
    }

    /// Removes every key matching a glob (`*`, `?`, `[...]`, as Redis reads it: [`glob`]) over
    /// `{strategy}:{key}`, in L1 and L2; returns how many L1 and L2 entries went.
    pub async fn invalidate(&self, pattern: &str) -> Result<(u64, u64)> {
        let glob = glob::Glob::new(pattern)?;
        let _write = self.l2.enabled().then(|| self.fences.write_all());
        let l1 = self.l1.remove_where(|k, _| glob.matches(k));
        let l2 = self.l2.invalidate(&glob).await;
        Ok((l1, l2))
    }

    /// L1's live keys matching a glob (every key without one), the `limit` first in key order,
    /// and how many match in all.
    pub fn keys(&self, pattern: Option<&str>, limit: usize) -> Result<l1::KeyListing> {
        let glob = pattern.map(glob::Glob::new).transpose()?;
        let select = |k: &str| glob.as_ref().is_none_or(|g| g.matches(k));
        Ok(self.l1.keys(now_ms(), select, limit))
    }

    pub async fn clear(&self, level: ClearLevel) -> Result<(u64, u64)> {
        let _write = self.l2.enabled().then(|| self.fences.write_all());
        let l1 = if level != ClearLevel::L2 { self.l1.clear() } else { 0 };
        let l2 = if level != ClearLevel::L1 { self.l2.clear().await? } else { 0 };
        Ok((l1, l2))
    }

    /// Drops expired L1 entries (returns how many) and fill leases that ran out.
    pub fn sweep(&self) -> u64 {
        self.drop_expired_leases(std::time::Instant::now());
        let n = self.l1.sweep(now_ms());
        self.total.expirations.fetch_add(n, Relaxed);
        n
    }

    /// Live L1 entries, for the warm-restart snapshot.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.l1.entries(now_ms()).into_iter().map(|(k, e)| (k, Entry::clone(&e))).collect()
    }

    /// Loads snapshot entries still alive into L1.
    pub fn load(&self, entries: Vec<(String, Entry)>) -> usize {
        let now = now_ms();
        let mut n = 0;
        for (k, e) in entries.into_iter().filter(|(_, e)| e.expires_at_ms > now) {
            self.l1.insert(k, Arc::new(e));
            n += 1;
        }
        n
    }
}

/// `cache.max_entry_bytes`, lowered (with a warning) to what L1 keeps under the longest key
/// when a small byte budget could not keep a value that large: such a value was taken (204)
/// and never stored.
fn largest_value(cfg: &CacheConfig, l1_max_weight: u64) -> usize {
    let longest_key = cfg.strategies.keys().map(String::len).max().unwrap_or(0) + 1 + MAX_KEY_LEN;
    let room = l1_max_weight.saturating_sub(l1::ENTRY_OVERHEAD + longest_key as u64);
    let max_value = cfg.max_entry_bytes.min(usize::try_from(room).unwrap_or(usize::MAX));
    if max_value < cfg.max_entry_bytes {
        log::warn!(
            "cache.max_bytes = {} keeps values of at most {max_value} bytes per entry (a share of the \
             budget per L1 shard); larger ones are refused (413), not cache.max_entry_bytes = {}",
            cfg.max_bytes,
            cfg.max_entry_bytes
        );
    }
    max_value
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn cache() -> TieredCache {
        let dir = std::path::Path::new("/nonexistent");
        TieredCache::new(crate::config::Config::for_test(dir).cache).unwrap()
    }

    #[tokio::test]
    async fn unknown_strategy_lists_the_known_ones() {
        let e = cache().get("nope", "k").await.unwrap_err();
        assert!(matches!(e, Error::UnknownStrategy(ref m) if m.contains("crew_config")), "{e}");
    }
}
