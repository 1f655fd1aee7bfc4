//! The sampler thread (`perfd-sampler`): every tick it reads the host and perfd itself with
//! sysinfo (refreshing only what it reads), drains request timings and cache/writer statistics,
//! writes them all as `perfd_*` time series through the writer (queued, never blocking), and
//! recomputes the health score that `/api/v1/metrics/health` serves.

pub mod alerts;
pub mod health;

use crate::cache::TieredCache;
use crate::error::Result;
use crate::ingest::BatchBuilder;
use crate::model::{TimeBounds, now_ms};
use crate::monitor::Monitor;
use crate::writer::WriterHandle;
use crossbeam_channel::{Receiver, Sender, select};
use parking_lot::RwLock;
use serde::Serialize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sysinfo::{Disks, Networks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// File systems that are not real disks.
const VIRTUAL_FS: [&str; 10] =
    ["tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup", "cgroup2", "ramfs", "efivarfs"];

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub mount: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
    pub used_percent: f64,
}

/// The latest reading of the host and of perfd itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResourceSnapshot {
    pub at_ms: i64,
    pub cpu_percent: f64,
    pub cpu_per_core_percent: Vec<f64>,
    pub load_average: [f64; 3],
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_percent: f64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disks: Vec<DiskUsage>,
    pub network_rx_bytes_per_sec: f64,
    pub network_tx_bytes_per_sec: f64,
    pub process_cpu_percent: f64,
    pub process_rss_bytes: u64,
    pub process_threads: u64,
    pub process_open_fds: u64,
    pub cgroup_memory_limit_bytes: Option<u64>,
}

/// What the sampler publishes for the HTTP handlers.
#[derive(Default)]
pub struct Published {
    pub resources: RwLock<ResourceSnapshot>,
    pub health: RwLock<Option<health::HealthScore>>,
    /// Alerts firing now (warning or critical).
    pub alerts: RwLock<Vec<FiringAlert>>,
    /// Unix ms of the last finished tick.
    pub alive_ms: std::sync::atomic::AtomicI64,
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
    pub retention_ms: i64,
    /// Scheduled backups: (data dir, config).
    pub backup: Option<(std::path::PathBuf, crate::config::BackupConfig)>,
}

pub struct Sampler {
    sys: System,
    disks: Disks,
    networks: Networks,
    pid: Option<Pid>,
    interval: Duration,
    last_tick: Instant,
    sources: Sources,
    alert_states: std::collections::HashMap<u64, alerts::AlertState>,
    last_backup: Instant,
    pub published: Arc<Published>,
}

impl Sampler {
    pub fn new(interval: Duration, sources: Sources) -> Result<Sampler> {
        let err = |e: sysinfo::Error| crate::Error::Internal(format!("sysinfo: {e}"));
        Ok(Sampler {
            sys: System::new().map_err(err)?,
            disks: Disks::new_with_refreshed_list().map_err(err)?,
            networks: Networks::new_with_refreshed_list().map_err(err)?,
            pid: sysinfo::get_current_pid().ok(),
            interval,
            last_tick: Instant::now(),
            sources,
            alert_states: Default::default(),
            last_backup: Instant::now(),
            published: Arc::default(),
        })
    }

    fn read_host(&mut self) -> ResourceSnapshot {
        let elapsed = self.last_tick.elapsed().as_secs_f64().max(0.001);
        self.last_tick = Instant::now();
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        let mut s = ResourceSnapshot {
            at_ms: now_ms(),
            cpu_percent: self.sys.global_cpu_usage() as f64,
            cpu_per_core_percent: self.sys.cpus().iter().map(|c| c.usage() as f64).collect(),
            memory_total_bytes: self.sys.total_memory(),
            memory_used_bytes: self.sys.used_memory(),
            swap_total_bytes: self.sys.total_swap(),
            swap_used_bytes: self.sys.used_swap(),
            cgroup_memory_limit_bytes: self.sys.cgroup_limits().map(|c| c.total_memory),
            ..ResourceSnapshot::default()
        };
        s.memory_percent = percent(s.memory_used_bytes, s.memory_total_bytes);
        if let Ok(l) = System::load_average() {
            s.load_average = [l.one, l.five, l.fifteen];
        }
        for d in self.disks.iter() {
            let fs = d.file_system().to_string_lossy();
            if d.total_space() == 0 || VIRTUAL_FS.contains(&fs.as_ref()) {
                continue;
            }
            let used = d.total_space() - d.available_space().min(d.total_space());
            s.disks.push(DiskUsage {
                mount: d.mount_point().display().to_string(),
                used_bytes: used,
                total_bytes: d.total_space(),
                used_percent: percent(used, d.total_space()),
            });
        }
        let (rx, tx) =
            self.networks.values().fold((0, 0), |(r, t), n| (r + n.received(), t + n.transmitted()));
        s.network_rx_bytes_per_sec = rx as f64 / elapsed;
        s.network_tx_bytes_per_sec = tx as f64 / elapsed;
        if let Some(pid) = self.pid {
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().with_tasks();
            self.sys.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, kind);
            if let Some(p) = self.sys.process(pid) {
                s.process_cpu_percent = p.cpu_usage() as f64;
                s.process_rss_bytes = p.memory();
                s.process_threads = p.tasks().map_or(0, |t| t.len() as u64);
            }
        }
        s.process_open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
        s
    }

    /// One tick: read, write the series, publish the snapshot and the health score.
    pub fn step(&mut self) {
        let snap = self.read_host();
        let now = snap.at_ms;
        let mut b = BatchBuilder::new(TimeBounds::new(now, self.sources.retention_ms));
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
        }
        put("perfd_network_rx_bytes_per_sec", &[], snap.network_rx_bytes_per_sec);
        put("perfd_network_tx_bytes_per_sec", &[], snap.network_tx_bytes_per_sec);
        put("perfd_process_cpu_percent", &[], snap.process_cpu_percent);
        put("perfd_process_rss_bytes", &[], snap.process_rss_bytes as f64);
        put("perfd_process_threads", &[], snap.process_threads as f64);
        put("perfd_process_open_fds", &[], snap.process_open_fds as f64);
        for e in self.sources.monitor.drain_interval(self.interval) {
            let labels = [("method", e.method.as_str()), ("route", e.route.as_str())];
            put("perfd_http_requests", &labels, e.requests as f64);
            put("perfd_http_errors_5xx", &labels, e.errors_5xx as f64);
            put("perfd_http_latency_p50_ms", &labels, e.p50_ms);
            put("perfd_http_latency_p99_ms", &labels, e.p99_ms);
        }
        let cache = self.sources.cache.statistics();
        put("perfd_cache_hit_rate_percent", &[], cache.total.hit_rate_percent);
        put("perfd_cache_hits", &[], cache.total.hits as f64);
        put("perfd_cache_misses", &[], cache.total.misses as f64);
        put("perfd_cache_l1_entries", &[], cache.l1_size as f64);
        put("perfd_cache_evictions", &[], cache.evictions as f64);
        let w = self.sources.writer.snapshot();
        let queue_percent = percent(w.queue_depth as u64, w.queue_capacity as u64);
        put("perfd_writer_queue_percent", &[], queue_percent);
        put("perfd_writer_points", &[], w.points as f64);
        put("perfd_writer_commit_p99_ms", &[], w.commit_p99_ms);
        if let Err(e) = self.sources.writer.submit(b.finish(), false) {
            log::warn!("sampler: this tick's samples were dropped: {e}");
        }
        for expired in self.sources.executions.tick(snap.cpu_percent, snap.memory_percent) {
            log::warn!("execution {} of crew {:?} lost its lease", expired.id, expired.crew_id);
            if let Err(e) =
                crate::store::records::put_profile(&expired).and_then(|c| self.sources.writer.apply(c))
            {
                log::error!("storing the profile of execution {}: {e}", expired.id);
            }
        }
        let firing = match self.evaluate_alerts(now) {
            Ok(f) => f,
            Err(e) => {
                log::error!("alert evaluation failed: {e}");
                self.published.alerts.read().clone()
            }
        };
        let live = |level| firing.iter().filter(|a| !a.silenced && a.level == level).count();
        let (alerts_warning, alerts_critical) = (live(alerts::Level::Warning), live(alerts::Level::Critical));
        *self.published.alerts.write() = firing;
        let (requests, errors) = self.sources.monitor.error_counts(Duration::from_secs(300), now);
        let lookups = cache.total.hits + cache.total.misses;
        let inputs = health::HealthInputs {
            cpu_percent: Some(snap.cpu_percent),
            memory_percent: Some(snap.memory_percent),
            disk_percent: snap.disks.iter().map(|d| d.used_percent).reduce(f64::max),
            error_5xx_percent: (requests > 0).then(|| 100.0 * errors as f64 / requests as f64),
            cache_hit_rate_percent: (lookups >= 100).then_some(cache.total.hit_rate_percent),
            writer_queue_percent: Some(queue_percent),
            redis_reachable: cache.l2.enabled.then_some(cache.l2.reachable),
            alerts_warning,
            alerts_critical,
        };
        *self.published.health.write() = Some(health::score(&inputs));
        *self.published.resources.write() = snap;
        self.published.alive_ms.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        self.scheduled_backup();
    }
}

impl Sampler {
    /// Evaluates every enabled threshold on its window of data, stores state changes as alert
    /// events (logged too) and returns what fires now.
    fn evaluate_alerts(&mut self, now: i64) -> Result<Vec<FiringAlert>> {
        let store = self.sources.store.clone();
        let thresholds = crate::store::records::thresholds(&store)?;
        let silences = crate::store::records::silences(&store)?;
        self.alert_states.retain(|id, _| thresholds.iter().any(|t| t.id == *id && t.enabled));
        let mut events = Vec::new();
        let mut firing = Vec::new();
        for t in thresholds.iter().filter(|t| t.enabled) {
            let window = t.window_duration()?.as_millis() as i64;
            let selector = crate::query::Selector::parse(&t.selector)?;
            let series = crate::query::read_raw(&store, &selector, now - window, now, 1_000_000)?;
            let value = t.worst(series.iter().filter_map(|s| t.aggregate(&s.points)));
            let state = self.alert_states.entry(t.id).or_default();
            let silenced = silences.iter().any(|s| s.covers(t, now));
            if let Some(mut e) = alerts::evaluate(t, state, value, now) {
                e.silenced = silenced;
                log::warn!(
                    "alert {:?}: {:?} -> {:?} at {} (silenced: {silenced})",
                    e.name,
                    e.from,
                    e.to,
                    e.value
                );
                events.push((store.new_record_id(), e));
            }
            if state.level != alerts::Level::Ok {
                firing.push(FiringAlert {
                    threshold_id: t.id,
                    name: t.name.clone(),
                    selector: t.selector.clone(),
                    level: state.level,
                    value: state.value,
                    since_ms: state.since_ms,
                    silenced,
                });
            }
        }
        if !events.is_empty() {
            self.sources.writer.apply(crate::store::records::append_events(&events)?)?;
        }
        Ok(firing)
    }
}

impl Sampler {
    /// Writes a backup when `backup.interval` has passed and keeps the newest `backup.keep`.
    fn scheduled_backup(&mut self) {
        let Some((dir, cfg)) = &self.sources.backup else { return };
        if cfg.interval.is_none_or(|i| self.last_backup.elapsed() < i) {
            return;
        }
        self.last_backup = Instant::now();
        let store = &self.sources.store;
        match crate::store::backup::new_path(dir).and_then(|p| crate::store::backup::write(store, &p)) {
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

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 }
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
        let ticker = crossbeam_channel::tick(sampler.interval);
        // The first reading happens before start returns, so health is served from the start.
        sampler.step();
        let join = std::thread::Builder::new()
            .name("perfd-sampler".into())
            .spawn(move || run(&mut sampler, &stopped, &ticks, &ticker))?;
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

fn run(
    sampler: &mut Sampler,
    stopped: &Receiver<()>,
    ticks: &Receiver<Sender<()>>,
    ticker: &Receiver<Instant>,
) {
    loop {
        select! {
            recv(stopped) -> _ => return,
            recv(ticker) -> _ => sampler.step(),
            recv(ticks) -> t => {
                sampler.step();
                if let Ok(t) = t {
                    let _ = t.send(());
                }
            }
        }
    }
}
