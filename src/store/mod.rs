//! Where sluice keeps what must outlive a request: the embedded SQLite file (default, nothing to
//! install) or PostgreSQL when `store_url` is set (several replicas sharing captures, replay
//! records, the reporting outbox and the valves). Pipelines see only [`KvStore`] and
//! [`Outbox`]; the server's own needs are [`StoreAdmin`] and, on a shared store,
//! [`SharedValves`].
//!
//! - `sqlite.rs` and `sqlite_writer.rs`: the embedded store and its group-committing writer;
//! - `postgres.rs`: the shared store, with claims and leases for several delivery workers;
//! - `spill.rs`: PostgreSQL behind a guard that holds reports in memory while it is away.

mod admin;
mod pg_connect;
mod pg_error;
mod pg_schema;
mod postgres;
mod shared_valves;
mod spill;
mod sqlite;
mod sqlite_read;
mod sqlite_writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_sdk::{KvStore, Outbox, StoreError};
use tokio_util::sync::CancellationToken;

pub use admin::{StoreAdmin, StoreHealth};
pub use postgres::{PgStore, PgStoreError, DEFAULT_LEASE};
pub use shared_valves::SharedValves;
pub use spill::{SpillLimits, SpillingStore};
pub use sqlite::{SqliteStore, STORE_FILE};

use crate::config::Settings;

/// One store seen the ways the server needs it.
#[derive(Clone)]
pub struct Stores {
    pub kv: Arc<dyn KvStore>,
    pub outbox: Arc<dyn Outbox>,
    pub admin: Arc<dyn StoreAdmin>,
    /// Only a store several replicas share.
    pub shared_valves: Option<Arc<dyn SharedValves>>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Postgres(#[from] PgStoreError),
    #[error("{path}: {source}")]
    Sqlite { path: String, source: StoreError },
}

impl Stores {
    /// PostgreSQL when `store_url` is set, else `data_dir/sluice.db`. `stop` ends background
    /// work (the PostgreSQL store's retry of held reports).
    pub async fn open(settings: &Settings, data_dir: &Path, stop: CancellationToken) -> Result<Stores, OpenError> {
        match &settings.store_url {
            Some(url) => {
                let lease = Duration::from_secs(settings.store_lease_secs);
                let pg = PgStore::connect_with_lease(url.expose(), lease).await?;
                let store = Arc::new(SpillingStore::new(pg, SpillLimits::default()));
                tokio::spawn(Arc::clone(&store).run_flusher(stop));
                Ok(Stores {
                    kv: Arc::clone(&store) as _,
                    outbox: Arc::clone(&store) as _,
                    admin: Arc::clone(&store) as _,
                    shared_valves: Some(store as _),
                })
            }
            None => {
                let path = data_dir.join(STORE_FILE);
                let store = SqliteStore::open(&path)
                    .map_err(|source| OpenError::Sqlite { path: path.display().to_string(), source })?;
                let store = Arc::new(store);
                Ok(Stores {
                    kv: Arc::clone(&store) as _,
                    outbox: Arc::clone(&store) as _,
                    admin: store as _,
                    shared_valves: None,
                })
            }
        }
    }
}

/// The key-value store `settings` name, to read what is kept there (`sluice check`): the
/// PostgreSQL schema is not migrated, the SQLite file is opened read-only, no background work
/// starts.
pub fn open_to_read(settings: &Settings, data_dir: &Path) -> Result<Arc<dyn KvStore>, OpenError> {
    match &settings.store_url {
        Some(url) => Ok(Arc::new(PgStore::connect_to_read(url.expose())?)),
        None => {
            let path = data_dir.join(STORE_FILE);
            let store = sqlite_read::SqliteReader::open(&path)
                .map_err(|source| OpenError::Sqlite { path: path.display().to_string(), source })?;
            Ok(Arc::new(store))
        }
    }
}

/// An outbox entry's last failure as `sluice outbox` shows it: `503: Service Unavailable`,
/// `connection refused`, or nothing.
fn last_error(status: Option<i64>, error: Option<String>) -> Option<String> {
    match (status, error) {
        (Some(s), Some(e)) => Some(format!("{s}: {e}")),
        (Some(s), None) => Some(s.to_string()),
        (None, e) => e,
    }
}
