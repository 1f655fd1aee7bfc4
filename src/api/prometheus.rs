//! `GET /metrics`: perfd's own counters and the latest host readings in the Prometheus text
//! format (0.0.4), so a fleet's Prometheus or VictoriaMetrics can scrape every host.

use super::AppState;
use actix_web::{HttpResponse, web};
use std::fmt::Write as _;

type Samples<'a> = Vec<(Vec<(&'a str, &'a str)>, f64)>;

/// The exposition being written: one method per metric kind, each appending a whole family.
struct Exposition(String);

impl Exposition {
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help, &[(vec![], value as f64)]);
    }

    /// A counter family with one sample per `result` label value.
    fn by_result(&mut self, name: &str, help: &str, results: &[(&str, u64)]) {
        let samples: Samples = results.iter().map(|(r, n)| (vec![("result", *r)], *n as f64)).collect();
        self.family(name, "counter", help, &samples);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help, &[(vec![], value)]);
    }

    /// HELP, TYPE and the samples; label values escaped, non-finite values written as 0.
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        let out = &mut self.0;
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
}

pub async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = Exposition(String::with_capacity(8192));
    writer_families(&mut out, &state);
    cache_families(&mut out, &state);
    let totals = state.monitor.totals();
    let samples: Samples = totals
        .iter()
        .map(|((route, method, class), n)| {
            (vec![("route", route.as_str()), ("method", method.as_str()), ("status", *class)], *n as f64)
        })
        .collect();
    let help = "HTTP requests by route pattern, method and status class.";
    out.family("perfd_http_requests_total", "counter", help, &samples);
    let c = &state.monitor.connections;
    let count = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    out.counter("perfd_http_connections_total", "Connections accepted.", count(&c.accepted));
    let help = "Connections moved from the hit path to actix-http (a request that was not a hit).";
    out.counter("perfd_http_connections_handed_over_total", help, count(&c.handed_over));
    let help = "Cache hits and compact mgets answered on the connection-level hit path (also in perfd_http_requests_total).";
    out.counter("perfd_http_hit_path_answers_total", help, count(&c.hit_path_answers));
    host_families(&mut out, &state);
    reload_families(&mut out, &state);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(out.0)
}

/// Configuration reloads, under the names Prometheus uses for its own.
fn reload_families(out: &mut Exposition, state: &AppState) {
    use std::sync::atomic::Ordering::Relaxed;
    let r = &state.reloader.stats;
    let ok = if r.last_failed.load(Relaxed) { 0.0 } else { 1.0 };
    let help = "1 when the last configuration reload loaded (or none was asked for).";
    out.gauge("perfd_config_last_reload_successful", help, ok);
    let at = r.last_success_ms.load(Relaxed) as f64 / 1000.0;
    let help = "When the configuration last loaded (the start, or the last reload that did).";
    out.gauge("perfd_config_last_reload_success_timestamp_seconds", help, at);
    let results = [("success", r.succeeded.load(Relaxed)), ("failure", r.failed.load(Relaxed))];
    out.by_result("perfd_config_reloads_total", "Configuration reloads asked for, by result.", &results);
}

fn writer_families(out: &mut Exposition, state: &AppState) {
    let w = state.writer.snapshot();
    out.counter("perfd_ingest_points_total", "Points committed by the writer.", w.points);
    out.counter("perfd_ingest_requests_total", "Write requests handled by the writer.", w.requests);
    out.counter("perfd_writer_commits_total", "Durable ingest commits.", w.commits);
    let rejected = [
        (vec![("reason", "queue_full")], w.rejected_full as f64),
        (vec![("reason", "series_limit")], w.rejected_series_limit as f64),
        (vec![("reason", "commit_failed")], w.failed_commits as f64),
    ];
    out.family("perfd_ingest_rejected_total", "counter", "Write requests refused, by reason.", &rejected);
    out.gauge("perfd_writer_queue_depth", "Requests waiting for the writer.", w.queue_depth as f64);
    let failing = if w.storage_fault.is_some() { 1.0 } else { 0.0 };
    out.gauge("perfd_storage_failing", "1 while the data directory cannot be written.", failing);
    out.counter("perfd_storage_recoveries_total", "Storage failures that ended.", w.storage_recoveries);
    out.gauge("perfd_writer_queue_capacity", "Writer queue capacity.", w.queue_capacity as f64);
    out.gauge("perfd_writer_commit_p99_seconds", "99th percentile commit latency.", w.commit_p99_ms / 1000.0);
    out.gauge("perfd_series", "Series in the catalog.", state.store.series_count() as f64);
    out.counter("perfd_store_purged_chunks_total", "Chunks of deleted series purged.", w.purged_chunks);
    let groups = w.purge_pending_groups as f64;
    out.gauge(
        "perfd_store_purge_pending_groups",
        "Series groups waiting to be purged of deleted series.",
        groups,
    );
}

fn cache_families(out: &mut Exposition, state: &AppState) {
    use crate::cache::stats::StrategyStats;
    let c = state.cache.statistics();
    let hits =
        [(vec![("level", "l1")], c.total.l1_hits as f64), (vec![("level", "l2")], c.total.l2_hits as f64)];
    out.family("perfd_cache_hits_total", "counter", "Cache hits by level.", &hits);
    out.counter("perfd_cache_misses_total", "Cache misses.", c.total.misses);
    out.counter("perfd_cache_sets_total", "Cache writes.", c.total.sets);
    out.counter("perfd_cache_evictions_total", "L1 evictions.", c.evictions);
    out.gauge("perfd_cache_l1_entries", "Entries in L1.", c.l1_size as f64);
    out.gauge("perfd_cache_l1_bytes", "Bytes of keys and values in L1.", c.l1_bytes as f64);
    out.counter("perfd_cache_expirations_total", "L1 entries found expired on read.", c.total.expirations);
    out.counter("perfd_cache_l2_errors_total", "Redis errors and timeouts.", c.l2.errors + c.l2.timeouts);
    out.counter("perfd_cache_l2_outages_total", "Times Redis became unreachable.", c.l2.outages);
    type Read = fn(&StrategyStats) -> f64;
    let families: [(&str, &str, &str, Read); 4] = [
        ("perfd_cache_strategy_hits_total", "counter", "Cache hits (L1 or L2) by strategy.", |s| {
            s.counters.hits as f64
        }),
        ("perfd_cache_strategy_misses_total", "counter", "Cache misses by strategy.", |s| {
            s.counters.misses as f64
        }),
        ("perfd_cache_strategy_evictions_total", "counter", "L1 evictions by strategy.", |s| {
            s.evictions as f64
        }),
        ("perfd_cache_strategy_l1_entries", "gauge", "Entries in L1 by strategy.", |s| s.l1_entries as f64),
    ];
    for (name, kind, help, value) in families {
        let samples: Samples = c
            .strategies
            .iter()
            .map(|(strategy, s)| (vec![("strategy", strategy.as_str())], value(s)))
            .collect();
        out.family(name, kind, help, &samples);
    }
}

fn host_families(out: &mut Exposition, state: &AppState) {
    use crate::sampler::alerts::Level;
    let alerts = state.published.alerts.read().clone();
    let firing = |level| alerts.iter().filter(|a| !a.silenced && a.level == level).count() as f64;
    let levels = [
        (vec![("level", "warning")], firing(Level::Warning)),
        (vec![("level", "critical")], firing(Level::Critical)),
    ];
    out.family("perfd_alerts_firing", "gauge", "Alerts firing now (not silenced), by level.", &levels);
    if let Some(d) = &state.published.delivery {
        use std::sync::atomic::Ordering::Relaxed;
        let results = [("delivered", d.deliveries.load(Relaxed)), ("failed", d.failures.load(Relaxed))];
        let help = "Deliveries of alerts to alerts.notify_url, by result.";
        out.by_result("perfd_alert_deliveries_total", help, &results);
        let failing = if d.failing() { 1.0 } else { 0.0 };
        out.gauge("perfd_alert_delivery_failing", "1 while alerts cannot be delivered.", failing);
    }
    let r = state.published.resources.read().clone();
    out.gauge("perfd_host_cpu_percent", "Host CPU use, all cores.", r.cpu_percent);
    out.gauge("perfd_host_memory_used_bytes", "Host memory in use.", r.memory_used_bytes as f64);
    out.gauge("perfd_host_memory_total_bytes", "Host memory.", r.memory_total_bytes as f64);
    let disks: Samples =
        r.disks.iter().map(|d| (vec![("mount", d.mount.as_str())], d.used_percent)).collect();
    out.family("perfd_host_disk_used_percent", "gauge", "Disk use by mount point (df's Use%).", &disks);
    let room: Samples =
        r.disks.iter().map(|d| (vec![("mount", d.mount.as_str())], d.available_bytes as f64)).collect();
    out.family(
        "perfd_host_disk_available_bytes",
        "gauge",
        "Space perfd may still write, by mount point.",
        &room,
    );
    out.gauge("perfd_process_resident_memory_bytes", "perfd's resident memory.", r.process_rss_bytes as f64);
    out.gauge("perfd_process_cpu_percent", "perfd's CPU use.", r.process_cpu_percent);
    let health = state.published.health.read().as_ref().map_or(0.0, |h| h.score as f64);
    out.gauge("perfd_health_score", "Health score, 0 to 100.", health);
}
