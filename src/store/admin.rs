//! What the server itself asks of its store, beside what pipelines see ([`sluice_sdk::KvStore`],
//! [`sluice_sdk::Outbox`]): queue figures for `/metrics` and `sluice outbox`, sweeping expired
//! records, putting dead letters back in line, and whether a shared store is reachable.

use async_trait::async_trait;
use sluice_sdk::outbox::QueueStats;
use sluice_sdk::StoreError;

#[async_trait]
pub trait StoreAdmin: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for the start-up log.
    fn kind(&self) -> &'static str;
    /// Every queue with live or dead entries.
    async fn queues(&self) -> Result<Vec<QueueStats>, StoreError>;
    /// Deletes expired key/value records; how many.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
    /// Puts a queue's dead letters back in line; how many.
    async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError>;
    /// Reachability and what is held in memory meanwhile; `None` for the embedded store.
    fn health(&self) -> Option<StoreHealth> {
        None
    }
    /// At the end: writes what is held in memory, waiting for the store up to `within`, and
    /// says how many were lost if it does not come back. Nothing for the embedded store.
    async fn write_held(&self, within: std::time::Duration) {
        let _ = within;
    }
}

/// A shared store's state for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreHealth {
    pub up: bool,
    pub held_entries: u64,
    pub held_oldest_secs: f64,
    pub dropped: u64,
}
