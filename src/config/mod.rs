//! Configuration: defaults < TOML file < `PERFD_*` environment < command-line flags, validated
//! into [`Config`] at start and again on each reload (`live.rs`), which reads the environment
//! captured at start ([`Source`]), never the process's again. Each component receives its own
//! sub-struct, or the live `Config` where a reload must reach it.

mod live;
mod raw;

pub use live::{Reload, Source};

/// Longest duration any setting (or a profiles window) takes: far beyond any sensible one, and
/// short enough that no clock arithmetic on it can overflow (a sampler interval of 500 billion
/// years panicked at start, a lease TTL or HTTP timeout that long on every request).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86400);

use crate::error::{Error, Result};
use raw::{RawConfig, SECTIONS, read_toml, toml_value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration of one perfd process.
#[derive(Debug, Clone, serde::Serialize)]
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
    pub alerts: AlertsConfig,
    pub executions: crate::executions::ExecutionConfig,
    pub backup: BackupConfig,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupConfig {
    /// Scheduled backups into `<data_dir>/backups`; `None` (the default) means off.
    pub interval: Option<Duration>,
    /// Scheduled backups kept; older `perfd-*.pfbk` files are deleted.
    pub keep: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct SamplerConfig {
    /// How often the host is read, statistics are written as series and health is scored.
    pub interval: Duration,
}

/// Where firing and resolved alerts are sent (Alertmanager's `POST /api/v2/alerts` format).
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlertsConfig {
    /// An Alertmanager's `http(s)://host:9093/api/v2/alerts`, or any receiver of the same JSON;
    /// `None` (the default) sends nothing.
    pub notify_url: Option<String>,
    /// PEM file of the certificate authorities an https receiver's certificate is checked
    /// against, instead of the public ones (webpki's roots); for a private CA.
    pub notify_ca_file: Option<PathBuf>,
    /// Limit on each delivery (connect, send and answer); a failed one is retried.
    pub notify_timeout: Duration,
    /// How often firing alerts are sent again, so an Alertmanager keeps them active (each says
    /// it ends four intervals later unless sent again).
    pub resend_interval: Duration,
}

#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpConfig {
    /// Largest request body accepted, after gzip decompression too (bytes).
    pub max_body_bytes: usize,
    /// actix worker threads.
    pub workers: usize,
    /// Open connections each worker accepts; beyond it new connections wait in the backlog.
    pub max_connections: usize,
    /// How long an idle connection is kept between requests.
    pub keep_alive: Duration,
    /// How long a client may take to send a request head (the first one counted from connect).
    pub request_timeout: Duration,
    /// Host names requests may name in `Host` and `Origin` besides IP addresses and localhost
    /// (`api::HostPolicy`); `*` allows any.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StorageConfig {
    /// Points older than this are rejected on ingest and their chunks deleted.
    pub retention: Duration,
    /// Cardinality cap: ingest that would create more series is refused with 422.
    pub max_series: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
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

#[derive(Debug, Clone, serde::Serialize)]
pub struct QueryConfig {
    /// Largest raw answer, in points; larger ones are a 422 asking for a narrower range or `step`.
    pub max_points: usize,
}

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
            match SECTIONS.iter().find(|s| rest.starts_with(&format!("{}_", s.replace('.', "_")))) {
                Some(section) => {
                    let key = rest[section.len() + 1..].to_owned();
                    let mut t = &mut table;
                    for name in section.split('.') {
                        let entry = t.entry(name).or_insert_with(|| toml::Table::new().into());
                        let Some(inner) = entry.as_table_mut() else {
                            return Err(Error::Config(format!("{var}: [{section}] is not a table")));
                        };
                        t = inner;
                    }
                    t.insert(key, value);
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
    fn http_timeouts_are_durations_of_at_least_100ms() {
        let c = Config::load(&Overrides::default(), env(&[("PERFD_HTTP_KEEP_ALIVE", "90s")])).unwrap();
        assert_eq!(
            (c.http.keep_alive, c.http.request_timeout),
            (Duration::from_secs(90), Duration::from_secs(30))
        );
        for bad in ["0s", "soon"] {
            let e =
                Config::load(&Overrides::default(), env(&[("PERFD_HTTP_REQUEST_TIMEOUT", bad)])).unwrap_err();
            assert!(e.to_string().contains("http.request_timeout"), "{e}");
        }
    }

    /// Every duration is at most 10 years: longer ones overflowed clock arithmetic (a panic at
    /// start, or on every request).
    #[test]
    fn durations_are_at_most_ten_years() {
        let keys = [
            "PERFD_SAMPLER_INTERVAL",
            "PERFD_CACHE_LEASE_TTL",
            "PERFD_CACHE_SWEEP_INTERVAL",
            "PERFD_WRITER_MAINTENANCE_INTERVAL",
            "PERFD_WRITER_SEAL_DELAY",
            "PERFD_HTTP_KEEP_ALIVE",
            "PERFD_HTTP_REQUEST_TIMEOUT",
            "PERFD_EXECUTIONS_LEASE",
            "PERFD_BACKUP_INTERVAL",
            "PERFD_STORAGE_RETENTION",
            "PERFD_ALERTS_NOTIFY_TIMEOUT",
            "PERFD_ALERTS_RESEND_INTERVAL",
        ];
        for key in keys {
            let c = Config::load(&Overrides::default(), env(&[(key, "3650d")]));
            assert!(c.is_ok(), "{key}: {c:?}");
            let e = Config::load(&Overrides::default(), env(&[(key, "500000000000y")])).unwrap_err();
            assert!(e.to_string().contains("10 years"), "{key}: {e}");
        }
    }

    #[test]
    fn the_alert_receiver_is_an_http_url() {
        let url = "http://u:p@127.0.0.1:9093/api/v2/alerts";
        let c = Config::load(&Overrides::default(), env(&[("PERFD_ALERTS_NOTIFY_URL", url)])).unwrap();
        assert_eq!(c.alerts.notify_url.as_deref(), Some(url));
        for bad in ["127.0.0.1:9093", "ftp://h/x", "http://", "http:// spaced/"] {
            let e =
                Config::load(&Overrides::default(), env(&[("PERFD_ALERTS_NOTIFY_URL", bad)])).unwrap_err();
            assert!(e.to_string().contains("alerts.notify_url"), "{bad}: {e}");
        }
    }

    /// A self-signed CA made for this test (`openssl req -x509 -newkey ec`); its key is gone.
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBiDCCAS2gAwIBAgIUaVhhWAG3962s6gkGqVpHNg4bsq0wCgYIKoZIzj0EAwIw\nGDEWMBQGA1UEAwwNcGVyZmQgdGVzdCBDQTAgFw0yNjExMjgwODU3MTZaGA8yMTI2\nMTEwNDA4NTcxNlowGDEWMBQGA1UEAwwNcGVyZmQgdGVzdCBDQTBZMBMGByqGSM49\nAgEGCCqGSM49AwEHA0IABIy+BIKXY6G3iHgw11YRt3nUua90Dvx97Zqb3xoTCvYD\nkTI/VIrU+3Dh6gQQvZ+ktutJapjmlNy5XT/kMlkRxuejUzBRMB0GA1UdDgQWBBQ7\nikzaB84vh2+op+Sn0yUu8QNyLzAfBgNVHSMEGDAWgBQ7ikzaB84vh2+op+Sn0yUu\n8QNyLzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0kAMEYCIQC8JeUdWWas\npeE0Hu2fQpJU4ZwA0/bN8CxrAF5Oqm07zQIhAID62ZcXKhTfmhps8s2RxBtv2EC2\n73EWa7f9tqC3MEH3\n-----END CERTIFICATE-----\n";

    #[test]
    fn the_alert_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, junk) = (dir.path().join("ca.pem"), dir.path().join("junk.pem"));
        std::fs::write(&ca, TEST_CA).unwrap();
        std::fs::write(&junk, "not a certificate").unwrap();
        let load = |path: &Path| {
            let file = dir.path().join("perfd.toml");
            std::fs::write(&file, format!("[alerts]\nnotify_ca_file = {:?}\n", path.display().to_string()))
                .unwrap();
            Config::load(&Overrides { config_file: Some(file), ..Overrides::default() }, env(&[]))
        };
        assert_eq!(load(&ca).unwrap().alerts.notify_ca_file.as_deref(), Some(ca.as_path()));
        for (bad, says) in
            [(junk.as_path(), "holds no PEM certificate"), (&dir.path().join("nope.pem"), "cannot read")]
        {
            let e = load(bad).unwrap_err().to_string();
            assert!(e.contains("alerts.notify_ca_file") && e.contains(says), "{e}");
        }
    }

    /// Sizes that made a dependency panic at start: actix-server past 512 workers, the writer's
    /// channel (slots allocated up front) at a huge capacity.
    #[test]
    fn sizes_a_dependency_cannot_take_are_refused() {
        for (key, ok, bad) in [
            ("PERFD_HTTP_WORKERS", "512", "513"),
            ("PERFD_WRITER_QUEUE_CAPACITY", "1000000", "9223372036854775807"),
        ] {
            assert!(Config::load(&Overrides::default(), env(&[(key, ok)])).is_ok(), "{key}");
            let e = Config::load(&Overrides::default(), env(&[(key, bad)])).unwrap_err();
            assert!(e.to_string().contains("maximum"), "{key}: {e}");
        }
    }

    #[test]
    fn the_redis_timeout_is_1ms_to_a_minute() {
        let c = Config::load(&Overrides::default(), env(&[("PERFD_CACHE_REDIS_TIMEOUT", "2s")])).unwrap();
        assert_eq!(c.cache.redis.timeout, Duration::from_secs(2));
        for bad in ["0s", "500us", "61s"] {
            let e =
                Config::load(&Overrides::default(), env(&[("PERFD_CACHE_REDIS_TIMEOUT", bad)])).unwrap_err();
            assert!(e.to_string().contains("cache.redis.timeout"), "{bad}: {e}");
        }
    }

    /// Regression: an empty prefix was accepted, and `clear l2` then deleted every key in the
    /// Redis database, not only perfd's.
    #[test]
    fn the_redis_prefix_is_not_empty() {
        let e = Config::load(&Overrides::default(), env(&[("PERFD_CACHE_REDIS_PREFIX", "")])).unwrap_err();
        assert!(e.to_string().contains("cache.redis.prefix"), "{e}");
        let c = Config::load(&Overrides::default(), env(&[("PERFD_CACHE_REDIS_PREFIX", "x:")])).unwrap();
        assert_eq!(c.cache.redis.prefix, "x:");
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

    /// Regression: `PERFD_CACHE_REDIS_URL` became an unknown top-level `cache_redis` key, so
    /// perfd refused to start instead of using Redis.
    #[test]
    fn nested_sections_come_from_the_environment() {
        let c = Config::load(
            &Overrides::default(),
            env(&[
                ("PERFD_CACHE_REDIS_URL", "redis://127.0.0.1:6379/"),
                ("PERFD_CACHE_REDIS_POOL_SIZE", "4"),
                ("PERFD_CACHE_MAX_ENTRIES", "50"),
                ("PERFD_CACHE_STRATEGIES_AGENT_PLAN", "10m"),
            ]),
        )
        .unwrap();
        assert_eq!(c.cache.strategies["agent_plan"], Duration::from_secs(600));
        assert_eq!(c.cache.redis.url.as_deref(), Some("redis://127.0.0.1:6379/"));
        assert_eq!((c.cache.redis.pool_size, c.cache.max_entries), (4, 50));
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

    #[test]
    fn allowed_hosts_come_as_a_list_or_comma_separated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("perfd.toml");
        std::fs::write(&file, "[http]\nallowed_hosts = [\"Perfd.Internal\", \"*\"]\n").unwrap();
        let flags = Overrides { config_file: Some(file), ..Overrides::default() };
        assert_eq!(Config::load(&flags, env(&[])).unwrap().http.allowed_hosts, ["perfd.internal", "*"]);
        let c = Config::load(&Overrides::default(), env(&[("PERFD_HTTP_ALLOWED_HOSTS", "a.b, c,")])).unwrap();
        assert_eq!(c.http.allowed_hosts, ["a.b", "c"]);
        assert!(Config::load(&Overrides::default(), env(&[])).unwrap().http.allowed_hosts.is_empty());
        for bad in ["http://a.b", "a.b:8470", "a b", "a/b"] {
            let e =
                Config::load(&Overrides::default(), env(&[("PERFD_HTTP_ALLOWED_HOSTS", bad)])).unwrap_err();
            assert!(e.to_string().contains("http.allowed_hosts"), "{bad}: {e}");
        }
    }
}
