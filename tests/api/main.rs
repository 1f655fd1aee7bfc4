//! One integration-test binary: real daemon, real redb file, real HTTP on port 0.

mod crash;
mod helpers;
mod ingest;
mod query;
