//! The embedded store opened only to read (`sluice check`): SQLite's read-only mode, so nothing
//! is created, migrated, purged or re-moded, a store its user cannot write is still read, and a
//! check run by another user leaves nothing the server cannot open.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use sluice_sdk::clock::unix_secs;
use sluice_sdk::{KvStore, StoreError};

pub struct SqliteReader {
    conn: Mutex<Connection>,
}

impl SqliteReader {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(StoreError::from_cause)?;
        // A writer holds the file only for a group commit; a lock held longer is said.
        conn.busy_timeout(Duration::from_secs(2)).map_err(StoreError::from_cause)?;
        Ok(SqliteReader { conn: Mutex::new(conn) })
    }
}

fn read_only() -> StoreError {
    StoreError::new("the store was opened to read only")
}

#[async_trait]
impl KvStore for SqliteReader {
    async fn put(&self, _: &str, _: &str, _: &Value, _: Duration) -> Result<(), StoreError> {
        Err(read_only())
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::new("the store's reader failed earlier"))?;
        // A store the server never wrote to has no table yet: nothing is kept there.
        let text = match super::sqlite::read_value(&conn, namespace, key, unix_secs() as i64) {
            Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.starts_with("no such table") => None,
            other => other.map_err(StoreError::from_cause)?,
        };
        text.map(|t| serde_json::from_str(&t).map_err(StoreError::from_cause)).transpose()
    }

    async fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Err(read_only())
    }

    async fn trim(&self, _: &str, _: usize, _: u64) -> Result<usize, StoreError> {
        Err(read_only())
    }
}
