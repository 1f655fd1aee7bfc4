//! Cache statistics: counters per strategy, latency, and the recommendations derived from them.

use super::TieredCache;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub use super::latency::{Latency, LatencyCounts};

/// Counters of one strategy (or of all together).
#[derive(Default)]
pub struct Counters {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    pub misses: AtomicU64,
    pub sets: AtomicU64,
    pub deletes: AtomicU64,
    pub expirations: AtomicU64,
    /// Fill leases granted (`?wait=` and `get_or_load`).
    pub leases: AtomicU64,
    /// L2 reads and writes of these keys that Redis did not answer (an error, a timeout, or
    /// not sent while Redis was marked unreachable).
    pub l2_errors: AtomicU64,
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
    pub leases: u64,
    pub l2_errors: u64,
    pub hit_rate_percent: f64,
}

impl CountersSnapshot {
    /// What was counted after `before`, an earlier reading of the same counters.
    pub fn since(&self, before: &CountersSnapshot) -> CountersSnapshot {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let (hits, misses) = (d(self.hits, before.hits), d(self.misses, before.misses));
        CountersSnapshot {
            hits,
            l1_hits: d(self.l1_hits, before.l1_hits),
            l2_hits: d(self.l2_hits, before.l2_hits),
            misses,
            sets: d(self.sets, before.sets),
            deletes: d(self.deletes, before.deletes),
            expirations: d(self.expirations, before.expirations),
            leases: d(self.leases, before.leases),
            l2_errors: d(self.l2_errors, before.l2_errors),
            hit_rate_percent: hit_rate(hits, misses),
        }
    }
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
            leases: self.leases.load(Relaxed),
            expirations: self.expirations.load(Relaxed),
            l2_errors: self.l2_errors.load(Relaxed),
            hit_rate_percent: hit_rate(hits, misses),
        }
    }
}

/// Hits as a percentage of lookups; 0 before the first lookup.
pub fn hit_rate(hits: u64, misses: u64) -> f64 {
    if hits + misses == 0 { 0.0 } else { 100.0 * hits as f64 / (hits + misses) as f64 }
}

/// What `GET /api/v1/metrics/cache` reports under `cache_statistics`: the totals at the top (the
/// seed's fields), then per level (`l1`, `l2`) and per strategy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheStatistics {
    #[serde(flatten)]
    pub total: CountersSnapshot,
    pub evictions: u64,
    pub l1_size: usize,
    pub l1_capacity: u64,
    pub l1_bytes: u64,
    /// Of whole lookups (L1, then L2 on an L1 miss).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// The histograms behind those, for the sampler's quantiles of each tick.
    #[serde(skip)]
    pub latency_counts: LatencyCounts,
    pub l1: L1Stats,
    pub strategies: BTreeMap<String, StrategyStats>,
    pub l2: super::l2::L2Stats,
}

/// The L1 level alone: `misses` are lookups L1 could not answer (L2 may have), and the
/// latency is that of the L1 lookup.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L1Stats {
    pub hits: u64,
    pub misses: u64,
    pub hit_rate_percent: f64,
    pub sets: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub entries: usize,
    pub bytes: u64,
    pub capacity: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

/// One strategy: its counters, its share of L1 and its lookup latency.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StrategyStats {
    #[serde(flatten)]
    pub counters: CountersSnapshot,
    pub evictions: u64,
    pub l1_entries: u64,
    pub l1_bytes: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
}

impl CacheStatistics {
    /// What happened after `before`, an earlier reading, as far as the recommendations read
    /// it: the counters of the interval (in all, per strategy, Redis errors and timeouts); the
    /// sizes, capacities, latencies and Redis' reachability as they are now.
    pub fn since(&self, before: &CacheStatistics) -> CacheStatistics {
        let mut recent = self.clone();
        recent.total = self.total.since(&before.total);
        recent.evictions = self.evictions.saturating_sub(before.evictions);
        for (name, st) in &mut recent.strategies {
            if let Some(then) = before.strategies.get(name) {
                st.counters = st.counters.since(&then.counters);
                st.evictions = st.evictions.saturating_sub(then.evictions);
            }
        }
        recent.l2.errors = self.l2.errors.saturating_sub(before.l2.errors);
        recent.l2.timeouts = self.l2.timeouts.saturating_sub(before.l2.timeouts);
        recent
    }
}

impl TieredCache {
    /// What `GET /api/v1/metrics/cache` reports: one walk of L1 for entries and bytes, the
    /// latency histograms merged per level and in all.
    pub fn statistics(&self) -> CacheStatistics {
        let all = self.strategies.values().flat_map(|s| [&s.l1_answered, &s.beyond_l1]);
        let latency_counts = LatencyCounts::of(all);
        let (p50, p99) = latency_counts.quantiles_ms().unwrap_or_default();
        let l1_part = self.strategies.values().map(|s| &s.l1_answered);
        let (l1_p50, l1_p99) = Latency::merged_quantiles_ms(l1_part.chain([&self.l1_miss_latency]));
        let total = self.total.snapshot();
        let usage = self.l1.usage_by_prefix();
        let evictions = self.l1.evictions.total.load(Relaxed);
        let (l1_size, l1_bytes) = (self.l1.len(), usage.values().map(|u| u.bytes).sum());
        let strategies = self
            .strategies
            .iter()
            .map(|(name, s)| {
                let (latency_p50_ms, latency_p99_ms) =
                    Latency::merged_quantiles_ms([&s.l1_answered, &s.beyond_l1]);
                let used = usage.get(name).copied().unwrap_or_default();
                let stats = StrategyStats {
                    counters: s.counters.snapshot(),
                    evictions: self.l1.evictions.of(name),
                    l1_entries: used.entries,
                    l1_bytes: used.bytes,
                    latency_p50_ms,
                    latency_p99_ms,
                };
                (name.clone(), stats)
            })
            .collect();
        let l1_misses = total.l2_hits + total.misses;
        CacheStatistics {
            l1: L1Stats {
                hits: total.l1_hits,
                misses: l1_misses,
                hit_rate_percent: hit_rate(total.l1_hits, l1_misses),
                sets: total.sets,
                evictions,
                expirations: total.expirations,
                entries: l1_size,
                bytes: l1_bytes,
                capacity: self.l1.capacity(),
                latency_p50_ms: l1_p50,
                latency_p99_ms: l1_p99,
            },
            total,
            evictions,
            l1_size,
            l1_capacity: self.l1.capacity(),
            l1_bytes,
            latency_p50_ms: p50,
            latency_p99_ms: p99,
            latency_counts,
            strategies,
            l2: self.l2.stats(),
        }
    }

    pub fn recommendations(&self, s: &CacheStatistics) -> Vec<String> {
        recommendations(s, self.cfg.max_entries)
    }
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
    for (name, c) in s.strategies.iter().map(|(name, s)| (name, &s.counters)) {
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
