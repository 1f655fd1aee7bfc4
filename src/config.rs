//! Configuration: defaults < TOML file < `PERFD_*` environment < command-line flags, validated
//! once into [`Config`]. Nothing reads the environment after start; each component receives only
//! its own sub-struct.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration of one perfd process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP API binds; loopback by default.
    pub listen: SocketAddr,
    /// When set, every mutating and admin request needs `Authorization: Bearer <token>`.
    /// Required for a non-loopback `listen`.
    pub auth_token: Option<String>,
    /// Directory holding `perfd.redb` (created if missing).
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub writer: WriterConfig,
    pub query: QueryConfig,
    pub cache: CacheConfig,
    pub sampler: SamplerConfig,
    pub executions: crate::executions::ExecutionConfig,
    pub backup: BackupConfig,
}

#[derive(Debug, Clone)]
pub struct BackupConfig {
    /// Scheduled backups into `<data_dir>/backups`; `None` (the default) means off.
    pub interval: Option<Duration>,
    /// Scheduled backups kept; older `perfd-*.pfbk` files are deleted.
    pub keep: usize,
}

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// How often the host is read, statistics are written as series and health is scored.
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// L1 entries (quick_cache capacity when no byte budget is set).
    pub max_entries: usize,
    /// L1 byte budget; 0 means none (then `max_entries` bounds L1).
    pub max_bytes: u64,
    /// Largest value accepted (413 above).
    pub max_entry_bytes: usize,
    /// How often expired L1 entries are swept.
    pub sweep_interval: Duration,
    /// How long a fill lease lasts before another caller may take it.
    pub lease_ttl: Duration,
    /// Save live L1 entries on shutdown and load them on start.
    pub warm_restart: bool,
    /// Strategy name → default TTL: the built-in five plus any from the file.
    pub strategies: BTreeMap<String, Duration>,
    pub redis: RedisConfig,
}

/// The Redis L2 (used only when built with `--features redis` and `url` is set).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: Option<String>,
    /// Connections kept open (each multiplexes many requests), at most 50.
    pub pool_size: usize,
    /// Limit on every Redis call; past it L1 keeps serving and a timeout is counted.
    pub timeout: Duration,
    /// Prefix of every key perfd writes; `clear l2` deletes only these.
    pub prefix: String,
}

/// Strategies every perfd knows, with the TTLs the agent backend relies on.
pub const BUILTIN_STRATEGIES: [(&str, u64); 5] = [
    ("crew_config", 3600),
    ("execution_state", 300),
    ("memory_query", 900),
    ("llm_response", 1800),
    ("performance", 60),
];

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, after gzip decompression too (bytes).
    pub max_body_bytes: usize,
    /// actix worker threads.
    pub workers: usize,
    /// Open connections each worker accepts; beyond it new connections wait in the backlog.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Points older than this are rejected on ingest and their chunks deleted.
    pub retention: Duration,
    /// Cardinality cap: ingest that would create more series is refused with 422.
    pub max_series: usize,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Messages the writer channel holds before ingest answers 503.
    pub queue_capacity: usize,
    /// Points waiting in the channel before ingest answers 503; bounds queued memory.
    pub max_queued_points: usize,
    /// How long after an hour ends its open points wait for stragglers before being sealed.
    pub seal_delay: Duration,
    /// How often the writer looks for hours to seal and chunks to expire.
    pub maintenance_interval: Duration,
    /// Open (unsealed) points kept in memory before the largest open hours are sealed early.
    pub max_open_points: usize,
}

#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Largest raw answer, in points; larger ones are a 422 asking for a narrower range or `step`.
    pub max_points: usize,
}

/// The TOML file and environment as written, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
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
/// (`PERFD_CACHE_REDIS_URL` to `[cache.redis] url`).
const SECTIONS: [&str; 9] =
    ["cache_redis", "executions", "storage", "sampler", "writer", "backup", "query", "cache", "http"];

/// Flags that override everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Builds the configuration from `file`, the given environment and `flags`.
    pub fn load(flags: &Overrides, env: impl Iterator<Item = (String, String)>) -> Result<Config> {
        let mut table = match &flags.config_file {
            Some(path) => read_toml(path)?,
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(rest) = var.strip_prefix("PERFD_") else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let value = toml_value(&value);
            match SECTIONS.iter().find(|s| rest.starts_with(&format!("{s}_"))) {
                Some(section) => {
                    let key = rest[section.len() + 1..].to_owned();
                    let entry = table.entry(*section).or_insert_with(|| toml::Table::new().into());
                    if let Some(t) = entry.as_table_mut() {
                        t.insert(key, value);
                    }
                }
                None => {
                    table.insert(rest, value);
                }
            }
        }
        if let Some(l) = &flags.listen {
            table.insert("listen".into(), l.clone().into());
        }
        if let Some(d) = &flags.data_dir {
            table.insert("data_dir".into(), d.display().to_string().into());
        }
        let raw: RawConfig = table.try_into().map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        raw.validate()
    }

    /// A configuration for tests: port 0 on loopback, data in `dir`, short intervals.
    pub fn for_test(dir: &Path) -> Config {
        let mut c = RawConfig::default().validate().expect("defaults are valid");
        c.listen = "127.0.0.1:0".parse().expect("valid address");
        c.data_dir = dir.to_owned();
        c.http.workers = 2;
        c.writer.maintenance_interval = Duration::from_millis(200);
        // Tests tick the sampler themselves (`SamplerHandle::tick`), so its writes are predictable.
        c.sampler.interval = Duration::from_secs(3600);
        // A busy test machine must not hold executions back.
        c.executions.cpu_limit_percent = 101.0;
        c.executions.memory_limit_percent = 101.0;
        c
    }
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// An environment value as TOML: numbers and booleans keep their type, anything else is a string.
fn toml_value(s: &str) -> toml::Value {
    format!("v = {s}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table() && !v.is_array())
        .unwrap_or_else(|| toml::Value::String(s.to_owned()))
}

fn duration(key: &str, v: Option<String>, default: &str) -> Result<Duration> {
    let text = v.as_deref().unwrap_or(default);
    humantime::parse_duration(text)
        .map_err(|e| Error::Config(format!("{key}: {text:?} is not a duration like \"30d\" or \"5m\" ({e})")))
}

fn at_least<T: PartialOrd + std::fmt::Debug>(key: &str, v: T, min: T) -> Result<T> {
    if v < min {
        return Err(Error::Config(format!("{key}: {v:?} is below the minimum {min:?}")));
    }
    Ok(v)
}

impl RawConfig {
    fn validate(self) -> Result<Config> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8470".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            Error::Config(format!("listen: {listen_text:?} is not an address like 127.0.0.1:8470"))
        })?;
        let auth_token = self.auth_token.filter(|t| !t.is_empty());
        if auth_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(Error::Config("auth_token: use at least 16 characters".into()));
        }
        if !listen.ip().is_loopback() && auth_token.is_none() {
            return Err(Error::Config(format!(
                "listen: {listen} is not a loopback address; set auth_token (or PERFD_AUTH_TOKEN) first"
            )));
        }
        let retention = duration("storage.retention", self.storage.retention, "30d")?;
        let cache = self.cache.validate()?;
        let w = self.writer;
        Ok(Config {
            listen,
            auth_token,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            http: HttpConfig {
                max_body_bytes: at_least(
                    "http.max_body_bytes",
                    self.http.max_body_bytes.unwrap_or(32 << 20),
                    1024,
                )?,
                workers: at_least("http.workers", self.http.workers.unwrap_or(2), 1)?,
                max_connections: at_least(
                    "http.max_connections",
                    self.http.max_connections.unwrap_or(4096),
                    1,
                )?,
            },
            storage: StorageConfig {
                retention: at_least("storage.retention", retention, Duration::from_secs(3600))?,
                max_series: at_least("storage.max_series", self.storage.max_series.unwrap_or(100_000), 1)?,
            },
            writer: WriterConfig {
                queue_capacity: at_least("writer.queue_capacity", w.queue_capacity.unwrap_or(1024), 1)?,
                max_queued_points: at_least(
                    "writer.max_queued_points",
                    w.max_queued_points.unwrap_or(8_000_000),
                    1,
                )?,
                seal_delay: duration("writer.seal_delay", w.seal_delay, "2m")?,
                maintenance_interval: at_least(
                    "writer.maintenance_interval",
                    duration("writer.maintenance_interval", w.maintenance_interval, "1s")?,
                    Duration::from_millis(10),
                )?,
                max_open_points: at_least(
                    "writer.max_open_points",
                    w.max_open_points.unwrap_or(8_000_000),
                    1,
                )?,
            },
            query: QueryConfig {
                max_points: at_least("query.max_points", self.query.max_points.unwrap_or(5_000_000), 1)?,
            },
            cache,
            sampler: SamplerConfig {
                interval: at_least(
                    "sampler.interval",
                    duration("sampler.interval", self.sampler.interval, "5s")?,
                    Duration::from_secs(1),
                )?,
            },
            backup: BackupConfig {
                interval: match self.backup.interval.as_deref() {
                    None | Some("off") | Some("0s") => None,
                    Some(_) => Some(at_least(
                        "backup.interval",
                        duration("backup.interval", self.backup.interval, "1d")?,
                        Duration::from_secs(1),
                    )?),
                },
                keep: at_least("backup.keep", self.backup.keep.unwrap_or(7), 1)?,
            },
            executions: {
                let e = self.executions;
                let percent = |key: &str, v: Option<f64>, default: f64| match v.unwrap_or(default) {
                    p if p > 0.0 && p <= 101.0 => Ok(p),
                    p => Err(Error::Config(format!("{key}: {p} is not a percentage"))),
                };
                crate::executions::ExecutionConfig {
                    max_concurrent: at_least("executions.max_concurrent", e.max_concurrent.unwrap_or(10), 1)?,
                    queue_capacity: e.queue_capacity.unwrap_or(100),
                    cpu_limit_percent: percent("executions.cpu_limit_percent", e.cpu_limit_percent, 90.0)?,
                    memory_limit_percent: percent(
                        "executions.memory_limit_percent",
                        e.memory_limit_percent,
                        85.0,
                    )?,
                    lease: at_least(
                        "executions.lease",
                        duration("executions.lease", e.lease, "60s")?,
                        Duration::from_millis(10),
                    )?,
                }
            },
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
            strategies.insert(name, ttl);
        }
        let r = self.redis;
        Ok(CacheConfig {
            max_entries: at_least("cache.max_entries", self.max_entries.unwrap_or(1000), 1)?,
            max_bytes: self.max_bytes.unwrap_or(0),
            max_entry_bytes: at_least("cache.max_entry_bytes", self.max_entry_bytes.unwrap_or(1 << 20), 1)?,
            sweep_interval: at_least(
                "cache.sweep_interval",
                duration("cache.sweep_interval", self.sweep_interval, "30s")?,
                Duration::from_millis(10),
            )?,
            lease_ttl: at_least(
                "cache.lease_ttl",
                duration("cache.lease_ttl", self.lease_ttl, "30s")?,
                Duration::from_millis(10),
            )?,
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
                timeout: duration("cache.redis.timeout", r.timeout, "50ms")?,
                prefix: r.prefix.unwrap_or_else(|| "perfd:".into()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("perfd.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[storage]\nretention = \"2d\"\nmax_series = 5\n")
            .unwrap();
        let flags = Overrides { config_file: Some(file), listen: Some("127.0.0.1:3".into()), data_dir: None };
        let c =
            Config::load(&flags, env(&[("PERFD_STORAGE_MAX_SERIES", "7"), ("PERFD_LISTEN", "127.0.0.1:2")]))
                .unwrap();
        assert_eq!(c.listen.port(), 3);
        assert_eq!(c.storage.retention, Duration::from_secs(2 * 86400));
        assert_eq!(c.storage.max_series, 7);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
    }

    /// The shipped example must stay loadable and say the defaults.
    #[test]
    fn shipped_example_config_is_valid_and_matches_defaults() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("systemd/perfd.toml");
        let flags = Overrides { config_file: Some(path), ..Overrides::default() };
        let from_file = Config::load(&flags, env(&[])).unwrap();
        let defaults = Config::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn a_public_address_needs_a_token() {
        let e = Config::load(&Overrides::default(), env(&[("PERFD_LISTEN", "0.0.0.0:8470")])).unwrap_err();
        assert!(e.to_string().contains("auth_token"), "{e}");
        let c = Config::load(
            &Overrides::default(),
            env(&[("PERFD_LISTEN", "0.0.0.0:8470"), ("PERFD_AUTH_TOKEN", "0123456789abcdef")]),
        )
        .unwrap();
        assert_eq!(c.auth_token.as_deref(), Some("0123456789abcdef"));
        assert!(Config::load(&Overrides::default(), env(&[("PERFD_AUTH_TOKEN", "short")])).is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Config::load(&Overrides::default(), env(&[("PERFD_STORAGE_RETENTION", "forever")])).unwrap_err();
        assert!(e.to_string().contains("storage.retention"), "{e}");
        let e = Config::load(&Overrides::default(), env(&[("PERFD_WRITER_BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::load(&Overrides::default(), env(&[("PERFD_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
