//! The `host` interface a guest imports: logging into sluice's tracing under the pipeline's
//! id, and the pipeline's own records in sluice's store (namespace `wasm:<id>`).

use std::time::Duration;

use serde_json::Value;

use crate::bindings::host::{Host, Level};
use crate::state::GuestState;

/// A value or a key longer than this is refused, so one guest cannot fill the store in one call.
const MAX_VALUE: usize = 1 << 20;
const MAX_KEY: usize = 512;
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where a pipeline's records live in sluice's store (emptied when it is removed).
pub fn records_namespace(pipeline: &str) -> String {
    format!("wasm:{pipeline}")
}

impl GuestState {
    fn namespace(&self) -> String {
        records_namespace(&self.pipeline)
    }

    fn store(&self, key: &str) -> Result<std::sync::Arc<dyn sluice_sdk::KvStore>, String> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(format!("a key must have 1 to {MAX_KEY} bytes"));
        }
        self.kv.clone().ok_or_else(|| "the store is not available while the pipeline is described".to_string())
    }
}

impl Host for GuestState {
    async fn log(&mut self, level: Level, message: String) {
        let pipeline = &*self.pipeline;
        // One line, at most 4 KiB, without this pipeline's secrets: a guest can neither forge
        // the server's own lines nor put its keys in the log.
        let line: String = message.chars().take(4096).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        let message = sluice_sdk::secret::redact(&line, &secrets);
        match level {
            Level::Trace => tracing::trace!(pipeline, "{message}"),
            Level::Debug => tracing::debug!(pipeline, "{message}"),
            Level::Info => tracing::info!(pipeline, "{message}"),
            Level::Warn => tracing::warn!(pipeline, "{message}"),
            Level::Error => tracing::error!(pipeline, "{message}"),
        }
    }

    async fn kv_get(&mut self, key: String) -> Result<Option<String>, String> {
        let store = self.store(&key)?;
        match store.get(&self.namespace(), &key).await {
            Ok(Some(Value::String(s))) => Ok(Some(s)),
            Ok(Some(other)) => Ok(Some(other.to_string())),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn kv_set(&mut self, key: String, value: String, ttl_seconds: u32) -> Result<(), String> {
        let store = self.store(&key)?;
        if value.len() > MAX_VALUE {
            return Err(format!("a value may have at most {MAX_VALUE} bytes"));
        }
        let ttl = if ttl_seconds == 0 { DEFAULT_TTL } else { Duration::from_secs(u64::from(ttl_seconds)) };
        store.put(&self.namespace(), &key, &Value::String(value), ttl).await.map_err(|e| e.to_string())
    }

    async fn kv_delete(&mut self, key: String) -> Result<(), String> {
        let store = self.store(&key)?;
        store.delete(&self.namespace(), &key).await.map_err(|e| e.to_string())
    }
}

impl crate::bindings::types::Host for GuestState {}
