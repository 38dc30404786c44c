//! Which store sluice keeps its state in: the embedded SQLite file (default, nothing to
//! install) or PostgreSQL when `store_url` is set (several replicas sharing captures, replay
//! records and the reporting outbox). Pipelines see only [`KvStore`] and [`Outbox`]; the
//! server's own needs (metrics, sweeping, `sluice outbox`) are [`StoreBackend`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sluice_sdk::outbox::{Outbox, QueueStats};
use sluice_sdk::{KvStore, StoreError};

use crate::config::Settings;
use crate::pg_store::PgStore;
use crate::spill::{SpillLimits, SpillingStore};
use crate::store::{SqliteStore, STORE_FILE};
use tokio_util::sync::CancellationToken;

#[async_trait]
pub trait StoreBackend: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for the start-up log.
    fn kind(&self) -> &'static str;
    /// Every queue with live or dead entries.
    async fn queues(&self) -> Result<Vec<QueueStats>, StoreError>;
    /// Deletes expired key/value records; how many.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
    /// Puts a queue's dead letters back in line; how many.
    async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError>;

    /// Shared valves (several replicas): the text `pipeline_id`'s file must hold and its
    /// version, seeding it with `local` if nobody has. `None`: valves are not shared.
    async fn seed_valves(&self, _pipeline_id: &str, _local: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(None)
    }
    /// Shares an update accepted here; its version (`None`: not shared).
    async fn publish_valves(&self, _pipeline_id: &str, _toml: &str) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// Every pipeline's shared valves version.
    async fn valves_versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(Vec::new())
    }
    /// One pipeline's shared valves text and version.
    async fn valves_text(&self, _pipeline_id: &str) -> Result<Option<(String, i64)>, StoreError> {
        Ok(None)
    }
    fn shares_valves(&self) -> bool {
        false
    }
    /// Reachability and what is held in memory meanwhile; `None` for the embedded store.
    fn health(&self) -> Option<StoreHealth> {
        None
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

/// One store seen three ways.
#[derive(Clone)]
pub struct Stores {
    pub kv: Arc<dyn KvStore>,
    pub outbox: Arc<dyn Outbox>,
    pub backend: Arc<dyn StoreBackend>,
}

impl Stores {
    fn of<T: KvStore + Outbox + StoreBackend>(store: Arc<T>) -> Stores {
        Stores { kv: Arc::clone(&store) as _, outbox: Arc::clone(&store) as _, backend: store as _ }
    }

    /// PostgreSQL when `store_url` is set, else `data_dir/store.sqlite3`.
    /// `stop` ends background work (the PostgreSQL store's retry of held reports).
    pub async fn open(settings: &Settings, data_dir: &Path, stop: CancellationToken) -> Result<Stores, String> {
        match &settings.store_url {
            Some(url) => {
                let lease = Duration::from_secs(settings.store_lease_secs);
                let pg = PgStore::connect_with_lease(url.expose(), lease).await.map_err(|e| e.to_string())?;
                let store = Arc::new(SpillingStore::new(pg, SpillLimits::default()));
                tokio::spawn(Arc::clone(&store).run_flusher(stop));
                Ok(Stores::of(store))
            }
            None => {
                let path = data_dir.join(STORE_FILE);
                let store = SqliteStore::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(Stores::of(Arc::new(store)))
            }
        }
    }
}

fn blocking_err(e: tokio::task::JoinError) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait]
impl StoreBackend for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.queues()).await.map_err(blocking_err)?
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.purge_expired().map(|n| n as u64)).await.map_err(blocking_err)?
    }

    async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError> {
        let (this, queue) = (self.clone(), queue.to_string());
        tokio::task::spawn_blocking(move || this.requeue_dead(&queue).map(|n| n as u64)).await.map_err(blocking_err)?
    }
}
