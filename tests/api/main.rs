//! One integration-test binary: real daemon, real redb file, real HTTP on port 0.

mod alerts;
mod alerts_model;
mod any_request;
mod backup;
mod cache;
mod cache_model;
mod crash;
mod delivery;
mod disk_full;
mod executions;
mod executions_model;
mod flood;
mod heads;
mod helpers;
mod hitpath;
mod hitpath_differential;
mod hosts;
mod ingest;
mod labels_model;
mod observe;
mod ops;
mod query;
#[cfg(feature = "redis")]
mod redis;
mod reload;
mod store_model;
