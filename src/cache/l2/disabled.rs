//! L2 when perfd is built without the `redis` feature: every call is a no-op miss.

use super::{L2Stats, NoAnswer};
use crate::cache::Entry;
use crate::config::CacheConfig;
use crate::error::Result;

pub struct L2;

impl L2 {
    pub fn new(cfg: &CacheConfig) -> Result<L2> {
        if cfg.redis.url.is_some() {
            log::warn!(
                "cache.redis.url is set, but this perfd was built without the `redis` feature: L2 is off \
                 (build with `cargo build --release --features redis`)"
            );
        }
        Ok(L2)
    }

    pub fn enabled(&self) -> bool {
        false
    }

    pub async fn get(&self, _key: &str) -> Result<Option<Entry>, NoAnswer> {
        Ok(None)
    }

    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, NoAnswer> {
        Ok(vec![None; keys.len()])
    }

    pub async fn set(&self, _key: &str, _entry: &Entry) -> Result<(), NoAnswer> {
        Ok(())
    }

    pub async fn delete(&self, _key: &str) -> Result<(), NoAnswer> {
        Ok(())
    }

    pub async fn invalidate(&self, _pattern: &crate::cache::glob::Glob) -> u64 {
        0
    }

    pub async fn clear(&self) -> Result<u64> {
        Ok(0)
    }

    pub fn stats(&self) -> L2Stats {
        L2Stats::default()
    }
}
