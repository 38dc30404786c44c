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
/// What one pipeline's records may hold; past it the records that expire first go. Without a
/// bound, one 30 s call wrote 558 MB of 1 MiB records (found by a red team).
pub const MAX_RECORDS: usize = 10_000;
pub const MAX_RECORD_BYTES: u64 = 64 << 20;

/// Where a pipeline's records live in sluice's store (emptied when it is removed): its id and
/// its generation, which a removal and a new addition change, so a call of the removed one
/// still under way on another replica writes where the new one never reads. Generation 0 is
/// what was added before generations, whose records stay where they were.
pub fn records_namespace(pipeline: &str, generation: u64) -> String {
    match generation {
        0 => format!("wasm:{pipeline}"),
        g => format!("wasm:{pipeline}#{g}"),
    }
}

impl GuestState {
    fn namespace(&self) -> &str {
        &self.records
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
        match store.get(self.namespace(), &key).await {
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
        let namespace = self.namespace();
        store.put(namespace, &key, &Value::String(value), ttl).await.map_err(|e| e.to_string())?;
        store.trim(namespace, MAX_RECORDS, MAX_RECORD_BYTES).await.map(|_| ()).map_err(|e| e.to_string())
    }

    async fn kv_delete(&mut self, key: String) -> Result<(), String> {
        let store = self.store(&key)?;
        store.delete(self.namespace(), &key).await.map_err(|e| e.to_string())
    }
}

impl crate::bindings::types::Host for GuestState {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use sluice_sdk::{KvStore, StoreError};

    use super::*;
    use crate::state::Grants;

    /// Records what was asked of it.
    #[derive(Default)]
    struct Asked(Mutex<Vec<String>>);

    #[async_trait]
    impl KvStore for Asked {
        async fn put(&self, namespace: &str, key: &str, _: &Value, _: Duration) -> Result<(), StoreError> {
            self.0.lock().unwrap().push(format!("put {namespace} {key}"));
            Ok(())
        }
        async fn get(&self, _: &str, _: &str) -> Result<Option<Value>, StoreError> {
            Ok(None)
        }
        async fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError> {
            self.0.lock().unwrap().push(format!("trim {namespace} {keep} {max_bytes}"));
            Ok(0)
        }
    }

    /// Every write is followed by the bound on the pipeline's records (one call wrote 558 MB).
    #[tokio::test]
    async fn every_write_keeps_the_records_within_their_bound() {
        let asked = Arc::new(Asked::default());
        let kv: Arc<dyn KvStore> = asked.clone();
        let grants = Grants { kv: Some(kv), records: records_namespace("p", 7).into(), ..Default::default() };
        let mut state = GuestState::new("p".into(), 1 << 20, grants);
        state.kv_set("k".into(), "v".into(), 0).await.unwrap();
        assert!(state.kv_set("k".into(), "x".repeat(MAX_VALUE + 1), 0).await.is_err());
        let asked = asked.0.lock().unwrap().clone();
        assert_eq!(asked, ["put wasm:p#7 k".to_string(), format!("trim wasm:p#7 {MAX_RECORDS} {MAX_RECORD_BYTES}")]);
    }
}
