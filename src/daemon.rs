//! The daemon: owns every long-lived thread and stops them in a fixed order.
//!
//! Start: open the store (loading the catalog), start the writer (replaying the WAL), the cache
//! (loading the warm-restart snapshot) and its sweeper, bind the listener, start the alert
//! notifier (when configured) and the sampler, start the HTTP server on its own thread with its
//! own actix system. Stop: HTTP stops gracefully (in-flight requests finish), the cache snapshot
//! is saved, the sampler, the notifier and the sweeper stop, then the writer drains and commits,
//! then the store closes when the last reference goes.

use crate::api::{self, AppState};
use crate::cache::TieredCache;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::monitor::Monitor;
use crate::reload::Reloader;
use crate::sampler::delivery::NotifierHandle;
use crate::sampler::{Sampler, SamplerHandle, Sources};
use crate::store::Store;
use crate::writer::WriterHandle;
use actix_http::error::DispatchError;
use actix_server::GracefulShutdownSignal;
use actix_service::{IntoServiceFactory, ServiceFactory, ServiceFactoryExt};
use actix_web::App;
use actix_web::dev::{AppConfig, ServerHandle};
use actix_web::rt::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running perfd. Dropping it shuts it down.
pub struct Daemon {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    pub cache: Arc<TieredCache>,
    pub sampler: SamplerHandle,
    /// Reads the configuration again (SIGHUP, `POST /api/v1/admin/reload`).
    pub reloader: Arc<Reloader>,
    /// Sends alerts to `alerts.notify_url`, when set.
    notifier: Option<NotifierHandle>,
    http: Option<(ServerHandle, JoinHandle<()>)>,
    /// The HTTP state's query statistics, held by every clone of the state and nothing else:
    /// gone once the last worker has dropped its state (and with it the store).
    http_state: std::sync::Weak<crate::queries::QueryStats>,
    /// Shared with the handlers (`AppState::stopping`); set first thing in `shutdown`.
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Dropping the sender stops the sweeper; then it is joined.
    sweeper: Option<(crossbeam_channel::Sender<()>, JoinHandle<()>)>,
}

impl Daemon {
    /// Starts with `config`; a reload has no file to read again (`Reloader::reload` is a 409).
    pub fn start(config: Config) -> Result<Daemon> {
        Daemon::start_with_source(config, None)
    }

    /// Starts with `config`, loaded from `source`, which a reload reads again.
    pub fn start_with_source(config: Config, source: Option<crate::config::Source>) -> Result<Daemon> {
        let store = Arc::new(Store::open(&config.data_dir)?);
        let writer =
            Arc::new(WriterHandle::start(store.clone(), config.writer.clone(), config.storage.clone())?);
        let cache = Arc::new(TieredCache::new(config.cache.clone())?);
        if config.cache.warm_restart {
            let loaded = cache.load(store.cache_snapshot()?);
            // Cleared once loaded: after a crash, an old snapshot must not come back.
            writer.save_cache(Vec::new())?;
            if loaded > 0 {
                log::info!("warm restart: {loaded} cache entries loaded");
            }
        }
        let sweeper = start_sweeper(cache.clone(), config.cache.sweep_interval)?;
        let monitor = Arc::new(Monitor::default());
        let ids = store.clone();
        let executions = Arc::new(crate::executions::Executions::new(
            config.executions.clone(),
            Box::new(move || ids.new_record_id()),
        ));
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            Error::Io(std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen)))
        })?;
        let addr = listener.local_addr()?;
        let notifier = match &config.alerts.notify_url {
            Some(url) => Some(NotifierHandle::start(&config.alerts, url, format!("http://{addr}"))?),
            None => None,
        };
        let reloader =
            Arc::new(Reloader::new(config.clone(), source, addr, cache.clone(), writer.clone(), &executions));
        let sources = Sources {
            monitor: monitor.clone(),
            cache: cache.clone(),
            writer: writer.clone(),
            store: store.clone(),
            executions: executions.clone(),
            config: reloader.config.clone(),
            notifier: notifier.as_ref().map(|n| (n.sender(), n.stats.clone())),
        };
        if let Some((seed, done)) = crate::store::records::seed_defaults(&store)? {
            writer.apply(seed)?;
            log::info!("{done}");
        }
        let sampler = SamplerHandle::start(Sampler::new(sources)?)?;
        let workers = config.http.workers;
        let max_connections = config.http.max_connections;
        let state = AppState {
            hosts: reloader.hosts.clone(),
            config: reloader.config.clone(),
            reloader: reloader.clone(),
            store: store.clone(),
            writer: writer.clone(),
            cache: cache.clone(),
            monitor,
            published: sampler.published.clone(),
            executions,
            queries: Arc::default(),
            stopping: Arc::default(),
        };
        let stopping = state.stopping.clone();
        // The query statistics are the one part of the state nothing outside it holds.
        let http_state = Arc::downgrade(&state.queries);
        let (handle, join) = start_http(listener, state, workers, max_connections)?;
        let http = Some((handle, join));
        Ok(Daemon {
            addr,
            store,
            writer,
            cache,
            sampler,
            reloader,
            notifier,
            http,
            http_state,
            stopping,
            sweeper: Some(sweeper),
        })
    }

    /// Stops accepting, lets in-flight requests finish, commits everything queued, closes the store.
    pub fn shutdown(&mut self) {
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some((handle, join)) = self.http.take() {
            // `stop` sends the command at once; the returned future only reports completion,
            // which joining the thread also does.
            drop(handle.stop(true));
            if join.join().is_err() {
                log::error!("http thread panicked");
            }
            self.wait_for_workers();
            if self.cache.config().warm_restart {
                self.save_cache();
            }
        }
        self.sampler.shutdown();
        if let Some(n) = &mut self.notifier {
            n.shutdown();
        }
        if let Some((stop, join)) = self.sweeper.take() {
            drop(stop);
            let _ = join.join();
        }
        self.writer.shutdown();
    }
}

impl Daemon {
    /// The server is stopped once its workers have said so, but a worker thread may still be
    /// dropping its state then, the store among it: a daemon started at once on the same data
    /// dir found the database still open. Bounded by the graceful stop's own 10 s.
    fn wait_for_workers(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.http_state.strong_count() > 0 {
            if std::time::Instant::now() >= deadline {
                log::warn!("an HTTP worker still holds its state after 10 s");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn save_cache(&self) {
        let mut saved = Vec::new();
        for (k, e) in self.cache.entries() {
            match crate::store::encode_cache_entry(&e) {
                Ok(v) => saved.push((k, v)),
                Err(e) => log::error!("cache snapshot: {e}"),
            }
        }
        let n = saved.len();
        match self.writer.save_cache(saved) {
            Ok(()) => log::info!("warm restart: {n} cache entries saved"),
            Err(e) => log::error!("saving the cache snapshot failed: {e}"),
        }
    }
}

/// Runs the HTTP server on its own thread (`perfd-http`, an actix system with `workers` worker
/// threads) and returns once it is listening, with the handle that stops it.
fn start_http(
    listener: std::net::TcpListener,
    state: AppState,
    workers: usize,
    max_connections: usize,
) -> Result<(ServerHandle, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let join = std::thread::Builder::new().name("perfd-http".into()).spawn(move || {
        let system = actix_web::rt::System::new();
        let result = system.block_on(async move {
            let builder = actix_server::Server::build()
                .workers(workers)
                .max_concurrent_connections(max_connections)
                .disable_signals()
                .shutdown_timeout(10);
            let shutdown = builder.graceful_shutdown_signal();
            let routes = api::configure(state.clone());
            let server = builder.listen("perfd-http", listener, move || {
                connection_service(state.clone(), routes.clone(), shutdown.clone())
            });
            let server = match server {
                Ok(s) => s.run(),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return Ok(());
                }
            };
            let _ = tx.send(Ok(server.handle()));
            server.await
        });
        if let Err(e) = result {
            log::error!("http server failed: {e}");
        }
    })?;
    let handle = rx
        .recv()
        .map_err(|_| Error::Internal("http thread ended before starting".into()))?
        .map_err(Error::Io)?;
    Ok((handle, join))
}

/// One actix worker's connection service: each connection starts on the hit path
/// (`api::HitPath`), which hands it to actix-http (the App behind `api::FastCache`) at its first
/// request that is not a hit. actix-http is configured as `HttpServer` would configure it.
fn connection_service(
    state: AppState,
    routes: impl FnOnce(&mut actix_web::web::ServiceConfig) + 'static,
    shutdown: GracefulShutdownSignal,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()> {
    let app =
        App::new().wrap(actix_web::middleware::from_fn(api::guard_and_time)).configure(routes).into_factory();
    let fast = api::FastCache { app, state: state.clone() }.map_err(|e| e.error_response());
    let signal = shutdown.clone();
    let http = state.config.load().http.clone();
    let (keep_alive, request_timeout) = (http.keep_alive, http.request_timeout);
    let h1 = actix_http::HttpService::build()
        .keep_alive(keep_alive)
        // The hit path and `api::Handed` time every head (and answer 408 in JSON).
        .client_request_timeout(Duration::ZERO)
        .client_disconnect_timeout(Duration::from_secs(1))
        .h1_allow_half_closed(true)
        .graceful_shutdown_signal(move || {
            let signal = signal.clone();
            async move { signal.notified().await }
        })
        .on_connect_ext(api::on_connect)
        // Nothing reads the App's host or address (`connection_info`, `url_for`).
        .h1(actix_service::map_config(fast, |()| AppConfig::default()));
    let hits = Rc::new(api::HitPath::new(state, keep_alive, request_timeout, shutdown));
    actix_service::fn_factory(move || {
        let (h1, hits) = (h1.new_service(()), hits.clone());
        async move {
            let h1 = Rc::new(h1.await.map_err(|e| log::error!("http worker did not start: {e:?}"))?);
            Ok(actix_service::fn_service(move |io: TcpStream| hits.clone().serve(io, h1.clone())))
        }
    })
}

/// `perfd-sweeper`: drops expired L1 entries every `interval`; stops when its sender drops.
fn start_sweeper(
    cache: Arc<TieredCache>,
    interval: Duration,
) -> Result<(crossbeam_channel::Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let ticker = crossbeam_channel::tick(interval);
    let join = std::thread::Builder::new().name("perfd-sweeper".into()).spawn(move || {
        loop {
            crossbeam_channel::select! {
                recv(stopped) -> _ => return,
                recv(ticker) -> _ => {
                    cache.sweep();
                }
            }
        }
    })?;
    Ok((stop, join))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}
