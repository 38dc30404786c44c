//! A removed pipeline's records stay removed. Removal deletes the pipeline's records, but a
//! call already under way could write one a moment later, and a component added afterwards
//! with that id would read it (found by a red team). Every record a guest reads or writes
//! passes the gate of its records' namespace (its id and generation, see
//! `crate::records_namespace`), shared by the pipelines loaded with them until they are
//! removed; removal closes it, waiting for the operations already past it, before the records
//! are deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sluice_sdk::{KvStore, StoreError};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Open until the pipeline id it belongs to is removed.
#[derive(Default)]
pub struct RecordsGate {
    closed: RwLock<bool>,
}

impl RecordsGate {
    /// Returns once no operation is past the gate; none passes after.
    async fn close(&self) {
        *self.closed.write().await = true;
    }
}

/// The gate of each records namespace that is open (one per addition of an id).
#[derive(Default)]
pub struct Gates(Mutex<HashMap<String, Arc<RecordsGate>>>);

impl Gates {
    /// The gate of the records `id` names: the one the pipelines loaded with them share, or a
    /// new one after a removal.
    pub fn of(&self, id: &str) -> Arc<RecordsGate> {
        let mut gates = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(id.to_string()).or_default())
    }

    /// Closes `id`'s gate: after this no call of a pipeline loaded with those records so far
    /// reads or writes one.
    pub async fn close(&self, id: &str) {
        let gate = self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        if let Some(gate) = gate {
            gate.close().await;
        }
    }
}

/// The store as a guest reaches it: through its id's gate.
pub struct GatedStore {
    pub inner: Arc<dyn KvStore>,
    pub gate: Arc<RecordsGate>,
}

impl GatedStore {
    /// Past the gate: held for the whole operation, so closing waits for it.
    async fn pass(&self) -> Result<RwLockReadGuard<'_, bool>, StoreError> {
        let closed = self.gate.closed.read().await;
        if *closed {
            return Err(StoreError::new("this pipeline has been removed; its records are gone"));
        }
        Ok(closed)
    }
}

#[async_trait]
impl KvStore for GatedStore {
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError> {
        let _open = self.pass().await?;
        self.inner.put(namespace, key, value, ttl).await
    }

    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        let _open = self.pass().await?;
        self.inner.get(namespace, key).await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        let _open = self.pass().await?;
        self.inner.delete(namespace, key).await
    }

    async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError> {
        let _open = self.pass().await?;
        self.inner.trim(namespace, keep, max_bytes).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A store whose `put` takes a while, to close the gate while one is under way.
    #[derive(Default)]
    struct Slow(Mutex<Vec<String>>);

    #[async_trait]
    impl KvStore for Slow {
        async fn put(&self, _: &str, key: &str, _: &Value, _: Duration) -> Result<(), StoreError> {
            tokio::time::sleep(Duration::from_millis(200)).await;
            self.0.lock().unwrap().push(key.to_string());
            Ok(())
        }
        async fn get(&self, _: &str, _: &str) -> Result<Option<Value>, StoreError> {
            Ok(None)
        }
        async fn delete(&self, _: &str, _: &str) -> Result<(), StoreError> {
            Ok(())
        }
        async fn trim(&self, _: &str, _: usize, _: u64) -> Result<usize, StoreError> {
            Ok(0)
        }
    }

    #[tokio::test]
    async fn closing_waits_for_a_write_under_way_and_refuses_later_ones() {
        let slow = Arc::new(Slow::default());
        let gates = Gates::default();
        let store = Arc::new(GatedStore { inner: slow.clone(), gate: gates.of("p") });
        let writing = Arc::clone(&store);
        let under_way =
            tokio::spawn(async move { writing.put("wasm:p", "before", &Value::Null, Duration::from_secs(60)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        gates.close("p").await;
        // The write under way landed before `close` returned: the removal's delete comes after it.
        assert_eq!(*slow.0.lock().unwrap(), ["before"]);
        under_way.await.unwrap().unwrap();
        let late = store.put("wasm:p", "after", &Value::Null, Duration::from_secs(60)).await;
        assert!(late.unwrap_err().to_string().contains("removed"));
        assert!(store.get("wasm:p", "before").await.is_err());

        // A pipeline added with the id later has an open gate of its own.
        let next = GatedStore { inner: slow.clone(), gate: gates.of("p") };
        next.put("wasm:p", "next", &Value::Null, Duration::from_secs(60)).await.unwrap();
        assert_eq!(*slow.0.lock().unwrap(), ["before", "next"]);
    }

    #[tokio::test]
    async fn incarnations_of_one_id_share_a_gate_until_it_is_removed() {
        let gates = Gates::default();
        let (first, second) = (gates.of("p"), gates.of("p"));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(!Arc::ptr_eq(&first, &gates.of("q")));
        gates.close("p").await;
        assert!(*first.closed.read().await);
        assert!(!Arc::ptr_eq(&first, &gates.of("p")));
    }
}
