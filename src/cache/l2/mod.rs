//! The second cache level: Redis behind the `redis` feature, a no-op otherwise.

#[cfg(not(feature = "redis"))]
mod disabled;
#[cfg(not(feature = "redis"))]
pub use disabled::L2;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
pub use self::redis::L2;
#[cfg(feature = "redis")]
mod unconfirmed;
#[cfg(feature = "redis")]
mod upkeep;

/// Redis did not answer a call: an error, a timeout, or not sent while Redis was marked
/// unreachable. The caller carries on without L2 (a read is a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoAnswer;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct L2Stats {
    pub enabled: bool,
    pub reachable: bool,
    pub hits: u64,
    pub misses: u64,
    pub hit_rate_percent: f64,
    pub sets: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// Calls not sent while Redis was marked unreachable (no timeout paid for them).
    pub skipped: u64,
    /// Times Redis became unreachable (each also logged, as is its end).
    pub outages: u64,
    /// Keys and patterns whose write Redis did not confirm, to be removed from Redis before it
    /// is used again; until then L2 reads they cover are misses.
    pub pending_repairs: usize,
    pub ping_ms: Option<f64>,
    /// Connections in the pool (each multiplexed), and calls waiting on them now.
    pub pool_size: usize,
    pub in_flight: usize,
    /// Round trips of the calls Redis answered (errors and timeouts are counted above).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// The histogram behind those, for the sampler's quantiles of each tick.
    #[serde(skip)]
    pub latency_counts: crate::cache::stats::LatencyCounts,
}
