//! Reload: a running perfd reads its configuration again (SIGHUP, `systemctl reload perfd`,
//! `POST /api/v1/admin/reload`) and applies the settings that need no restart
//! (`config::live` says which). A file that does not load changes nothing.

use crate::api::HostPolicy;
use crate::cache::TieredCache;
use crate::config::{Config, Reload, Source};
use crate::error::{Error, Result};
use crate::executions::Executions;
use crate::writer::WriterHandle;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Owns the configuration in effect and everyone who must hear of a new one.
pub struct Reloader {
    /// What the daemon was started from; `None` when it was given a `Config` (tests, embedders).
    source: Option<Source>,
    pub config: Arc<ArcSwap<Config>>,
    pub hosts: Arc<ArcSwap<HostPolicy>>,
    /// The bound address: `http.allowed_hosts` is read against it (`HostPolicy::for_listen`).
    addr: SocketAddr,
    cache: Arc<TieredCache>,
    writer: Arc<WriterHandle>,
    /// Weak: the executions hold the store (for record ids), which must be free once the daemon
    /// has shut down, while the daemon still holds this.
    executions: std::sync::Weak<Executions>,
    /// The keys the last reload that loaded left waiting for a restart. Held through a reload:
    /// one at a time (two at once could store the older result last).
    waiting_for_restart: Mutex<Vec<String>>,
    pub stats: ReloadStats,
}

/// For `/metrics` (the names Prometheus uses for its own reloads).
#[derive(Debug, Default)]
pub struct ReloadStats {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Whether the last reload failed to load (false before any).
    pub last_failed: AtomicBool,
    /// Unix ms of the last time the configuration loaded: the start, or a reload.
    pub last_success_ms: AtomicU64,
}

impl Reloader {
    pub fn new(
        config: Config,
        source: Option<Source>,
        addr: SocketAddr,
        cache: Arc<TieredCache>,
        writer: Arc<WriterHandle>,
        executions: &Arc<Executions>,
    ) -> Reloader {
        let hosts = HostPolicy::for_listen(&config.http.allowed_hosts, addr);
        Reloader {
            source,
            config: Arc::new(ArcSwap::from_pointee(config)),
            hosts: Arc::new(ArcSwap::from_pointee(hosts)),
            addr,
            cache,
            writer,
            executions: Arc::downgrade(executions),
            waiting_for_restart: Mutex::new(Vec::new()),
            stats: ReloadStats {
                last_success_ms: AtomicU64::new(crate::model::now_ms().max(0) as u64),
                ..ReloadStats::default()
            },
        }
    }

    /// Reads the file, environment and flags of the start again and applies what a running
    /// perfd can. A `Config` error (the file no longer loads) leaves everything as it was.
    pub fn reload(&self) -> Result<Reload> {
        let Some(source) = &self.source else {
            return Err(Error::Conflict(
                "this perfd was given its configuration by the program that embeds it; there is no file to read again"
                    .into(),
            ));
        };
        let mut waiting = self.waiting_for_restart.lock();
        let result = source.load().and_then(|fresh| self.apply(&fresh));
        if let Ok(r) = &result {
            waiting.clone_from(&r.needs_restart);
        }
        match &result {
            Ok(r) => {
                self.stats.succeeded.fetch_add(1, Relaxed);
                self.stats.last_failed.store(false, Relaxed);
                self.stats.last_success_ms.store(crate::model::now_ms().max(0) as u64, Relaxed);
                log::info!("configuration reloaded: applied {:?}", r.applied);
                if !r.needs_restart.is_empty() {
                    log::warn!("changed but kept until a restart: {:?}", r.needs_restart);
                }
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                self.stats.last_failed.store(true, Relaxed);
                log::error!("configuration not reloaded, nothing changed: {e}");
            }
        }
        result
    }

    /// The keys the last reload that loaded found changed but could not apply.
    pub fn needs_restart(&self) -> Vec<String> {
        self.waiting_for_restart.lock().clone()
    }

    /// Puts the live settings of `fresh` in effect.
    fn apply(&self, fresh: &Config) -> Result<Reload> {
        let (next, reload) = self.config.load().reloaded(fresh)?;
        self.cache.set_ttls(&next.cache.strategies);
        self.writer.set_storage(next.storage.clone());
        if let Some(executions) = self.executions.upgrade() {
            executions.set_config(next.executions.clone());
        }
        self.hosts.store(Arc::new(HostPolicy::for_listen(&next.http.allowed_hosts, self.addr)));
        self.config.store(Arc::new(next));
        Ok(reload)
    }
}
