//! The health score: a pure function of what the sampler and the other components report.
//!
//! Each component scores 0–100 by a linear ramp between a "fine" and a "bad" level; the total is
//! their weighted average minus a penalty per firing alert, clamped to 0–100. Status: `healthy`
//! ≥ 80, `degraded` ≥ 50, else `unhealthy`. A component without data (e.g. the hit rate while the
//! last 5 minutes hold fewer than 100 lookups, Redis when no L2 is configured) is left out of the average.
//!
//! | component | weight | 100 at | 0 at |
//! |---|---|---|---|
//! | cpu (% of all cores) | 20 | ≤ 70 % | ≥ 100 % |
//! | memory used | 20 | ≤ 75 % | ≥ 98 % |
//! | fullest real disk, or the data dir's file system (df's Use%) | 15 | ≤ 80 % | ≥ 98 % |
//! | HTTP 5xx rate | 15 | 0 % | ≥ 5 % |
//! | cache hit rate | 10 | ≥ 80 % | ≤ 20 % |
//! | writer queue use | 10 | ≤ 50 % | 100 % |
//! | storage writable | 20 | yes | no (a full disk or an I/O error: writes are refused) |
//! | Redis reachable | 10 | yes | no |
//! | series cap use (`storage.max_series`) | 10 | ≤ 80 % | 100 % (new series are refused) |
//! | alert delivery (when `alerts.notify_url` is set) | 10 | delivering | failing |
//!
//! Firing alerts cost 10 points each when warning and 25 when critical. Storage that cannot be
//! written costs 50 more: perfd records nothing then, so it is never better than `unhealthy`.

use serde::Serialize;

/// What the score is computed from; `None` means "no data".
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub disk_percent: Option<f64>,
    pub error_5xx_percent: Option<f64>,
    pub cache_hit_rate_percent: Option<f64>,
    pub writer_queue_percent: Option<f64>,
    pub storage_failing: Option<bool>,
    pub redis_reachable: Option<bool>,
    /// Series held, in % of `storage.max_series`.
    pub series_percent: Option<f64>,
    /// Whether the last delivery to `alerts.notify_url` failed (`None` without one).
    pub alert_delivery_failing: Option<bool>,
    pub alerts_warning: usize,
    pub alerts_critical: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub name: &'static str,
    pub score: f64,
    pub value: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealthScore {
    pub score: u8,
    pub status: &'static str,
    pub components: Vec<Component>,
    pub recommendations: Vec<String>,
}

/// 100 at or below `fine`, 0 at or beyond `bad`, linear between (works for either direction).
fn ramp(value: f64, fine: f64, bad: f64) -> f64 {
    let t = ((value - fine) / (bad - fine)).clamp(0.0, 1.0);
    100.0 * (1.0 - t)
}

/// One component: it scores 100 at `fine`, 0 at `bad` (the module table), and gives `advice`
/// when under 50.
struct Rule {
    name: &'static str,
    fine: f64,
    bad: f64,
    weight: f64,
    advice: &'static str,
}

const fn rule(name: &'static str, fine: f64, bad: f64, weight: f64, advice: &'static str) -> Rule {
    Rule { name, fine, bad, weight, advice }
}

/// In the order of the values in [`score`].
const RULES: [Rule; 10] = [
    rule("cpu", 70.0, 100.0, 20.0, "CPU is the bottleneck; lower max_concurrent executions or add cores."),
    rule("memory", 75.0, 98.0, 20.0, "memory is nearly exhausted; shrink caches or add memory."),
    rule("disk", 80.0, 98.0, 15.0, "a disk is nearly full; shorten retention or free space."),
    rule("http_5xx", 0.0, 5.0, 15.0, "requests are failing; check the log for 5xx causes."),
    rule("cache_hit_rate", 80.0, 20.0, 10.0, "the cache rarely hits; see /api/v1/metrics/cache."),
    rule("writer_queue", 50.0, 100.0, 10.0, "the writer queue is saturating; ingest is outrunning the disk."),
    rule(
        "storage",
        0.0,
        1.0,
        20.0,
        "the data directory cannot be written (a full disk or an I/O error), so metric writes are refused; \
         free space: perfd takes writes again by itself (see /api/v1/metrics/database).",
    ),
    rule("redis", 0.0, 1.0, 10.0, "Redis is unreachable; L1 serves alone."),
    rule(
        "series",
        80.0,
        100.0,
        10.0,
        "the series cap is nearly reached and new series will be refused; find the metrics \
         and labels with the most series (GET /api/v1/status/tsdb), then delete series \
         (POST /api/v1/admin/tsdb/delete_series) or raise storage.max_series.",
    ),
    rule(
        "alert_delivery",
        0.0,
        1.0,
        10.0,
        "alerts cannot be delivered to alerts.notify_url; see \"delivery\" in GET /api/v1/alerts.",
    ),
];

pub fn score(i: &HealthInputs) -> HealthScore {
    let values = [
        i.cpu_percent,
        i.memory_percent,
        i.disk_percent,
        i.error_5xx_percent,
        i.cache_hit_rate_percent,
        i.writer_queue_percent,
        i.storage_failing.map(|f| if f { 1.0 } else { 0.0 }),
        i.redis_reachable.map(|r| if r { 0.0 } else { 1.0 }),
        i.series_percent,
        i.alert_delivery_failing.map(|f| if f { 1.0 } else { 0.0 }),
    ];
    let mut components = Vec::new();
    let mut recommendations = Vec::new();
    for (r, value) in RULES.iter().zip(values) {
        let Some(v) = value else { continue };
        let s = ramp(v, r.fine, r.bad);
        if s < 50.0 {
            recommendations.push(format!("{} is at {v:.1}: {}", r.name, r.advice));
        }
        components.push(Component { name: r.name, score: s, value: v, weight: r.weight });
    }
    let weight: f64 = components.iter().map(|c| c.weight).sum();
    let base = if weight == 0.0 {
        100.0
    } else {
        components.iter().map(|c| c.score * c.weight).sum::<f64>() / weight
    };
    let storage_down = if i.storage_failing == Some(true) { 50.0 } else { 0.0 };
    let penalty = 10.0 * i.alerts_warning as f64 + 25.0 * i.alerts_critical as f64 + storage_down;
    let total = (base - penalty).clamp(0.0, 100.0).round() as u8;
    HealthScore { score: total, status: status(total), components, recommendations }
}

pub fn status(score: u8) -> &'static str {
    match score {
        80.. => "healthy",
        50..=79 => "degraded",
        _ => "unhealthy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> HealthInputs {
        HealthInputs {
            cpu_percent: Some(20.0),
            memory_percent: Some(40.0),
            disk_percent: Some(50.0),
            error_5xx_percent: Some(0.0),
            cache_hit_rate_percent: Some(95.0),
            writer_queue_percent: Some(0.0),
            redis_reachable: None,
            ..HealthInputs::default()
        }
    }

    #[test]
    fn a_calm_host_is_healthy() {
        let h = score(&calm());
        assert_eq!((h.score, h.status), (100, "healthy"));
        assert!(h.recommendations.is_empty());
        assert_eq!(h.components.len(), 6, "redis left out when not configured");
    }

    #[test]
    fn memory_pressure_degrades_and_names_the_cause() {
        let h = score(&HealthInputs { memory_percent: Some(97.0), ..calm() });
        assert_eq!((h.score, h.status), (79, "degraded"));
        assert!(h.recommendations.iter().any(|r| r.starts_with("memory")), "{:?}", h.recommendations);
        let h = score(&HealthInputs { memory_percent: Some(97.0), cpu_percent: Some(99.0), ..calm() });
        assert_eq!((h.score, h.status), (57, "degraded"));
    }

    #[test]
    fn alerts_and_outages_make_it_unhealthy() {
        let h = score(&HealthInputs { alerts_critical: 2, ..calm() });
        assert_eq!((h.score, h.status), (50, "degraded"));
        let h = score(&HealthInputs { alerts_critical: 3, redis_reachable: Some(false), ..calm() });
        assert_eq!(h.status, "unhealthy");
    }

    #[test]
    fn storage_that_cannot_be_written_is_unhealthy_and_says_what_to_do() {
        let h = score(&HealthInputs { storage_failing: Some(false), ..calm() });
        assert_eq!((h.score, h.status), (100, "healthy"));
        let h = score(&HealthInputs { storage_failing: Some(true), ..calm() });
        assert_eq!(h.status, "unhealthy", "{h:?}");
        assert!(
            h.recommendations.iter().any(|r| r.starts_with("storage") && r.contains("free space")),
            "{h:?}"
        );
    }

    #[test]
    fn a_full_series_cap_and_failing_alert_delivery_are_named() {
        let h = score(&HealthInputs {
            series_percent: Some(50.0),
            alert_delivery_failing: Some(false),
            ..calm()
        });
        assert_eq!((h.score, h.components.len()), (100, 8));
        let h = score(&HealthInputs { series_percent: Some(96.0), ..calm() });
        assert!(
            h.recommendations
                .iter()
                .any(|r| r.starts_with("series is at 96.0") && r.contains("delete_series"))
        );
        let h = score(&HealthInputs { alert_delivery_failing: Some(true), ..calm() });
        assert!(h.score < 100 && h.recommendations.iter().any(|r| r.starts_with("alert_delivery")), "{h:?}");
    }

    #[test]
    fn ramps_are_monotonic_and_bounded() {
        let mut last = 101.0;
        for v in 0..=120 {
            let s = ramp(v as f64, 70.0, 100.0);
            assert!((0.0..=100.0).contains(&s) && s <= last);
            last = s;
        }
        assert_eq!(ramp(10.0, 80.0, 20.0), 0.0);
        assert_eq!(ramp(90.0, 80.0, 20.0), 100.0);
        assert_eq!(status(80), "healthy");
        assert_eq!(status(79), "degraded");
        assert_eq!(status(49), "unhealthy");
    }
}
