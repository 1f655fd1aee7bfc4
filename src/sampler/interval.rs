//! Figures of each tick's own interval, from statistics that count since start. A hit rate
//! since start is 0 before the first lookup (so an idle cache looked like a failing one and
//! fired the default "low cache hit rate" alert), and a hit rate or a p99 since start barely
//! moves after a day of traffic. The series get the figures of each tick's interval, and only
//! when it had lookups or commits; the health score gets the hit rate of the last five minutes,
//! once they hold enough lookups to mean something, and the cache's recommendations read the
//! same five minutes (a Redis outage an hour ago is no advice now).

use crate::cache::stats::{CacheStatistics, CountersSnapshot, LatencyCounts, hit_rate};
use hdrhistogram::Histogram;
use std::collections::VecDeque;

/// The window of the health score's hit rate and of the cache's recommendations, and the
/// lookups it must hold before the hit rate counts.
pub const WINDOW_MS: i64 = 5 * 60_000;
pub const MIN_LOOKUPS: u64 = 100;

/// One tick's figures; `None` where nothing happened (or too little, for `health_hit_rate`).
#[derive(Debug, Default, PartialEq)]
pub struct TickFigures {
    pub hit_rate: Option<f64>,
    pub strategy_hit_rates: Vec<(String, f64)>,
    pub health_hit_rate: Option<f64>,
    /// p99 of whole cache lookups, of Redis round trips, of the writer's commits, in ms.
    pub lookup_p99_ms: Option<f64>,
    pub l2_p99_ms: Option<f64>,
    pub commit_p99_ms: Option<f64>,
}

/// Earlier readings.
pub struct Intervals {
    /// (tick time, cache statistics without their latency histograms), from the last tick at or
    /// before the start of the window to the last tick.
    recent: VecDeque<(i64, CacheStatistics)>,
    lookups: LatencyCounts,
    l2: LatencyCounts,
    commits: Option<Histogram<u64>>,
}

impl Intervals {
    /// `start_ms`: when the statistics were zero (the cache's and the writer's start).
    pub fn new(start_ms: i64) -> Intervals {
        Intervals {
            recent: VecDeque::from([(start_ms, CacheStatistics::default())]),
            lookups: LatencyCounts::default(),
            l2: LatencyCounts::default(),
            commits: None,
        }
    }

    /// The figures since the last tick. `commits`: the writer's commit times (µs) since start.
    pub fn tick(
        &mut self,
        now_ms: i64,
        cache: &CacheStatistics,
        commits: Option<Histogram<u64>>,
    ) -> TickFigures {
        let lookups = |c: &CountersSnapshot| (c.hits, c.misses);
        let total = lookups(&cache.total);
        let last = self.recent.back().map(|(_, s)| s);
        let total_rate = rate_between(last.map_or((0, 0), |l| lookups(&l.total)), total);
        let mut strategy_hit_rates = Vec::new();
        for (name, st) in &cache.strategies {
            let before = last.and_then(|l| l.strategies.get(name)).map_or((0, 0), |b| lookups(&b.counters));
            if let Some(r) = rate_between(before, lookups(&st.counters)) {
                strategy_hit_rates.push((name.clone(), r));
            }
        }
        let reading = CacheStatistics {
            latency_counts: LatencyCounts::default(),
            l2: crate::cache::l2::L2Stats { latency_counts: LatencyCounts::default(), ..cache.l2.clone() },
            ..cache.clone()
        };
        self.recent.push_back((now_ms, reading));
        while self.recent.get(1).is_some_and(|(at, _)| *at <= now_ms - WINDOW_MS) {
            self.recent.pop_front();
        }
        let health_hit_rate = self.recent.front().and_then(|(_, start)| {
            let (hits, misses) = since((start.total.hits, start.total.misses), total);
            (hits + misses >= MIN_LOOKUPS).then(|| hit_rate(hits, misses))
        });
        let p99 = |now: &LatencyCounts, before: &mut LatencyCounts| {
            let p99 = now.since(before).quantiles_ms().map(|(_, p99)| p99);
            before.clone_from(now);
            p99
        };
        TickFigures {
            hit_rate: total_rate,
            strategy_hit_rates,
            health_hit_rate,
            lookup_p99_ms: p99(&cache.latency_counts, &mut self.lookups),
            l2_p99_ms: p99(&cache.l2.latency_counts, &mut self.l2),
            commit_p99_ms: commits.and_then(|now| commit_p99_ms(&now, self.commits.replace(now.clone()))),
        }
    }

    /// The cache statistics at the start of the window (zeros during the first five minutes).
    pub fn window_start(&self) -> Option<&CacheStatistics> {
        self.recent.front().map(|(_, s)| s)
    }
}

/// p99 of the commits in `now` but not in `before` (µs recorded, ms returned).
fn commit_p99_ms(now: &Histogram<u64>, before: Option<Histogram<u64>>) -> Option<f64> {
    let mut interval = now.clone();
    // Counts only grow; if they went back, the reading is taken whole.
    if let Some(before) = before
        && interval.subtract(&before).is_err()
    {
        interval.clone_from(now);
    }
    (!interval.is_empty()).then(|| interval.value_at_quantile(0.99) as f64 / 1000.0)
}

/// Hits and misses from `before` to `now`. The counters only grow; if they ever went back, what
/// they hold now is counted from zero.
fn since(before: (u64, u64), now: (u64, u64)) -> (u64, u64) {
    if now.0 < before.0 || now.1 < before.1 { now } else { (now.0 - before.0, now.1 - before.1) }
}

fn rate_between(before: (u64, u64), now: (u64, u64)) -> Option<f64> {
    let (hits, misses) = since(before, now);
    (hits + misses > 0).then(|| hit_rate(hits, misses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stats::{Latency, StrategyStats};

    fn stats(hits: u64, misses: u64, crew: (u64, u64)) -> CacheStatistics {
        let total = CountersSnapshot { hits, misses, ..Default::default() };
        let mut s = CacheStatistics { total, ..Default::default() };
        let counters = CountersSnapshot { hits: crew.0, misses: crew.1, ..Default::default() };
        s.strategies.insert("crew_config".into(), StrategyStats { counters, ..Default::default() });
        s
    }

    #[test]
    fn each_tick_gets_the_hit_rate_of_its_own_lookups() {
        let mut r = Intervals::new(0);
        let idle = r.tick(5_000, &stats(0, 0, (0, 0)), None);
        assert_eq!(idle, TickFigures::default(), "no lookup, no figure");
        let t = r.tick(10_000, &stats(3, 1, (1, 1)), None);
        assert_eq!((t.hit_rate, t.strategy_hit_rates), (Some(75.0), vec![("crew_config".into(), 50.0)]));
        // Since start it is 50 %; this interval's 2 lookups were misses.
        let t = r.tick(15_000, &stats(3, 3, (1, 3)), None);
        assert_eq!((t.hit_rate, t.strategy_hit_rates), (Some(0.0), vec![("crew_config".into(), 0.0)]));
        assert_eq!(r.tick(20_000, &stats(3, 3, (1, 3)), None).hit_rate, None, "idle again");
        let back = r.tick(25_000, &stats(1, 0, (0, 0)), None);
        assert_eq!(back.hit_rate, Some(100.0), "counters that went back");
    }

    #[test]
    fn health_reads_the_last_five_minutes_once_they_hold_100_lookups() {
        let mut r = Intervals::new(0);
        let health = |r: &mut Intervals, at: i64, hits: u64, misses: u64| {
            r.tick(at, &stats(hits, misses, (0, 0)), None).health_hit_rate
        };
        assert_eq!(health(&mut r, 10_000, 10, 89), None, "99 lookups are too few");
        assert_eq!(health(&mut r, 20_000, 10, 90), Some(10.0), "since start");
        // Then only hits, one tick a minute: the early misses leave the window.
        let mut last = None;
        for minute in 1..=6 {
            last = health(&mut r, 20_000 + minute * 60_000, 10 + 100 * minute as u64, 90);
        }
        assert_eq!(last, Some(100.0));
        // Five idle minutes later, no lookup is left in the window.
        assert_eq!(health(&mut r, 20_000 + 12 * 60_000, 610, 90), None);
    }

    #[test]
    fn latencies_are_those_of_the_interval() {
        let lookups = Latency::default();
        let mut r = Intervals::new(0);
        let mut s = stats(0, 0, (0, 0));
        let mut commits = Histogram::<u64>::new_with_bounds(1, 60_000_000, 2).unwrap();
        // A slow first interval: 100 lookups of 1 ms, commits of 50 ms.
        lookups.record_ns_times(1_000_000, 100);
        commits.record_n(50_000, 10).unwrap();
        s.latency_counts = LatencyCounts::of([&lookups]);
        let t = r.tick(5_000, &s, Some(commits.clone()));
        let near = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() / want < 0.07);
        assert!(near(t.lookup_p99_ms, 1.0) && near(t.commit_p99_ms, 50.0), "{t:?}");
        // A fast second one: since start the p99 would still be the slow one's.
        lookups.record_ns_times(10_000, 1000);
        commits.record_n(2_000, 1000).unwrap();
        s.latency_counts = LatencyCounts::of([&lookups]);
        let t = r.tick(10_000, &s, Some(commits.clone()));
        assert!(near(t.lookup_p99_ms, 0.01) && near(t.commit_p99_ms, 2.0), "{t:?}");
        // Nothing new: no figure (without L2, never one).
        let t = r.tick(15_000, &s, Some(commits));
        assert_eq!((t.lookup_p99_ms, t.l2_p99_ms, t.commit_p99_ms), (None, None, None));
    }

    #[test]
    fn recommendations_read_the_last_five_minutes() {
        let mut r = Intervals::new(0);
        let mut s = stats(0, 0, (0, 0));
        s.l2.enabled = true;
        s.l2.reachable = true;
        s.l2.errors = 40;
        r.tick(10_000, &s, None);
        let advice = |r: &Intervals, s: &CacheStatistics| {
            crate::cache::stats::recommendations(&s.since(r.window_start().expect("a start")), 1000)
        };
        assert_eq!(advice(&r, &s).len(), 1, "errors in the window are advised on");
        // An hour of ticks without another error: the old ones are out of the window.
        for minute in 1..=60 {
            r.tick(10_000 + minute * 60_000, &s, None);
        }
        assert_eq!(advice(&r, &s), Vec::<String>::new());
        assert_eq!(s.since(r.window_start().unwrap()).l2.errors, 0);
    }
}
