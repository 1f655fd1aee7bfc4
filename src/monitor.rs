//! Request timing: per route *pattern* (never the raw path) and method (a standard one, else
//! `OTHER`), so cardinality stays bounded, and status class, in latency sketches kept in
//! 10-minute buckets for the last 24 hours. The sampler drains per-interval summaries into time
//! series (`perfd_http_*`).

use parking_lot::Mutex;
use serde::Serialize;
use sketches_ddsketch::{Config, DDSketch};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Width of one bucket of the in-memory history.
pub const BUCKET_MS: i64 = 600_000;
/// Buckets kept: 24 hours.
const BUCKETS: usize = 144;

/// A latency sketch in milliseconds: 1 % relative error, durations under 1 µs count as 0. It
/// holds only the bins its values span (1 KB for values within 13× of each other), where a
/// dense HDR histogram over 1 µs to 2 min took 21.5 KB whatever it held, per route and
/// 10-minute bucket (47 MB for 15 routes over the 24 hours kept).
pub fn latency_sketch() -> DDSketch {
    DDSketch::new(Config::new(0.01, 2048, 0.001))
}

/// Quantile `q` of `s` in its unit, 0 when empty. A quantile is its bin's value, up to 1 % off:
/// it is kept within the smallest and largest values seen.
pub fn quantile(s: &DDSketch, q: f64) -> f64 {
    let (min, max) = (s.min().unwrap_or(0.0), s.max().unwrap_or(0.0));
    s.quantile(q).ok().flatten().unwrap_or(0.0).clamp(min, max)
}

#[derive(Clone)]
struct RouteStats {
    /// Milliseconds.
    latency: DDSketch,
    errors_4xx: u64,
    errors_5xx: u64,
}

impl RouteStats {
    fn new() -> RouteStats {
        RouteStats { latency: latency_sketch(), errors_4xx: 0, errors_5xx: 0 }
    }

    fn count(&mut self, ms: f64, status: u16) {
        self.latency.add(ms);
        match status {
            400..=499 => self.errors_4xx += 1,
            500..=599 => self.errors_5xx += 1,
            _ => {}
        }
    }

    fn add(&mut self, o: &RouteStats) {
        // Both come from `latency_sketch`: the one error, different configs, cannot happen.
        let _ = self.latency.merge(&o.latency);
        self.errors_4xx += o.errors_4xx;
        self.errors_5xx += o.errors_5xx;
    }
}

/// One (route pattern, method), e.g. (`/api/v1/cache/{strategy}/{key}`, `GET`).
struct Route {
    route: String,
    method: String,
    /// Requests since start by status class (1xx..5xx), for `/metrics` counters.
    by_class: [u64; 5],
}

/// Per-route stats indexed by route id; `None` where a route had no request.
type Slots = Vec<Option<RouteStats>>;

fn slot(slots: &mut Slots, id: usize) -> &mut RouteStats {
    if slots.len() <= id {
        slots.resize_with(id + 1, || None);
    }
    slots[id].get_or_insert_with(RouteStats::new)
}

#[derive(Default)]
struct Inner {
    /// `"{method} {route}"` → index into `routes`; routes are few (the route table), never raw
    /// paths.
    ids: HashMap<String, usize>,
    routes: Vec<Route>,
    /// (bucket start ms, stats per route id), oldest first.
    history: VecDeque<(i64, Slots)>,
    /// Since the sampler last drained it.
    interval: Slots,
    /// Scratch space for the id lookup, so recording a request allocates nothing.
    key: String,
}

/// The method as recorded: one of HTTP's standard methods, or `OTHER`. A method is any token a
/// client sends, so keeping each as sent let a client create routes (histograms, `/metrics`
/// lines, `perfd_http_*` series) without bound: 3,000 made-up methods took 125 MB.
fn method_label(method: &str) -> &str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
    if KNOWN.contains(&method) { method } else { "OTHER" }
}

impl Inner {
    fn id(&mut self, route: &str, method: &str) -> usize {
        let method = method_label(method);
        self.key.clear();
        self.key.push_str(method);
        self.key.push(' ');
        self.key.push_str(route);
        if let Some(&id) = self.ids.get(self.key.as_str()) {
            return id;
        }
        let id = self.routes.len();
        self.routes.push(Route { route: route.to_owned(), method: method.to_owned(), by_class: [0; 5] });
        self.ids.insert(self.key.clone(), id);
        id
    }

    fn summaries<'a>(
        &self,
        slots: impl Iterator<Item = (usize, &'a RouteStats)>,
        window_secs: f64,
    ) -> Vec<EndpointSummary> {
        let mut merged: BTreeMap<usize, RouteStats> = BTreeMap::new();
        for (id, s) in slots {
            merged.entry(id).or_insert_with(RouteStats::new).add(s);
        }
        merged.iter().map(|(&id, s)| summary(&self.routes[id], s, window_secs)).collect()
    }
}

fn occupied(slots: &Slots) -> impl Iterator<Item = (usize, &RouteStats)> {
    slots.iter().enumerate().filter_map(|(id, s)| Some((id, s.as_ref()?)))
}

#[derive(Default)]
pub struct Monitor {
    inner: Mutex<Inner>,
    /// What became of accepted connections (`api::HitPath`), for `/metrics`.
    pub connections: Connections,
}

/// Counters of the connection-level hit path.
#[derive(Default)]
pub struct Connections {
    pub accepted: AtomicU64,
    /// Connections the hit path gave to actix-http (their first request that was not a hit).
    pub handed_over: AtomicU64,
    /// Hits and compact mgets answered by the hit path itself.
    pub hit_path_answers: AtomicU64,
}

/// One endpoint's figures over a window.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub route: String,
    pub method: String,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub error_rate_percent: f64,
    pub errors_5xx: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn summary(route: &Route, s: &RouteStats, window_secs: f64) -> EndpointSummary {
    let ms = |q: f64| quantile(&s.latency, q);
    let n = s.latency.count() as u64;
    EndpointSummary {
        route: route.route.clone(),
        method: route.method.clone(),
        requests: n,
        requests_per_sec: n as f64 / window_secs.max(1.0),
        error_rate_percent: if n == 0 {
            0.0
        } else {
            100.0 * (s.errors_4xx + s.errors_5xx) as f64 / n as f64
        },
        errors_5xx: s.errors_5xx,
        p50_ms: ms(0.5),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: s.latency.max().unwrap_or(0.0),
    }
}

/// A resolved (route, method); see [`Monitor::route_id`].
#[derive(Debug, Clone, Copy)]
pub struct RouteId(usize);

fn record(inner: &mut Inner, id: usize, status: u16, elapsed: Duration, now_ms: i64) {
    let bucket = now_ms - now_ms.rem_euclid(BUCKET_MS);
    let ms = elapsed.as_secs_f64() * 1000.0;
    if inner.history.back().is_none_or(|(b, _)| *b != bucket) {
        inner.history.push_back((bucket, Vec::new()));
        while inner.history.len() > BUCKETS {
            inner.history.pop_front();
        }
    }
    if let Some((_, slots)) = inner.history.back_mut() {
        slot(slots, id).count(ms, status);
    }
    slot(&mut inner.interval, id).count(ms, status);
    let class = (status / 100).clamp(1, 5) as usize - 1;
    inner.routes[id].by_class[class] += 1;
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Monitor {
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration, now_ms: i64) {
        let mut inner = self.inner.lock();
        let id = inner.id(route, method);
        record(&mut inner, id, status, elapsed, now_ms);
    }

    /// The id of a (route, method) for [`Monitor::record_id`], which then skips the lookup.
    pub fn route_id(&self, route: &str, method: &str) -> RouteId {
        RouteId(self.inner.lock().id(route, method))
    }

    pub fn record_id(&self, id: RouteId, status: u16, elapsed: Duration, now_ms: i64) {
        record(&mut self.inner.lock(), id.0, status, elapsed, now_ms);
    }

    /// Requests since start by (route, method, status class).
    pub fn totals(&self) -> BTreeMap<(String, String, &'static str), u64> {
        let inner = self.inner.lock();
        let mut out = BTreeMap::new();
        for r in &inner.routes {
            for (class, &n) in CLASSES.iter().zip(&r.by_class).filter(|(_, n)| **n > 0) {
                out.insert((r.route.clone(), r.method.clone(), *class), n);
            }
        }
        out
    }

    /// Per-endpoint figures over the last `window` (10-minute resolution), busiest first.
    pub fn summarize(&self, window: Duration, now_ms: i64) -> Vec<EndpointSummary> {
        let since = now_ms - window.as_millis() as i64;
        let inner = self.inner.lock();
        let recent = inner.history.iter().filter(|(bucket, _)| bucket + BUCKET_MS > since);
        let mut out = inner.summaries(recent.flat_map(|(_, slots)| occupied(slots)), window.as_secs_f64());
        drop(inner);
        out.sort_by_key(|s| std::cmp::Reverse(s.requests));
        out
    }

    /// Takes the figures gathered since the last call (for the sampler's time series).
    pub fn drain_interval(&self, interval: Duration) -> Vec<EndpointSummary> {
        let mut inner = self.inner.lock();
        let taken = std::mem::take(&mut inner.interval);
        inner.summaries(occupied(&taken), interval.as_secs_f64())
    }

    /// (requests, 5xx) over the window, for the health score.
    pub fn error_counts(&self, window: Duration, now_ms: i64) -> (u64, u64) {
        self.summarize(window, now_ms).iter().fold((0, 0), |(n, e), s| (n + s.requests, e + s.errors_5xx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_by_route_and_window() {
        let m = Monitor::default();
        let now = 10 * BUCKET_MS;
        for i in 0..100 {
            m.record("/a/{id}", "GET", if i < 5 { 500 } else { 200 }, Duration::from_millis(i), now);
        }
        m.record("/a/{id}", "GET", 200, Duration::from_millis(1), now - 3 * BUCKET_MS);
        let s = m.summarize(Duration::from_secs(600), now);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].requests, 100);
        assert_eq!(s[0].errors_5xx, 5);
        assert!((s[0].p99_ms - 99.0).abs() < 1.0, "{}", s[0].p99_ms);
        assert_eq!(m.summarize(Duration::from_secs(3600), now)[0].requests, 101);
        assert_eq!(m.drain_interval(Duration::from_secs(10))[0].requests, 101);
        assert!(m.drain_interval(Duration::from_secs(10)).is_empty());
        m.record("/a/{id}", "POST", 404, Duration::from_millis(1), now);
        let totals = m.totals();
        assert_eq!(totals[&("/a/{id}".to_string(), "GET".to_string(), "2xx")], 96);
        assert_eq!(totals[&("/a/{id}".to_string(), "GET".to_string(), "5xx")], 5);
        assert_eq!(totals[&("/a/{id}".to_string(), "POST".to_string(), "4xx")], 1);
        assert_eq!(totals.len(), 3);
    }

    /// Regression: every method a client made up became a route of its own.
    #[test]
    fn made_up_methods_share_one_route() {
        let m = Monitor::default();
        for i in 0..1000 {
            m.record("unmatched", &format!("M{i}"), 400, Duration::from_millis(1), BUCKET_MS);
        }
        m.record("unmatched", "PATCH", 404, Duration::from_millis(1), BUCKET_MS);
        let s = m.summarize(Duration::from_secs(600), BUCKET_MS);
        let got: Vec<(&str, u64)> = s.iter().map(|e| (e.method.as_str(), e.requests)).collect();
        assert_eq!(got, [("OTHER", 1000), ("PATCH", 1)]);
        assert_eq!(m.totals().len(), 2);
    }
}
