//! perfd: one daemon that caches, stores metric time series, watches the host and scores health.
//!
//! Data flow (see `DESIGN.md`):
//!
//! ```text
//! HTTP (api) ──▶ ingest (parse + validate) ──▶ writer thread (group commit: WAL, seal, retention)
//!     │                                               │
//!     ├──▶ query (selectors, aggregation) ◀── store (redb file + open hours + catalog)
//!     ├──▶ cache (L1 quick_cache, L2 Redis)
//!     └──▶ monitor (request timings) ──▶ sampler thread (sysinfo, stats → series; health score)
//! ```
//!
//! `daemon` owns the threads and the stop order; `config` turns flags, environment and TOML into
//! one validated [`config::Config`]; `error` holds the error kinds every module returns.

pub mod api;
pub mod cache;
pub mod config;
pub mod daemon;
pub mod error;
pub mod executions;
pub mod ingest;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod queries;
pub mod query;
pub mod reload;
pub mod sampler;
pub mod store;
pub mod writer;

pub use daemon::Daemon;
pub use error::{Error, Result};
