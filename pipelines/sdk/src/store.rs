//! Durable key/value records with an expiry, for state that must outlive a request (the
//! manifold's replay items, the reporting filter's captures). The server provides the
//! implementation (embedded SQLite by default); pipelines see only this trait.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

/// A failure of the store itself (disk full, database locked for too long, unreachable), with
/// its cause when there is one. Never holds data.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    message: String,
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    pub fn new(message: impl Into<String>) -> Self {
        StoreError { message: message.into(), source: None }
    }

    /// An error of the database driver, said as it says it.
    pub fn from_cause(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError { message: cause.to_string(), source: Some(std::sync::Arc::new(cause)) }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Writes `value` under `(namespace, key)`, replacing an older one; it expires after `ttl`.
    /// Returns once the record is durable.
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError>;

    /// The record, if it exists and has not expired.
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError>;

    /// Writes `value` only if the record is still `expected` (`None`: absent); whether it
    /// wrote. For a record several replicas read, change and write back. This default reads
    /// and then writes, which is enough where one process writes; a store several processes
    /// share does both in one statement.
    async fn put_if(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&Value>,
        value: &Value,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        if self.get(namespace, key).await?.as_ref() != expected {
            return Ok(false);
        }
        self.put(namespace, key, value, ttl).await.map(|()| true)
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError>;

    /// Keeps at most `keep` records and `max_bytes` of values in `namespace`, removing those
    /// that would expire first; returns how many were removed. For bounded state such as
    /// pending captures.
    async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError>;
}
