//! Configuration: defaults < TOML file < `PERFD_*` environment < command-line flags, validated
//! once into [`Config`]. Nothing reads the environment after start; each component receives only
//! its own sub-struct.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated configuration of one perfd process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP API binds; loopback by default.
    pub listen: SocketAddr,
    /// Directory holding `perfd.redb` (created if missing).
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub storage: StorageConfig,
    pub writer: WriterConfig,
    pub query: QueryConfig,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Largest request body accepted, after gzip decompression too (bytes).
    pub max_body_bytes: usize,
    /// actix worker threads.
    pub workers: usize,
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
    data_dir: Option<PathBuf>,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    writer: RawWriter,
    #[serde(default)]
    query: RawQuery,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    max_body_bytes: Option<usize>,
    workers: Option<usize>,
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

/// Sections of the TOML file; `PERFD_<SECTION>_<KEY>` maps to `[section] key`.
const SECTIONS: [&str; 4] = ["http", "storage", "writer", "query"];

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
                    let entry = table
                        .entry(*section)
                        .or_insert_with(|| toml::Table::new().into());
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
        let raw: RawConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        raw.validate()
    }

    /// A configuration for tests: port 0 on loopback, data in `dir`, short intervals.
    pub fn for_test(dir: &Path) -> Config {
        let mut c = RawConfig::default().validate().expect("defaults are valid");
        c.listen = "127.0.0.1:0".parse().expect("valid address");
        c.data_dir = dir.to_owned();
        c.http.workers = 2;
        c.writer.maintenance_interval = Duration::from_millis(200);
        c
    }
}

fn read_toml(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
    text.parse::<toml::Table>()
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
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
    humantime::parse_duration(text).map_err(|e| {
        Error::Config(format!(
            "{key}: {text:?} is not a duration like \"30d\" or \"5m\" ({e})"
        ))
    })
}

fn at_least<T: PartialOrd + std::fmt::Debug>(key: &str, v: T, min: T) -> Result<T> {
    if v < min {
        return Err(Error::Config(format!(
            "{key}: {v:?} is below the minimum {min:?}"
        )));
    }
    Ok(v)
}

impl RawConfig {
    fn validate(self) -> Result<Config> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:8470".into());
        let listen = listen_text.parse().map_err(|_| {
            Error::Config(format!(
                "listen: {listen_text:?} is not an address like 127.0.0.1:8470"
            ))
        })?;
        let retention = duration("storage.retention", self.storage.retention, "30d")?;
        let w = self.writer;
        Ok(Config {
            listen,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("./data")),
            http: HttpConfig {
                max_body_bytes: at_least(
                    "http.max_body_bytes",
                    self.http.max_body_bytes.unwrap_or(32 << 20),
                    1024,
                )?,
                workers: at_least("http.workers", self.http.workers.unwrap_or(2), 1)?,
            },
            storage: StorageConfig {
                retention: at_least("storage.retention", retention, Duration::from_secs(3600))?,
                max_series: at_least(
                    "storage.max_series",
                    self.storage.max_series.unwrap_or(100_000),
                    1,
                )?,
            },
            writer: WriterConfig {
                queue_capacity: at_least(
                    "writer.queue_capacity",
                    w.queue_capacity.unwrap_or(1024),
                    1,
                )?,
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
                max_points: at_least(
                    "query.max_points",
                    self.query.max_points.unwrap_or(5_000_000),
                    1,
                )?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn precedence_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("perfd.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[storage]\nretention = \"2d\"\nmax_series = 5\n",
        )
        .unwrap();
        let flags = Overrides {
            config_file: Some(file),
            listen: Some("127.0.0.1:3".into()),
            data_dir: None,
        };
        let c = Config::load(
            &flags,
            env(&[
                ("PERFD_STORAGE_MAX_SERIES", "7"),
                ("PERFD_LISTEN", "127.0.0.1:2"),
            ]),
        )
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
        let flags = Overrides {
            config_file: Some(path),
            ..Overrides::default()
        };
        let from_file = Config::load(&flags, env(&[])).unwrap();
        let defaults = Config::load(&Overrides::default(), env(&[])).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(
            &Overrides::default(),
            env(&[("PERFD_STORAGE_RETENTION", "forever")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("storage.retention"), "{e}");
        let e =
            Config::load(&Overrides::default(), env(&[("PERFD_WRITER_BOGUS", "1")])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e =
            Config::load(&Overrides::default(), env(&[("PERFD_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
    }
}
