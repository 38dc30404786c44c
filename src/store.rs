//! The embedded store: one SQLite file in the data dir (WAL, `synchronous=FULL`), so records a
//! pipeline was told are written survive a crash or a `kill -9`. Calls run on the blocking
//! pool; one connection serialises writers, which SQLite does anyway.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use sluice_sdk::{KvStore, StoreError};

use crate::sse::unix_now;

/// File name inside the data dir.
pub const STORE_FILE: &str = "sluice.db";

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                expires_at INTEGER NOT NULL,
                PRIMARY KEY (namespace, key)
            );
            CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at);",
        )
        .map_err(err)?;
        let store = SqliteStore { conn: Arc::new(Mutex::new(conn)) };
        store.purge_expired()?;
        Ok(store)
    }

    /// Removes expired records; run at start-up (records are also checked on every read).
    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        let conn = self.conn.lock().map_err(err)?;
        conn.execute("DELETE FROM kv WHERE expires_at <= ?1", params![unix_now() as i64]).map_err(err)
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(err)?;
            f(&conn).map_err(err)
        })
        .await
        .map_err(err)?
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError> {
        let (ns, key, text) = (namespace.to_string(), key.to_string(), value.to_string());
        let expires = unix_now().saturating_add(ttl.as_secs()) as i64;
        self.with(move |c| {
            c.execute(
                "INSERT INTO kv (namespace, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![ns, key, text, expires],
            )
            .map(|_| ())
        })
        .await
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let (ns, key) = (namespace.to_string(), key.to_string());
        let now = unix_now() as i64;
        let text: Option<String> = self
            .with(move |c| {
                c.query_row(
                    "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2 AND expires_at > ?3",
                    params![ns, key, now],
                    |row| row.get(0),
                )
                .optional()
            })
            .await?;
        text.map(|t| serde_json::from_str(&t).map_err(err)).transpose()
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let (ns, key) = (namespace.to_string(), key.to_string());
        self.with(move |c| c.execute("DELETE FROM kv WHERE namespace = ?1 AND key = ?2", params![ns, key]).map(|_| ()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_survive_reopening_and_expire() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(err)?;
        let path = dir.path().join(STORE_FILE);
        let store = SqliteStore::open(&path)?;
        store.put("ns", "a", &serde_json::json!({"x": 1}), Duration::from_secs(60)).await?;
        store.put("ns", "gone", &serde_json::json!(1), Duration::ZERO).await?;
        drop(store);
        let store = SqliteStore::open(&path)?;
        assert_eq!(store.get("ns", "a").await?, Some(serde_json::json!({"x": 1})));
        assert_eq!(store.get("other", "a").await?, None);
        assert_eq!(store.get("ns", "gone").await?, None);
        store.delete("ns", "a").await?;
        assert_eq!(store.get("ns", "a").await?, None);
        Ok(())
    }
}
