//! Lookup latency: a lock-free log-linear histogram, and readings of its counts for the
//! quantiles of an interval.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Lookup latency inside the cache, nanoseconds, in a lock-free log-linear histogram: values
/// below 16 ns exactly, then 16 sub-buckets per power of two (within 6.25 %). Recording is one
/// relaxed `fetch_add`, so the hot path takes no lock (an hdrhistogram behind a mutex did).
pub struct Latency {
    buckets: Box<[AtomicU64]>,
}

/// Sub-buckets per power of two.
const SUB: u64 = 16;
/// Exponents above this are clamped (2^32 ns is over 4 s).
const MAX_EXP: u32 = 31;
/// Buckets in a histogram: exact values below 16 ns, then `SUB` per power of two.
const BUCKETS: usize = (SUB + (MAX_EXP as u64 - 3) * SUB) as usize;

impl Default for Latency {
    fn default() -> Self {
        Latency { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Latency {
    fn bucket(ns: u64) -> usize {
        let ns = ns.min((1 << (MAX_EXP + 1)) - 1);
        if ns < SUB {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros();
        let sub = (ns >> (exp - 4)) & (SUB - 1);
        (SUB + (exp as u64 - 4) * SUB + sub) as usize
    }

    /// The middle of a bucket's range, ns.
    fn value(bucket: usize) -> f64 {
        let b = bucket as u64;
        if b < SUB {
            return b as f64;
        }
        let exp = (b - SUB) / SUB + 4;
        let sub = (b - SUB) % SUB;
        let width = 1u64 << (exp - 4);
        ((SUB + sub) * width) as f64 + width as f64 / 2.0
    }

    pub fn record(&self, d: Duration) {
        self.record_ns(d.as_nanos() as u64);
    }

    pub fn record_ns(&self, ns: u64) {
        self.record_ns_times(ns, 1);
    }

    /// Records `n` lookups that took `ns` each (one add, for the keys of an mget).
    pub fn record_ns_times(&self, ns: u64, n: u64) {
        self.buckets[Self::bucket(ns)].fetch_add(n, Relaxed);
    }

    /// (p50, p99) in milliseconds; zeros before the first lookup.
    pub fn quantiles_ms(&self) -> (f64, f64) {
        Self::merged_quantiles_ms([self])
    }

    /// (p50, p99) of several histograms taken together (the total of the strategies' lookups,
    /// so a lookup is recorded once, not once more for the total).
    pub fn merged_quantiles_ms<'a>(all: impl IntoIterator<Item = &'a Latency>) -> (f64, f64) {
        LatencyCounts::of(all).quantiles_ms().unwrap_or_default()
    }
}

/// A reading of latency histograms' bucket counts (several merged), so that the quantiles of
/// an interval can be taken from two readings: the histograms count since start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyCounts(Vec<u64>);

impl LatencyCounts {
    pub fn of<'a>(all: impl IntoIterator<Item = &'a Latency>) -> LatencyCounts {
        let mut counts = vec![0u64; BUCKETS];
        for l in all {
            for (c, b) in counts.iter_mut().zip(l.buckets.iter()) {
                *c += b.load(Relaxed);
            }
        }
        LatencyCounts(counts)
    }

    /// What was recorded after `before`, an earlier reading of the same histograms (an empty
    /// one: since start). Counts only grow; if one went back, this reading is taken whole.
    pub fn since(&self, before: &LatencyCounts) -> LatencyCounts {
        let back = before.0.iter().zip(&self.0).any(|(b, n)| n < b);
        if back || before.0.is_empty() {
            return self.clone();
        }
        LatencyCounts(self.0.iter().zip(&before.0).map(|(n, b)| n - b).collect())
    }

    /// (p50, p99) in milliseconds; `None` when nothing was recorded.
    pub fn quantiles_ms(&self) -> Option<(f64, f64)> {
        let total: u64 = self.0.iter().sum();
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let mut seen = 0;
            for (i, n) in self.0.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Latency::value(i) / 1e6;
                }
            }
            0.0
        };
        (total > 0).then(|| (at(0.5), at(0.99)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_within_the_bucket_precision() {
        let l = Latency::default();
        assert_eq!(l.quantiles_ms(), (0.0, 0.0));
        for us in 1..=10_000 {
            l.record_ns(us * 1000);
        }
        let (p50, p99) = l.quantiles_ms();
        assert!((p50 - 5.0).abs() / 5.0 < 0.07, "{p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.07, "{p99}");
        for us in [0, 1, 15, 16, 17, 1023, 1024, u64::MAX] {
            let b = Latency::bucket(us);
            assert!(b < l.buckets.len(), "{us} -> {b}");
        }
        // Merged histograms answer what one histogram of all the records would.
        let (a, b, all) = (Latency::default(), Latency::default(), Latency::default());
        for us in 1..=1000u64 {
            (if us <= 200 { &a } else { &b }).record_ns(us * 1000);
            all.record_ns(us * 1000);
        }
        assert_eq!(Latency::merged_quantiles_ms([&a, &b]), all.quantiles_ms());
        assert_ne!(a.quantiles_ms(), all.quantiles_ms());
        // Buckets are contiguous and ordered: each value maps into its own bucket's range.
        for us in [3u64, 16, 100, 5_000, 1 << 30] {
            let mid = Latency::value(Latency::bucket(us));
            assert!((mid - us as f64).abs() / (us as f64) < 0.07, "{us} {mid}");
        }
    }
}
