//! The configuration as written (TOML tables with `deny_unknown_fields`, every field optional)
//! and its one-time validation into the typed [`Config`](super::Config): defaults, minimums and
//! error messages that name the key.

use super::*;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML file and environment as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    listen: Option<String>,
    auth_token: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    writer: RawWriter,
    #[serde(default)]
    query: RawQuery,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    sampler: RawSampler,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    executions: RawExecutions,
    #[serde(default)]
    backup: RawBackup,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    interval: Option<String>,
    keep: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutions {
    max_concurrent: Option<usize>,
    queue_capacity: Option<usize>,
    cpu_limit_percent: Option<f64>,
    memory_limit_percent: Option<f64>,
    lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    notify_url: Option<String>,
    notify_ca_file: Option<PathBuf>,
    notify_timeout: Option<String>,
    resend_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSampler {
    interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_entries: Option<usize>,
    max_bytes: Option<u64>,
    max_entry_bytes: Option<usize>,
    sweep_interval: Option<String>,
    lease_ttl: Option<String>,
    warm_restart: Option<bool>,
    #[serde(default)]
    strategies: BTreeMap<String, String>,
    #[serde(default)]
    redis: RawRedis,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    url: Option<String>,
    pool_size: Option<usize>,
    timeout: Option<String>,
    prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    max_body_bytes: Option<usize>,
    workers: Option<usize>,
    max_connections: Option<usize>,
    keep_alive: Option<String>,
    request_timeout: Option<String>,
    allowed_hosts: Option<HostList>,
}

/// `allowed_hosts = ["a", "b"]` in the file, `PERFD_HTTP_ALLOWED_HOSTS=a,b` in the environment.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HostList {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    retention: Option<String>,
    max_series: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWriter {
    queue_capacity: Option<usize>,
    max_queued_points: Option<usize>,
    seal_delay: Option<String>,
    maintenance_interval: Option<String>,
    max_open_points: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    max_points: Option<usize>,
}

/// Sections of the TOML file, longest first; `PERFD_<SECTION>_<KEY>` maps to `[section] key`
/// (`PERFD_CACHE_REDIS_URL` to `[cache.redis] url`, `PERFD_CACHE_STRATEGIES_AGENT_PLAN=10m` to
/// `[cache.strategies] agent_plan = "10m"`).
pub(super) const SECTIONS: [&str; 11] = [
    "cache.strategies",
    "cache.redis",
    "executions",
    "alerts",
    "storage",
    "sampler",
    "writer",
    "backup",
    "query",
    "cache",
    "http",
];

pub(super) fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// An environment value as TOML: numbers and booleans keep their type, anything else is a string.
pub(super) fn toml_value(s: &str) -> toml::Value {
    format!("v = {s}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(s.to_owned()))
}

fn duration(key: &str, v: Option<String>, default: &str) -> Result<Duration> {
    let text = v.as_deref().unwrap_or(default);
    let d = humantime::parse_duration(text).map_err(|e| {
        Error::Config(format!("{key}: {text:?} is not a duration like \"30d\" or \"5m\" ({e})"))
    })?;
    if d > super::MAX_DURATION {
        return Err(Error::Config(format!("{key}: {text:?} is longer than the maximum, 10 years")));
    }
    Ok(d)
}

fn duration_min(key: &str, v: Option<String>, default: &str, min: Duration) -> Result<Duration> {
    at_least(key, duration(key, v, default)?, min)
}

fn at_most<T: PartialOrd + std::fmt::Debug>(key: &str, v: T, max: T) -> Result<T> {
    if v > max {
        return Err(Error::Config(format!("{key}: {v:?} is above the maximum {max:?}")));
    }
    Ok(v)
}

fn at_least<T: PartialOrd + std::fmt::Debug>(key: &str, v: T, min: T) -> Result<T> {
    if v < min {
        return Err(Error::Config(format!("{key}: {v:?} is below the minimum {min:?}")));
    }
    Ok(v)
}

/// Why `listen` may not be served with this token: only loopback goes without one.
pub(super) fn exposure_error(listen: SocketAddr, auth_token: Option<&str>) -> Option<String> {
    (!listen.ip().is_loopback() && auth_token.is_none()).then(|| {
        format!("listen: {listen} is not a loopback address; set auth_token (or PERFD_AUTH_TOKEN) first")
    })
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8470".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            Error::Config(format!("listen: {listen_text:?} is not an address like 127.0.0.1:8470"))
        })?;
        let auth_token = self.auth_token.filter(|t| !t.is_empty());
        if auth_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(Error::Config("auth_token: use at least 16 characters".into()));
        }
        if let Some(e) = exposure_error(listen, auth_token.as_deref()) {
            return Err(Error::Config(e));
        }
        Ok(Config {
            listen,
            auth_token,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            http: self.http.validate()?,
            storage: self.storage.validate()?,
            writer: self.writer.validate()?,
            query: QueryConfig {
                max_points: at_least("query.max_points", self.query.max_points.unwrap_or(5_000_000), 1)?,
            },
            cache: self.cache.validate()?,
            sampler: SamplerConfig {
                interval: duration_min(
                    "sampler.interval",
                    self.sampler.interval,
                    "5s",
                    Duration::from_secs(1),
                )?,
            },
            alerts: self.alerts.validate()?,
            backup: self.backup.validate()?,
            executions: self.executions.validate()?,
        })
    }
}

impl RawHttp {
    fn validate(self) -> Result<HttpConfig> {
        Ok(HttpConfig {
            max_body_bytes: at_least("http.max_body_bytes", self.max_body_bytes.unwrap_or(32 << 20), 1024)?,
            // actix-server panics past 512 workers.
            workers: at_most("http.workers", at_least("http.workers", self.workers.unwrap_or(2), 1)?, 512)?,
            max_connections: at_least("http.max_connections", self.max_connections.unwrap_or(4096), 1)?,
            keep_alive: duration_min("http.keep_alive", self.keep_alive, "5s", Duration::from_millis(100))?,
            request_timeout: duration_min(
                "http.request_timeout",
                self.request_timeout,
                "30s",
                Duration::from_millis(100),
            )?,
            allowed_hosts: match self.allowed_hosts {
                None => Vec::new(),
                Some(HostList::List(hosts)) => hosts,
                Some(HostList::Text(text)) => {
                    text.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()
                }
            }
            .into_iter()
            .map(allowed_host)
            .collect::<Result<_>>()?,
        })
    }
}

/// A name for `http.allowed_hosts`: a host name (no port or scheme), or `*` for any.
fn allowed_host(host: String) -> Result<String> {
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
    if host == "*" || (!host.is_empty() && host.len() <= 253 && host.bytes().all(name_byte)) {
        return Ok(host.to_ascii_lowercase());
    }
    Err(Error::Config(format!(
        "http.allowed_hosts: {host:?} is not a host name (give names like \"perfd.internal\", without \
         scheme or port, or \"*\" for any)"
    )))
}

impl RawStorage {
    fn validate(self) -> Result<StorageConfig> {
        let retention = duration("storage.retention", self.retention, "30d")?;
        Ok(StorageConfig {
            retention: at_least("storage.retention", retention, Duration::from_secs(3600))?,
            max_series: at_least("storage.max_series", self.max_series.unwrap_or(100_000), 1)?,
        })
    }
}

impl RawWriter {
    fn validate(self) -> Result<WriterConfig> {
        Ok(WriterConfig {
            // The channel allocates every slot up front (a huge capacity panicked at start).
            queue_capacity: at_most(
                "writer.queue_capacity",
                at_least("writer.queue_capacity", self.queue_capacity.unwrap_or(1024), 1)?,
                1_000_000,
            )?,
            max_queued_points: at_least(
                "writer.max_queued_points",
                self.max_queued_points.unwrap_or(8_000_000),
                1,
            )?,
            seal_delay: duration("writer.seal_delay", self.seal_delay, "2m")?,
            maintenance_interval: duration_min(
                "writer.maintenance_interval",
                self.maintenance_interval,
                "1s",
                Duration::from_millis(10),
            )?,
            max_open_points: at_least(
                "writer.max_open_points",
                self.max_open_points.unwrap_or(8_000_000),
                1,
            )?,
        })
    }
}

impl RawAlerts {
    fn validate(self) -> Result<AlertsConfig> {
        let notify_url = self.notify_url.filter(|u| !u.is_empty());
        if let Some(url) = &notify_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.parse::<ureq::http::Uri>().map_or(true, |u| u.host().is_none()) {
                return Err(Error::Config(format!(
                    "alerts.notify_url: {url:?} is not an http:// or https:// URL like http://127.0.0.1:9093/api/v2/alerts"
                )));
            }
        }
        let notify_ca_file = self.notify_ca_file.filter(|p| !p.as_os_str().is_empty());
        if let Some(path) = &notify_ca_file {
            crate::sampler::delivery::read_ca_file(path)
                .map_err(|e| Error::Config(format!("alerts.notify_ca_file: {e}")))?;
        }
        Ok(AlertsConfig {
            notify_url,
            notify_ca_file,
            notify_timeout: duration_min(
                "alerts.notify_timeout",
                self.notify_timeout,
                "5s",
                Duration::from_millis(100),
            )?,
            resend_interval: duration_min(
                "alerts.resend_interval",
                self.resend_interval,
                "1m",
                Duration::from_millis(100),
            )?,
        })
    }
}

impl RawBackup {
    fn validate(self) -> Result<BackupConfig> {
        Ok(BackupConfig {
            interval: match self.interval.as_deref() {
                None | Some("off") | Some("0s") => None,
                Some(_) => {
                    Some(duration_min("backup.interval", self.interval, "1d", Duration::from_secs(1))?)
                }
            },
            keep: at_least("backup.keep", self.keep.unwrap_or(7), 1)?,
        })
    }
}

impl RawExecutions {
    fn validate(self) -> Result<crate::executions::ExecutionConfig> {
        let percent = |key: &str, v: Option<f64>, default: f64| match v.unwrap_or(default) {
            p if p > 0.0 && p <= 101.0 => Ok(p),
            p => Err(Error::Config(format!("{key}: {p} is not a percentage"))),
        };
        Ok(crate::executions::ExecutionConfig {
            max_concurrent: at_least("executions.max_concurrent", self.max_concurrent.unwrap_or(10), 1)?,
            queue_capacity: self.queue_capacity.unwrap_or(100),
            cpu_limit_percent: percent("executions.cpu_limit_percent", self.cpu_limit_percent, 90.0)?,
            memory_limit_percent: percent(
                "executions.memory_limit_percent",
                self.memory_limit_percent,
                85.0,
            )?,
            lease: duration_min("executions.lease", self.lease, "60s", Duration::from_millis(10))?,
        })
    }
}

impl RawCache {
    fn validate(self) -> Result<CacheConfig> {
        let mut strategies: BTreeMap<String, Duration> =
            BUILTIN_STRATEGIES.iter().map(|(n, s)| (n.to_string(), Duration::from_secs(*s))).collect();
        for (name, ttl) in self.strategies {
            let key = format!("cache.strategies.{name}");
            let ok = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(Error::Config(format!("{key}: strategy names are [a-z0-9_], 1 to 64 bytes")));
            }
            let ttl = at_least(&key, duration(&key, Some(ttl), "")?, Duration::from_secs(1))?;
            if ttl > crate::cache::MAX_TTL {
                return Err(Error::Config(format!("{key}: a TTL is at most 365 days")));
            }
            strategies.insert(name, ttl);
        }
        let r = self.redis;
        Ok(CacheConfig {
            max_entries: at_least("cache.max_entries", self.max_entries.unwrap_or(1000), 1)?,
            max_bytes: self.max_bytes.unwrap_or(0),
            max_entry_bytes: at_least("cache.max_entry_bytes", self.max_entry_bytes.unwrap_or(1 << 20), 1)?,
            sweep_interval: duration_min(
                "cache.sweep_interval",
                self.sweep_interval,
                "30s",
                Duration::from_millis(10),
            )?,
            lease_ttl: duration_min("cache.lease_ttl", self.lease_ttl, "30s", Duration::from_millis(10))?,
            warm_restart: self.warm_restart.unwrap_or(true),
            strategies,
            redis: RedisConfig {
                url: r.url.filter(|u| !u.is_empty()),
                pool_size: match r.pool_size.unwrap_or(8) {
                    n @ 1..=50 => n,
                    n => {
                        return Err(Error::Config(format!(
                            "cache.redis.pool_size: {n} is not between 1 and 50"
                        )));
                    }
                },
                // Zero made every call time out (Redis never usable); a minute already holds a
                // request that long per call while Redis hangs.
                timeout: at_most(
                    "cache.redis.timeout",
                    duration_min("cache.redis.timeout", r.timeout, "50ms", Duration::from_millis(1))?,
                    Duration::from_secs(60),
                )?,
                // Empty, perfd's keys are every key: `clear l2` would delete the whole database.
                prefix: match r.prefix.unwrap_or_else(|| "perfd:".into()) {
                    p if p.is_empty() => {
                        return Err(Error::Config(
                            "cache.redis.prefix: must not be empty (clearing L2 deletes every key with it)"
                                .into(),
                        ));
                    }
                    p => p,
                },
            },
        })
    }
}
