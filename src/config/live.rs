//! Reloading: which settings a running perfd takes from its configuration read again (SIGHUP,
//! `systemctl reload perfd`, `POST /api/v1/admin/reload`), and which wait for a restart.
//!
//! Taken at once: `auth_token`, `http.allowed_hosts`, `storage.*`, `query.*`, `backup.*`,
//! `executions.*`, `sampler.interval` and the TTLs of the strategies perfd runs with. Everything
//! else (the listener, the data dir, worker threads, sizes of the writer queue and of L1, Redis,
//! alert delivery, a strategy added or removed) keeps its value until a restart; a reload names
//! those keys.

use super::raw::SECTIONS;
use super::{Config, Overrides};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Where a configuration came from: the flags and the `PERFD_*` environment it was loaded with,
/// so a reload reads the same file again under the same overrides.
#[derive(Debug, Clone, Default)]
pub struct Source {
    flags: Overrides,
    env: Vec<(String, String)>,
}

impl Source {
    /// Keeps the `PERFD_*` variables of `env` (nothing else is read).
    pub fn new(flags: Overrides, env: impl Iterator<Item = (String, String)>) -> Source {
        Source { flags, env: env.filter(|(k, _)| k.starts_with("PERFD_")).collect() }
    }

    pub fn load(&self) -> Result<Config> {
        Config::load(&self.flags, self.env.iter().cloned())
    }
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reload {
    /// Keys whose new values are in effect (as the file names them: `storage.retention`,
    /// `cache.strategies.llm_response`).
    pub applied: Vec<String>,
    /// Keys whose new values wait for a restart; they keep their old ones meanwhile.
    pub needs_restart: Vec<String>,
}

impl Config {
    /// The configuration to run with once `fresh` has been read: this one with `fresh`'s values
    /// of the settings a reload takes, and the keys that changed either way. Refused when the
    /// result would serve a non-loopback address without a token.
    pub fn reloaded(&self, fresh: &Config) -> Result<(Config, Reload)> {
        let mut next = self.clone();
        next.auth_token.clone_from(&fresh.auth_token);
        next.http.allowed_hosts.clone_from(&fresh.http.allowed_hosts);
        next.storage = fresh.storage.clone();
        next.query = fresh.query.clone();
        next.backup = fresh.backup.clone();
        next.executions = fresh.executions.clone();
        next.sampler = fresh.sampler.clone();
        for (name, ttl) in &fresh.cache.strategies {
            if let Some(running) = next.cache.strategies.get_mut(name) {
                *running = *ttl;
            }
        }
        if let Some(e) = super::raw::exposure_error(next.listen, next.auth_token.as_deref()) {
            return Err(Error::Config(format!("{e} (the listener changes only on a restart)")));
        }
        let reload =
            Reload { applied: changed_keys(self, &next)?, needs_restart: changed_keys(&next, fresh)? };
        Ok((next, reload))
    }

    /// The configuration as the file lays it out, for people (`perfd config`,
    /// `GET /api/v1/admin/config`): durations as `1h 30m`, the token as `"(set)"`, and the
    /// user and password of a URL left out.
    pub fn shown(&self) -> serde_json::Value {
        fn walk(path: &str, value: &mut serde_json::Value) {
            let duration = value.as_object().and_then(|o| {
                let (secs, nanos) = (o.get("secs")?.as_u64()?, o.get("nanos")?.as_u64()?);
                (o.len() == 2).then(|| std::time::Duration::new(secs, nanos as u32))
            });
            if let Some(d) = duration {
                *value = humantime::format_duration(d).to_string().into();
                return;
            }
            match value {
                serde_json::Value::Object(fields) => {
                    for (name, v) in fields.iter_mut() {
                        walk(&format!("{path}.{name}"), v);
                    }
                }
                serde_json::Value::String(url) if path.ends_with("url") => {
                    if let Some((scheme, rest)) = url.split_once("://")
                        && let Some((_, host)) = rest.split_once('@')
                    {
                        *url = format!("{scheme}://***@{host}");
                    }
                }
                _ => {}
            }
        }
        let mut value = serde_json::to_value(self).unwrap_or_default();
        walk("", &mut value);
        if let Some(token) = value.get_mut("auth_token").filter(|t| !t.is_null()) {
            *token = "(set)".into();
        }
        value
    }
}

fn changed_keys(a: &Config, b: &Config) -> Result<Vec<String>> {
    let (a, b) = (keys(a)?, keys(b)?);
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(names.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect())
}

/// Every key as the file names it (`listen`, `storage.retention`, `cache.strategies.<name>`),
/// with its value as JSON (compared, never shown: `auth_token` is one).
fn keys(c: &Config) -> Result<BTreeMap<String, serde_json::Value>> {
    fn walk(path: String, value: serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
        match value {
            serde_json::Value::Object(fields) if path.is_empty() || SECTIONS.contains(&path.as_str()) => {
                for (name, v) in fields {
                    let key = if path.is_empty() { name } else { format!("{path}.{name}") };
                    walk(key, v, out);
                }
            }
            v => {
                out.insert(path, v);
            }
        }
    }
    let value =
        serde_json::to_value(c).map_err(|e| Error::Config(format!("cannot compare settings: {e}")))?;
    let mut out = BTreeMap::new();
    walk(String::new(), value, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("perfd.toml");
        std::fs::write(&path, file).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Source::new(Overrides { config_file: Some(path), ..Overrides::default() }, env).load()
    }

    #[test]
    fn a_reload_takes_the_live_settings_and_names_the_rest() {
        let old = load("[storage]\nretention = \"2d\"\n", &[]).unwrap();
        let fresh = load(
            "auth_token = \"0123456789abcdef\"\nlisten = \"127.0.0.1:9\"\n[storage]\nretention = \"3d\"\n\
             [http]\nworkers = 7\nallowed_hosts = [\"perfd.internal\"]\n[cache.strategies]\nllm_response = \"1h\"\nnew_one = \"1m\"\n",
            &[],
        )
        .unwrap();
        let (next, reload) = old.reloaded(&fresh).unwrap();
        assert_eq!(
            reload.applied,
            ["auth_token", "cache.strategies.llm_response", "http.allowed_hosts", "storage.retention"]
        );
        assert_eq!(reload.needs_restart, ["cache.strategies.new_one", "http.workers", "listen"]);
        assert_eq!(next.storage.retention, Duration::from_secs(3 * 86400));
        assert_eq!(next.cache.strategies["llm_response"], Duration::from_secs(3600));
        assert!(!next.cache.strategies.contains_key("new_one"));
        assert_eq!((next.listen, next.http.workers), (old.listen, old.http.workers));
        let (again, nothing) = next.reloaded(&next).unwrap();
        assert_eq!(nothing, Reload::default());
        assert_eq!(format!("{again:?}"), format!("{next:?}"));
    }

    #[test]
    fn the_shown_config_hides_secrets_and_says_durations_plainly() {
        let c = load(
            "auth_token = \"0123456789abcdef\"\n[alerts]\nnotify_url = \"http://u:secret@127.0.0.1:9093/api/v2/alerts\"\n",
            &[],
        )
        .unwrap();
        let shown = c.shown();
        let text = shown.to_string();
        assert!(!text.contains("0123456789abcdef") && !text.contains("secret"), "{text}");
        assert_eq!(shown["auth_token"], "(set)");
        assert_eq!(shown["alerts"]["notify_url"], "http://***@127.0.0.1:9093/api/v2/alerts");
        assert_eq!(shown["storage"]["retention"], "30days");
        assert_eq!(shown["cache"]["strategies"]["llm_response"], "30m");
        assert_eq!(shown["sampler"]["interval"], "5s");
        assert_eq!(load("", &[]).unwrap().shown()["auth_token"], serde_json::Value::Null);
    }

    #[test]
    fn the_environment_and_flags_of_the_start_still_win() {
        let c = load("[storage]\nmax_series = 5\n", &[("PERFD_STORAGE_MAX_SERIES", "7"), ("HOME", "/x")])
            .unwrap();
        assert_eq!(c.storage.max_series, 7);
    }

    #[test]
    fn a_token_cannot_be_dropped_while_listening_beyond_loopback() {
        let old = load("listen = \"0.0.0.0:0\"\nauth_token = \"0123456789abcdef\"\n", &[]).unwrap();
        let fresh = load("listen = \"127.0.0.1:0\"\n", &[]).unwrap();
        let e = old.reloaded(&fresh).unwrap_err().to_string();
        assert!(e.contains("auth_token") && e.contains("restart"), "{e}");
        let rotated = load("listen = \"0.0.0.0:0\"\nauth_token = \"fedcba9876543210\"\n", &[]).unwrap();
        let (next, reload) = old.reloaded(&rotated).unwrap();
        assert_eq!(next.auth_token.as_deref(), Some("fedcba9876543210"));
        assert_eq!(reload.applied, ["auth_token"]);
    }
}
