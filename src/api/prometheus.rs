//! `GET /metrics`: perfd's own counters and the latest host readings in the Prometheus text
//! format (0.0.4), so a fleet's Prometheus or VictoriaMetrics can scrape every host.

use super::AppState;
use actix_web::{HttpResponse, web};
use std::fmt::Write as _;

/// Appends one metric family: HELP, TYPE and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        out.push_str(name);
        if !labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            out.push('}');
        }
        let _ = writeln!(out, " {}", if value.is_finite() { *value } else { 0.0 });
    }
}

fn one(v: f64) -> Vec<(Vec<(&'static str, &'static str)>, f64)> {
    vec![(vec![], v)]
}

pub async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(8192);
    let w = state.writer.snapshot();
    family(
        &mut out,
        "perfd_ingest_points_total",
        "counter",
        "Points committed by the writer.",
        &one(w.points as f64),
    );
    family(
        &mut out,
        "perfd_ingest_requests_total",
        "counter",
        "Write requests handled by the writer.",
        &one(w.requests as f64),
    );
    family(
        &mut out,
        "perfd_writer_commits_total",
        "counter",
        "Durable ingest commits.",
        &one(w.commits as f64),
    );
    family(
        &mut out,
        "perfd_ingest_rejected_total",
        "counter",
        "Write requests refused, by reason.",
        &[
            (vec![("reason", "queue_full")], w.rejected_full as f64),
            (vec![("reason", "series_limit")], w.rejected_series_limit as f64),
            (vec![("reason", "commit_failed")], w.failed_commits as f64),
        ],
    );
    family(
        &mut out,
        "perfd_writer_queue_depth",
        "gauge",
        "Requests waiting for the writer.",
        &one(w.queue_depth as f64),
    );
    family(
        &mut out,
        "perfd_writer_queue_capacity",
        "gauge",
        "Writer queue capacity.",
        &one(w.queue_capacity as f64),
    );
    family(
        &mut out,
        "perfd_writer_commit_p99_seconds",
        "gauge",
        "99th percentile commit latency.",
        &one(w.commit_p99_ms / 1000.0),
    );
    family(
        &mut out,
        "perfd_series",
        "gauge",
        "Series in the catalog.",
        &one(state.store.series_count() as f64),
    );
    let c = state.cache.statistics();
    family(
        &mut out,
        "perfd_cache_hits_total",
        "counter",
        "Cache hits by level.",
        &[(vec![("level", "l1")], c.total.l1_hits as f64), (vec![("level", "l2")], c.total.l2_hits as f64)],
    );
    family(&mut out, "perfd_cache_misses_total", "counter", "Cache misses.", &one(c.total.misses as f64));
    family(&mut out, "perfd_cache_sets_total", "counter", "Cache writes.", &one(c.total.sets as f64));
    family(&mut out, "perfd_cache_evictions_total", "counter", "L1 evictions.", &one(c.evictions as f64));
    family(&mut out, "perfd_cache_l1_entries", "gauge", "Entries in L1.", &one(c.l1_size as f64));
    family(
        &mut out,
        "perfd_cache_l2_errors_total",
        "counter",
        "Redis errors and timeouts.",
        &one((c.l2.errors + c.l2.timeouts) as f64),
    );
    let totals = state.monitor.totals();
    let samples: Vec<(Vec<(&str, &str)>, f64)> = totals
        .iter()
        .map(|((route, method, class), n)| {
            (vec![("route", route.as_str()), ("method", method.as_str()), ("status", *class)], *n as f64)
        })
        .collect();
    family(
        &mut out,
        "perfd_http_requests_total",
        "counter",
        "HTTP requests by route pattern, method and status class.",
        &samples,
    );
    let alerts = state.published.alerts.read().clone();
    let firing = |level| alerts.iter().filter(|a| !a.silenced && a.level == level).count() as f64;
    family(
        &mut out,
        "perfd_alerts_firing",
        "gauge",
        "Alerts firing now (not silenced), by level.",
        &[
            (vec![("level", "warning")], firing(crate::sampler::alerts::Level::Warning)),
            (vec![("level", "critical")], firing(crate::sampler::alerts::Level::Critical)),
        ],
    );
    let r = state.published.resources.read().clone();
    family(&mut out, "perfd_host_cpu_percent", "gauge", "Host CPU use, all cores.", &one(r.cpu_percent));
    family(
        &mut out,
        "perfd_host_memory_used_bytes",
        "gauge",
        "Host memory in use.",
        &one(r.memory_used_bytes as f64),
    );
    family(
        &mut out,
        "perfd_host_memory_total_bytes",
        "gauge",
        "Host memory.",
        &one(r.memory_total_bytes as f64),
    );
    let disks: Vec<(Vec<(&str, &str)>, f64)> =
        r.disks.iter().map(|d| (vec![("mount", d.mount.as_str())], d.used_percent)).collect();
    family(&mut out, "perfd_host_disk_used_percent", "gauge", "Disk use by mount point.", &disks);
    family(
        &mut out,
        "perfd_process_resident_memory_bytes",
        "gauge",
        "perfd's resident memory.",
        &one(r.process_rss_bytes as f64),
    );
    family(&mut out, "perfd_process_cpu_percent", "gauge", "perfd's CPU use.", &one(r.process_cpu_percent));
    let health = state.published.health.read().as_ref().map_or(0.0, |h| h.score as f64);
    family(&mut out, "perfd_health_score", "gauge", "Health score, 0 to 100.", &one(health));
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out)
}
