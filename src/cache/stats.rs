//! Cache statistics: counters per strategy, latency, and the recommendations derived from them.

use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters of one strategy (or of all together).
#[derive(Default)]
pub struct Counters {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub sets: AtomicU64,
    pub deletes: AtomicU64,
    pub expirations: AtomicU64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CountersSnapshot {
    pub hits: u64,
    pub l1_hits: u64,
    pub l2_hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub deletes: u64,
    pub expirations: u64,
    pub hit_rate_percent: f64,
}

impl Counters {
    pub fn snapshot(&self) -> CountersSnapshot {
        let (l1, l2, misses) =
            (self.l1_hits.load(Relaxed), self.l2_hits.load(Relaxed), self.misses.load(Relaxed));
        let hits = l1 + l2;
        CountersSnapshot {
            hits,
            l1_hits: l1,
            l2_hits: l2,
            misses,
            sets: self.sets.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            expirations: self.expirations.load(Relaxed),
            hit_rate_percent: if hits + misses == 0 {
                0.0
            } else {
                100.0 * hits as f64 / (hits + misses) as f64
            },
        }
    }
}

/// Lookup latency inside the cache, microseconds.
pub struct Latency(Mutex<hdrhistogram::Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        let h = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 2)
            .expect("static histogram bounds are valid");
        Latency(Mutex::new(h))
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let _ = self.0.lock().record((d.as_micros() as u64).clamp(1, 60_000_000));
    }

    /// (p50, p99) in milliseconds.
    pub fn quantiles_ms(&self) -> (f64, f64) {
        let h = self.0.lock();
        (h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0)
    }
}

/// What `GET /api/v1/metrics/cache` reports under `cache_statistics`.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatistics {
    #[serde(flatten)]
    pub total: CountersSnapshot,
    pub evictions: u64,
    pub l1_size: usize,
    pub l1_capacity: u64,
    pub l1_bytes: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub strategies: BTreeMap<String, CountersSnapshot>,
    pub l2: super::l2::L2Stats,
}

/// Lookups below which hit-rate rules stay silent: too few to judge.
const MIN_LOOKUPS: u64 = 100;

/// The documented rules (README, "Cache recommendations").
pub fn recommendations(s: &CacheStatistics, max_entries: usize) -> Vec<String> {
    let mut out = Vec::new();
    let lookups = s.total.hits + s.total.misses;
    if lookups >= MIN_LOOKUPS && s.total.hit_rate_percent < 50.0 {
        out.push(format!(
            "Low hit rate ({:.1} %): warm hot keys with POST /api/v1/cache/warm or lengthen the TTLs of the strategies that miss most.",
            s.total.hit_rate_percent
        ));
    }
    if s.total.sets >= MIN_LOOKUPS && s.evictions * 10 > s.total.sets {
        out.push(format!(
            "High eviction rate ({} evictions for {} sets): L1 is too small; raise cache.max_entries (now {max_entries}) or cache.max_bytes.",
            s.evictions, s.total.sets
        ));
    }
    if s.l1_capacity > 0 && s.l1_size as u64 * 100 >= s.l1_capacity * 95 && s.evictions > 0 {
        out.push("L1 is full and evicting; give it more room.".to_string());
    }
    for (name, c) in &s.strategies {
        if c.misses >= MIN_LOOKUPS && c.expirations * 2 > c.misses {
            out.push(format!(
                "Entries of {name} mostly expire before they are read again; lengthen its TTL."
            ));
        }
    }
    if s.l2.enabled && (s.l2.errors > 0 || s.l2.timeouts > 0) {
        out.push(format!(
            "Redis L2 had {} errors and {} timeouts; L1 kept serving. Check the Redis server and cache.redis.timeout.",
            s.l2.errors, s.l2.timeouts
        ));
    }
    if s.l2.enabled && !s.l2.reachable {
        out.push("Redis L2 is unreachable; perfd serves from L1 only until it is back.".to_string());
    }
    out
}
