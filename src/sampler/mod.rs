//! The sampler thread (`perfd-sampler`): every tick it reads the host and perfd itself with
//! sysinfo (refreshing only what it reads), drains request timings and cache/writer statistics,
//! writes them all as `perfd_*` time series through the writer (queued, never blocking), and
//! recomputes the health score that `/api/v1/metrics/health` serves.

mod alerting;
pub mod alerts;
pub mod delivery;
pub mod health;
mod host;
mod interval;
mod receiver;

pub use host::{DiskUsage, ResourceSnapshot};
use host::{Host, percent};

use crate::cache::TieredCache;
use crate::cache::stats::CacheStatistics;
use crate::error::Result;
use crate::ingest::BatchBuilder;
use crate::model::{TimeBounds, now_ms};
use crate::monitor::Monitor;
use crate::writer::{WriterHandle, WriterStatsSnapshot};
use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::RwLock;
use serde::Serialize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the sampler publishes for the HTTP handlers.
#[derive(Default)]
pub struct Published {
    pub resources: RwLock<ResourceSnapshot>,
    pub health: RwLock<Option<health::HealthScore>>,
    /// Alerts firing now (warning or critical).
    pub alerts: RwLock<Vec<FiringAlert>>,
    /// Unix ms of the last finished tick.
    pub alive_ms: std::sync::atomic::AtomicI64,
    /// The cache statistics five minutes ago (or at start), for recommendations on what
    /// happened since; `None` before the first tick.
    pub cache_window_start: RwLock<Option<CacheStatistics>>,
    /// Alert delivery figures, when `alerts.notify_url` is set.
    pub delivery: Option<Arc<delivery::DeliveryStats>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FiringAlert {
    pub threshold_id: u64,
    pub name: String,
    pub selector: String,
    pub level: alerts::Level,
    pub value: Option<f64>,
    pub since_ms: i64,
    pub silenced: bool,
}

/// Everything a tick reads besides the host.
#[derive(Clone)]
pub struct Sources {
    pub monitor: Arc<Monitor>,
    pub cache: Arc<TieredCache>,
    pub writer: Arc<WriterHandle>,
    pub store: Arc<crate::store::Store>,
    pub executions: Arc<crate::executions::Executions>,
    /// The configuration in effect (a reload replaces it): retention and `storage.max_series`
    /// (the health score's series component), and the scheduled backups.
    pub config: Arc<arc_swap::ArcSwap<crate::config::Config>>,
    /// Alert delivery: where each evaluation's firing alerts go, and its figures.
    pub notifier: Option<(Sender<delivery::Notice>, Arc<delivery::DeliveryStats>)>,
}

pub struct Sampler {
    host: Host,
    sources: Sources,
    alert_states: std::collections::HashMap<u64, alerts::AlertState>,
    /// Thresholds' selectors by text, parsed once (a regex takes ~44 µs to compile, a plain
    /// selector ~0.1 µs); dropped when no threshold uses them.
    selectors: std::collections::HashMap<String, Arc<crate::query::Selector>>,
    /// Alert events the store refused (it is failing), stored with the next tick's.
    unstored_events: Vec<(u64, alerts::AlertEvent)>,
    last_backup: Instant,
    intervals: interval::Intervals,
    pub published: Arc<Published>,
}

impl Sampler {
    pub fn new(sources: Sources) -> Result<Sampler> {
        let alert_states = alerting::restored_states(&sources.store);
        let published = Arc::new(Published {
            delivery: sources.notifier.as_ref().map(|(_, stats)| stats.clone()),
            ..Published::default()
        });
        Ok(Sampler {
            host: Host::new(sources.store.path.parent().unwrap_or(std::path::Path::new(".")))?,
            sources,
            alert_states,
            selectors: Default::default(),
            unstored_events: Vec::new(),
            last_backup: Instant::now(),
            intervals: interval::Intervals::new(now_ms()),
            published,
        })
    }

    /// `sampler.interval` in effect (a reload may change it; the next tick comes that long after
    /// the last one).
    pub fn interval(&self) -> Duration {
        self.sources.config.load().sampler.interval
    }

    /// One tick: read, write the series, publish the snapshot and the health score.
    pub fn step(&mut self) {
        let snap = self.host.read();
        let now = snap.at_ms;
        let cache = self.sources.cache.statistics();
        let w = self.sources.writer.snapshot();
        let queue_percent = percent(w.queue_depth as u64, w.queue_capacity as u64);
        let figures = self.intervals.tick(now, &cache, self.sources.writer.commit_histogram());
        let series = self.sources.store.catalog.read().by_key.len();
        self.record(&snap, &cache, &figures, &w, (queue_percent, series));
        self.expire_executions(&snap);
        let (alerts_warning, alerts_critical) = self.publish_alerts(now);
        let (requests, errors) = self.sources.monitor.error_counts(Duration::from_secs(300), now);
        let inputs = health::HealthInputs {
            cpu_percent: Some(snap.cpu_percent),
            memory_percent: Some(snap.memory_percent),
            disk_percent: snap.disks.iter().map(|d| d.used_percent).reduce(f64::max),
            error_5xx_percent: (requests > 0).then(|| 100.0 * errors as f64 / requests as f64),
            cache_hit_rate_percent: figures.health_hit_rate,
            writer_queue_percent: Some(queue_percent),
            storage_failing: Some(w.storage_fault.is_some()),
            redis_reachable: cache.l2.enabled.then_some(cache.l2.reachable),
            series_percent: Some(percent(
                series as u64,
                self.sources.config.load().storage.max_series as u64,
            )),
            alert_delivery_failing: self.published.delivery.as_ref().map(|d| d.failing()),
            alerts_warning,
            alerts_critical,
        };
        *self.published.health.write() = Some(health::score(&inputs));
        *self.published.resources.write() = snap;
        *self.published.cache_window_start.write() = self.intervals.window_start().cloned();
        self.published.alive_ms.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        self.scheduled_backup();
    }

    /// Writes this tick's readings as `perfd_*` series, in one batch through the writer.
    fn record(
        &self,
        snap: &ResourceSnapshot,
        cache: &CacheStatistics,
        figures: &interval::TickFigures,
        w: &WriterStatsSnapshot,
        (queue_percent, series): (f64, usize),
    ) {
        let now = snap.at_ms;
        let retention_ms = self.sources.config.load().storage.retention.as_millis() as i64;
        let mut b = BatchBuilder::new(TimeBounds::new(now, retention_ms));
        let mut put = |name: &str, labels: &[(&str, &str)], v: f64| {
            if v.is_finite() {
                let _ = b.push(name, labels, (now, v));
            }
        };
        put("perfd_cpu_percent", &[], snap.cpu_percent);
        for (i, c) in snap.cpu_per_core_percent.iter().enumerate() {
            put("perfd_cpu_core_percent", &[("core", &i.to_string())], *c);
        }
        put("perfd_load1", &[], snap.load_average[0]);
        put("perfd_memory_used_bytes", &[], snap.memory_used_bytes as f64);
        put("perfd_memory_percent", &[], snap.memory_percent);
        put("perfd_swap_used_bytes", &[], snap.swap_used_bytes as f64);
        for d in &snap.disks {
            put("perfd_disk_used_percent", &[("mount", &d.mount)], d.used_percent);
            put("perfd_disk_available_bytes", &[("mount", &d.mount)], d.available_bytes as f64);
        }
        put("perfd_network_rx_bytes_per_sec", &[], snap.network_rx_bytes_per_sec);
        put("perfd_network_tx_bytes_per_sec", &[], snap.network_tx_bytes_per_sec);
        put("perfd_process_cpu_percent", &[], snap.process_cpu_percent);
        put("perfd_process_rss_bytes", &[], snap.process_rss_bytes as f64);
        put("perfd_process_threads", &[], snap.process_threads as f64);
        put("perfd_process_open_fds", &[], snap.process_open_fds as f64);
        for e in self.sources.monitor.drain_interval(self.interval()) {
            let labels = [("method", e.method.as_str()), ("route", e.route.as_str())];
            put("perfd_http_requests", &labels, e.requests as f64);
            put("perfd_http_errors_5xx", &labels, e.errors_5xx as f64);
            put("perfd_http_latency_p50_ms", &labels, e.p50_ms);
            put("perfd_http_latency_p99_ms", &labels, e.p99_ms);
        }
        if let Some(rate) = figures.hit_rate {
            put("perfd_cache_hit_rate_percent", &[], rate);
        }
        put("perfd_cache_hits", &[], cache.total.hits as f64);
        put("perfd_cache_misses", &[], cache.total.misses as f64);
        put("perfd_cache_l1_entries", &[], cache.l1_size as f64);
        put("perfd_cache_evictions", &[], cache.evictions as f64);
        if let Some(p99) = figures.lookup_p99_ms {
            put("perfd_cache_latency_p99_ms", &[], p99);
        }
        for (name, st) in &cache.strategies {
            let labels = [("strategy", name.as_str())];
            put("perfd_cache_strategy_hits", &labels, st.counters.hits as f64);
            put("perfd_cache_strategy_misses", &labels, st.counters.misses as f64);
            put("perfd_cache_strategy_l1_entries", &labels, st.l1_entries as f64);
        }
        for (name, rate) in &figures.strategy_hit_rates {
            put("perfd_cache_strategy_hit_rate_percent", &[("strategy", name.as_str())], *rate);
        }
        if cache.l2.enabled {
            put("perfd_cache_l2_errors", &[], (cache.l2.errors + cache.l2.timeouts) as f64);
            if let Some(p99) = figures.l2_p99_ms {
                put("perfd_cache_l2_latency_p99_ms", &[], p99);
            }
        }
        put("perfd_writer_queue_percent", &[], queue_percent);
        put("perfd_store_series", &[], series as f64);
        put("perfd_writer_points", &[], w.points as f64);
        if let Some(p99) = figures.commit_p99_ms {
            put("perfd_writer_commit_p99_ms", &[], p99);
        }
        match self.sources.writer.submit(b.finish(), false) {
            // The writer logs a storage failure when it starts and ends.
            Err(crate::Error::StorageFailed { .. }) => {
                log::debug!("sampler: storage failing, samples dropped")
            }
            Err(e) => log::warn!("sampler: this tick's samples were dropped: {e}"),
            Ok(_) => {}
        }
    }

    /// Expires lapsed execution leases (storing their profiles) and admits whoever can run now.
    fn expire_executions(&self, snap: &ResourceSnapshot) {
        let mut profiles = self.sources.executions.tick(snap.cpu_percent, snap.memory_percent).into_iter();
        let mut failed = Vec::new();
        for profile in profiles.by_ref() {
            let stored =
                crate::store::records::put_profile(&profile).and_then(|c| self.sources.writer.apply(c));
            if let Err(e) = stored {
                log::debug!(
                    "storing the profile of execution {} failed (kept for the next tick): {e}",
                    profile.id
                );
                failed.push(profile);
                break;
            }
        }
        // After one failure the rest wait too, without a round trip each.
        failed.extend(profiles);
        if !failed.is_empty() {
            log::warn!("{} execution profiles wait to be stored (the store is failing)", failed.len());
            self.sources.executions.keep_unstored(failed);
        }
    }
}

impl Sampler {
    /// Writes a backup when `backup.interval` has passed and keeps the newest `backup.keep`.
    fn scheduled_backup(&mut self) {
        let config = self.sources.config.load();
        let (dir, cfg) = (&config.data_dir, &config.backup);
        if cfg.interval.is_none_or(|i| self.last_backup.elapsed() < i) {
            return;
        }
        self.last_backup = Instant::now();
        let store = &self.sources.store;
        match crate::store::backup::write_new(store, dir) {
            Ok(info) => {
                log::info!("scheduled backup {} ({} bytes)", info.file, info.bytes);
                if let Err(e) = crate::store::backup::prune(dir, cfg.keep) {
                    log::error!("pruning old backups: {e}");
                }
            }
            Err(e) => log::error!("scheduled backup failed: {e}"),
        }
    }
}

/// Owns the sampler thread. `tick` runs a step now and waits for it (tests, first reading).
pub struct SamplerHandle {
    tick: Sender<Sender<()>>,
    stop: Option<Sender<()>>,
    join: Option<JoinHandle<()>>,
    pub published: Arc<Published>,
}

impl SamplerHandle {
    pub fn start(mut sampler: Sampler) -> Result<SamplerHandle> {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let (tick, ticks) = crossbeam_channel::unbounded::<Sender<()>>();
        let published = sampler.published.clone();
        // The first reading happens before start returns, so health is served from the start.
        sampler.step();
        let join = std::thread::Builder::new()
            .name("perfd-sampler".into())
            .spawn(move || run(&mut sampler, &stopped, &ticks))?;
        Ok(SamplerHandle { tick, stop: Some(stop), join: Some(join), published })
    }

    pub fn tick(&self) {
        let (t, r) = crossbeam_channel::bounded(1);
        if self.tick.send(t).is_ok() {
            let _ = r.recv();
        }
    }

    /// Stops the thread without waiting out an interval. Idempotent.
    pub fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(j) = self.join.take()
            && j.join().is_err()
        {
            log::error!("sampler thread panicked");
        }
    }
}

fn run(sampler: &mut Sampler, stopped: &Receiver<()>, ticks: &Receiver<Sender<()>>) {
    // Ticks keep to a grid of the interval in effect (as `crossbeam_channel::tick` did). The
    // interval is read again at least every `RECHECK`, so a reload's new one applies within
    // that (an hour's wait is not sat out first); a tick more than an interval late starts a
    // new grid instead of ticking again for every one it missed.
    const RECHECK: Duration = Duration::from_secs(1);
    let mut last = Instant::now();
    loop {
        let interval = sampler.interval();
        let (due, now) = (last + interval, Instant::now());
        if now >= due {
            sampler.step();
            last = if now - due >= interval { now } else { due };
            continue;
        }
        let wake = crossbeam_channel::at(due.min(now + RECHECK));
        select! {
            recv(stopped) -> _ => return,
            recv(wake) -> _ => {}
            recv(ticks) -> t => {
                sampler.step();
                if let Ok(t) = t {
                    let _ = t.send(());
                }
            }
        }
    }
}
