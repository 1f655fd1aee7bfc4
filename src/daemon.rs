//! The daemon: owns every long-lived thread and stops them in a fixed order.
//!
//! Start: open the store (loading the catalog), start the writer (replaying the WAL), bind the
//! listener, start the HTTP server on its own thread with its own actix system. Stop: HTTP
//! stops gracefully (in-flight requests finish), then the writer drains and commits, then the
//! store closes when the last reference goes.

use crate::api::{self, AppState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::writer::WriterHandle;
use actix_web::{App, HttpServer, dev::ServerHandle};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running perfd. Dropping it shuts it down.
pub struct Daemon {
    /// The bound address (the real port when the config asked for port 0).
    pub addr: SocketAddr,
    pub store: Arc<Store>,
    pub writer: Arc<WriterHandle>,
    http: Option<(ServerHandle, JoinHandle<()>)>,
}

impl Daemon {
    pub fn start(config: Config) -> Result<Daemon> {
        let store = Arc::new(Store::open(&config.data_dir)?);
        let writer = Arc::new(WriterHandle::start(
            store.clone(),
            config.writer.clone(),
            config.storage.clone(),
        )?);
        let listener = std::net::TcpListener::bind(config.listen).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", config.listen),
            ))
        })?;
        let addr = listener.local_addr()?;
        let workers = config.http.workers;
        let state = AppState {
            config: Arc::new(config),
            store: store.clone(),
            writer: writer.clone(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let join = std::thread::Builder::new()
            .name("perfd-http".into())
            .spawn(move || {
                let system = actix_web::rt::System::new();
                let result = system.block_on(async move {
                    let routes = api::configure(state);
                    let server = HttpServer::new(move || App::new().configure(routes.clone()))
                        .workers(workers)
                        .disable_signals()
                        .shutdown_timeout(10)
                        .client_request_timeout(Duration::from_secs(30))
                        .listen(listener);
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
        Ok(Daemon {
            addr,
            store,
            writer,
            http: Some((handle, join)),
        })
    }

    /// Stops accepting, lets in-flight requests finish, commits everything queued, closes the store.
    pub fn shutdown(&mut self) {
        if let Some((handle, join)) = self.http.take() {
            // `stop` sends the command at once; the returned future only reports completion,
            // which joining the thread also does.
            drop(handle.stop(true));
            if join.join().is_err() {
                log::error!("http thread panicked");
            }
        }
        self.writer.shutdown();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown();
    }
}
