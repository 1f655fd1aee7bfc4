//! The tiered cache: L1 quick_cache in process, L2 Redis behind the `redis` feature.
//!
//! Keys are `{strategy}:{key}`; each strategy has a default TTL. Reads try L1, then L2 (promoting
//! into L1 with the remaining TTL); writes go to both. Concurrent misses of one key are
//! coalesced through fill leases: one caller computes, the others wait for its PUT. This module
//! owns no thread; the daemon's sweeper calls [`TieredCache::sweep`].

pub mod l1;
pub mod l2;
pub mod stats;

use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::model::now_ms;
use bytes::Bytes;
use parking_lot::Mutex;
use stats::{CacheStatistics, Counters, Latency};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Longest key accepted, in bytes (Redis allows more; agent backends hash longer inputs).
pub const MAX_KEY_LEN: usize = 512;

/// One cached value with its content type and absolute expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Bytes,
    pub content_type: Option<Arc<str>>,
    /// Unix ms; absolute so entries survive a restart with their remaining TTL.
    pub expires_at_ms: i64,
}

impl Entry {
    pub fn ttl_ms(&self, now_ms: i64) -> i64 {
        (self.expires_at_ms - now_ms).max(0)
    }
}

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    L1,
    L2,
}

/// Levels `POST /api/v1/metrics/cache/clear` can empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClearLevel {
    L1,
    L2,
    All,
}

/// The outcome of asking for a fill lease on a missing key.
pub enum Lease {
    /// The caller holds the lease: compute the value and store it.
    Granted,
    /// Someone else holds it until the given instant; wait on the notify.
    Held(Arc<Notify>, Instant),
}

pub struct TieredCache {
    l1: l1::L1,
    l2: l2::L2,
    /// Strategy name → default TTL.
    strategies: BTreeMap<String, Duration>,
    counters: HashMap<String, Counters>,
    total: Counters,
    latency: Latency,
    /// Full key → the lease on filling it. Entries leave on PUT (which wakes the waiters) or
    /// are replaced once expired.
    leases: Mutex<HashMap<String, (Instant, Arc<Notify>)>>,
    cfg: CacheConfig,
}

impl TieredCache {
    pub fn new(cfg: CacheConfig) -> Result<TieredCache> {
        let strategies = cfg.strategies.clone();
        Ok(TieredCache {
            l1: l1::L1::new(cfg.max_entries, cfg.max_bytes),
            l2: l2::L2::new(&cfg)?,
            counters: strategies.keys().map(|k| (k.clone(), Counters::default())).collect(),
            strategies,
            total: Counters::default(),
            latency: Latency::default(),
            leases: Mutex::default(),
            cfg,
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Validates strategy and key; returns the full key and the strategy's default TTL.
    pub fn full_key(&self, strategy: &str, key: &str) -> Result<(String, Duration)> {
        let ttl = *self.strategies.get(strategy).ok_or_else(|| {
            Error::UnknownStrategy(format!(
                "unknown cache strategy {strategy:?}; known: {}",
                self.strategies.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "invalid cache key: must be 1 to {MAX_KEY_LEN} bytes of UTF-8 without control characters"
            )));
        }
        Ok((format!("{strategy}:{key}"), ttl))
    }

    fn counters(&self, strategy: &str) -> impl Iterator<Item = &Counters> {
        self.counters.get(strategy).into_iter().chain(std::iter::once(&self.total))
    }

    /// The live entry, from L1 or else L2 (then promoted into L1).
    pub async fn get(&self, strategy: &str, key: &str) -> Result<Option<(Entry, Level)>> {
        let started = Instant::now();
        let (full, _) = self.full_key(strategy, key)?;
        let now = now_ms();
        let found = match self.l1.get(&full, now) {
            l1::Lookup::Hit(e) => Some((e, Level::L1)),
            miss => {
                if miss == l1::Lookup::Expired {
                    self.counters(strategy).for_each(|c| {
                        c.expirations.fetch_add(1, Relaxed);
                    });
                }
                match self.l2.get(&full).await.filter(|e| e.expires_at_ms > now) {
                    Some(e) => {
                        self.l1.insert(full.clone(), e.clone());
                        Some((e, Level::L2))
                    }
                    None => None,
                }
            }
        };
        self.counters(strategy).for_each(|c| {
            let counter = match &found {
                Some((_, Level::L1)) => &c.l1_hits,
                Some((_, Level::L2)) => &c.l2_hits,
                None => &c.misses,
            };
            counter.fetch_add(1, Relaxed);
        });
        self.latency.record(started.elapsed());
        Ok(found)
    }

    /// Stores a value in both levels (TTL: `ttl`, else the strategy's) and wakes fill waiters.
    pub async fn set(
        &self,
        strategy: &str,
        key: &str,
        value: Bytes,
        content_type: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let (full, default_ttl) = self.full_key(strategy, key)?;
        if value.len() > self.cfg.max_entry_bytes {
            return Err(Error::TooLarge(format!(
                "cache value of {} bytes is over the {}-byte entry limit",
                value.len(),
                self.cfg.max_entry_bytes
            )));
        }
        let ttl = ttl.unwrap_or(default_ttl);
        let entry = Entry {
            value,
            content_type: content_type.map(Arc::from),
            expires_at_ms: now_ms().saturating_add(ttl.as_millis() as i64),
        };
        self.l1.insert(full.clone(), entry.clone());
        self.l2.set(&full, &entry).await;
        self.counters(strategy).for_each(|c| {
            c.sets.fetch_add(1, Relaxed);
        });
        self.release(&full);
        Ok(())
    }

    /// Removes a key from both levels; whether L1 held it.
    pub async fn delete(&self, strategy: &str, key: &str) -> Result<bool> {
        let (full, _) = self.full_key(strategy, key)?;
        let found = self.l1.remove(&full);
        self.l2.delete(&full).await;
        self.counters(strategy).for_each(|c| {
            c.deletes.fetch_add(1, Relaxed);
        });
        Ok(found)
    }

    /// Removes every key matching a glob (`*`, `?`, `[...]`) over `{strategy}:{key}`, in L1 and
    /// L2; returns how many L1 and L2 entries went.
    pub async fn invalidate(&self, pattern: &str) -> Result<(u64, u64)> {
        let glob = glob::Pattern::new(pattern)
            .map_err(|e| Error::invalid(format!("invalid pattern {pattern:?}: {e}")))?;
        let l1 = self.l1.remove_where(|k, _| glob.matches(k));
        let l2 = self.l2.invalidate(pattern).await;
        Ok((l1, l2))
    }

    pub async fn clear(&self, level: ClearLevel) -> Result<(u64, u64)> {
        let l1 = if level != ClearLevel::L2 { self.l1.clear() } else { 0 };
        let l2 = if level != ClearLevel::L1 { self.l2.clear().await? } else { 0 };
        Ok((l1, l2))
    }

    /// Asks for the fill lease on a missing key (see [`Lease`]).
    pub fn lease(&self, full_key: &str) -> Lease {
        let now = Instant::now();
        let mut leases = self.leases.lock();
        match leases.get(full_key) {
            Some((until, notify)) if *until > now => Lease::Held(notify.clone(), *until),
            _ => {
                leases.insert(full_key.to_owned(), (now + self.cfg.lease_ttl, Arc::new(Notify::new())));
                Lease::Granted
            }
        }
    }

    fn release(&self, full_key: &str) {
        if let Some((_, notify)) = self.leases.lock().remove(full_key) {
            notify.notify_waiters();
        }
    }

    /// Waits (up to `wait`) for a missing key to be filled by whoever holds its lease; takes the
    /// lease when it is free or runs out. `Ok(Err(true))`: this caller now holds the lease;
    /// `Ok(Err(false))`: the wait ran out.
    pub async fn get_or_wait(
        &self,
        strategy: &str,
        key: &str,
        wait: Duration,
    ) -> Result<Result<(Entry, Level), bool>> {
        let deadline = Instant::now() + wait;
        let (full, _) = self.full_key(strategy, key)?;
        loop {
            if let Some(hit) = self.get(strategy, key).await? {
                return Ok(Ok(hit));
            }
            let (notify, until) = match self.lease(&full) {
                Lease::Granted => return Ok(Err(true)),
                Lease::Held(n, until) => (n, until),
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            // Registered before the re-check, so a PUT landing in between still wakes us.
            notified.as_mut().enable();
            if let l1::Lookup::Hit(hit) = self.l1.get(&full, now_ms()) {
                return Ok(Ok((hit, Level::L1)));
            }
            if Instant::now() >= deadline {
                return Ok(Err(false));
            }
            let _ = tokio::time::timeout_at(deadline.min(until).into(), notified).await;
        }
    }

    /// In-process single flight: the cached value, or `loader`'s (stored for the strategy's TTL),
    /// with concurrent callers for one key sharing a single `loader` call.
    pub async fn get_or_load<F, Fut>(&self, strategy: &str, key: &str, loader: F) -> Result<Bytes>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let wait = self.cfg.lease_ttl;
        match self.get_or_wait(strategy, key, wait).await? {
            Ok((e, _)) => Ok(e.value),
            Err(_) => {
                let (full, _) = self.full_key(strategy, key)?;
                let result = loader().await;
                match result {
                    Ok(v) => {
                        self.set(strategy, key, v.clone(), Some("application/json"), None).await?;
                        Ok(v)
                    }
                    Err(e) => {
                        self.release(&full);
                        Err(e)
                    }
                }
            }
        }
    }

    /// Drops expired L1 entries; returns how many.
    pub fn sweep(&self) -> u64 {
        let n = self.l1.sweep(now_ms());
        self.total.expirations.fetch_add(n, Relaxed);
        n
    }

    /// Live L1 entries, for the warm-restart snapshot.
    pub fn entries(&self) -> Vec<(String, Entry)> {
        self.l1.entries(now_ms())
    }

    /// Loads snapshot entries still alive into L1.
    pub fn load(&self, entries: Vec<(String, Entry)>) -> usize {
        let now = now_ms();
        let mut n = 0;
        for (k, e) in entries.into_iter().filter(|(_, e)| e.expires_at_ms > now) {
            self.l1.insert(k, e);
            n += 1;
        }
        n
    }

    pub fn statistics(&self) -> CacheStatistics {
        let (p50, p99) = self.latency.quantiles_ms();
        CacheStatistics {
            total: self.total.snapshot(),
            evictions: self.l1.evictions.load(Relaxed),
            l1_size: self.l1.len(),
            l1_capacity: self.l1.capacity(),
            l1_bytes: self.l1.bytes(),
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            strategies: self.counters.iter().map(|(k, c)| (k.clone(), c.snapshot())).collect(),
            l2: self.l2.stats(),
        }
    }

    pub fn recommendations(&self, s: &CacheStatistics) -> Vec<String> {
        stats::recommendations(s, self.cfg.max_entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn cache() -> TieredCache {
        let dir = std::path::Path::new("/nonexistent");
        TieredCache::new(crate::config::Config::for_test(dir).cache).unwrap()
    }

    #[tokio::test]
    async fn get_or_load_calls_the_loader_once_for_concurrent_callers() {
        let cache = Arc::new(cache());
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("performance", "report", || async move {
                            calls.fetch_add(1, Relaxed);
                            // Hold the lease until every caller is waiting.
                            gate.notified().await;
                            Ok(Bytes::from_static(b"{\"p99\":12}"))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        // Bounded: yield until the loader runs, then let it finish.
        for _ in 0..1000 {
            if calls.load(Relaxed) == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(&t.await.unwrap()[..], b"{\"p99\":12}");
        }
        assert_eq!(calls.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn unknown_strategy_lists_the_known_ones() {
        let e = cache().get("nope", "k").await.unwrap_err();
        assert!(matches!(e, Error::UnknownStrategy(ref m) if m.contains("crew_config")), "{e}");
    }
}
