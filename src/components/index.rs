//! Where added components live: in sluice's store (SQLite, or PostgreSQL shared by replicas),
//! one index record naming each pipeline's component by its SHA-256, and the bytes under that
//! hash. A replica compares the index's version with its own to know what changed.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_sdk::{KvStore, StoreError};

const NAMESPACE: &str = "sluice:components";
const INDEX: &str = "index";
/// Records here are kept until removed; the store's records all carry an expiry.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Index {
    /// Grows with every change.
    pub version: u64,
    pub components: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub sha256: String,
    /// Where it came from: a URL, an uploaded file's name, or the CLI's path.
    pub source: String,
    pub added_at_ms: u64,
    /// Which addition of the id this is: kept by a replacement (an upgrade keeps its records),
    /// new after a removal (see `sluice_wasm::records_namespace`); 0 for entries from before.
    #[serde(default)]
    pub generation: u64,
}

/// The generation a component added as `id` to `index` takes.
pub fn generation_for(index: &Index, id: &str) -> u64 {
    index.components.get(id).map_or(index.version + 1, |e| e.generation)
}

pub async fn read(store: &dyn KvStore) -> Result<Index, StoreError> {
    read_raw(store).await.map(|(index, _)| index)
}

/// The index and the record it was read from, to write a change over exactly that record.
async fn read_raw(store: &dyn KvStore) -> Result<(Index, Option<Value>), StoreError> {
    match store.get(NAMESPACE, INDEX).await? {
        None => Ok((Index::default(), None)),
        Some(value) => serde_json::from_value(value.clone())
            .map(|index| (index, Some(value)))
            .map_err(|e| StoreError::new(format!("the components index is damaged: {e}"))),
    }
}

/// Changes of the index read, changed and written back while another replica may do the same:
/// each is written only over the record it was read from, and read again otherwise.
const TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "pipeline {0} was changed meanwhile (removed, added or replaced, on another replica or by the CLI); \
         look at GET /pipelines and try again"
    )]
    Changed(String),
}

/// Stores `bytes` as the component of `id`, which the caller saw at generation `was` (`None`:
/// not there), taking `generation`: the new index version and the entry it replaced. With the
/// server running, each replica loads it within a second.
#[allow(clippy::too_many_arguments)]
pub async fn insert(
    store: &dyn KvStore,
    id: &str,
    bytes: &[u8],
    sha256: &str,
    source: String,
    generation: u64,
    was: Option<u64>,
) -> Result<(u64, Option<Entry>), InsertError> {
    put_bytes(store, sha256, bytes).await?;
    for _ in 0..TRIES {
        let (mut index, raw) = read_raw(store).await?;
        // What the caller decided on (a replacement keeping a generation, or a new one) holds
        // only for the index it saw: a removal raced by a replacement on another replica was
        // undone and its generation came back (found by a red team).
        if index.components.get(id).map(|e| e.generation) != was {
            drop_if_unused(store, &index, sha256).await;
            return Err(InsertError::Changed(id.to_string()));
        }
        let added_at_ms = sluice_sdk::clock::unix_ms();
        let entry = Entry { sha256: sha256.to_string(), source: source.clone(), added_at_ms, generation };
        let old = index.components.insert(id.to_string(), entry);
        index.version += 1;
        if write_over(store, &index, raw.as_ref()).await? {
            if let Some(old) = &old {
                drop_if_unused(store, &index, &old.sha256).await;
            }
            return Ok((index.version, old));
        }
    }
    Err(InsertError::Changed(id.to_string()))
}

/// Removes `id`: the new index version and the entry removed, or `None` when it was not there.
pub async fn remove(store: &dyn KvStore, id: &str) -> Result<Option<(u64, Entry)>, StoreError> {
    for _ in 0..TRIES {
        let (mut index, raw) = read_raw(store).await?;
        let Some(entry) = index.components.remove(id) else { return Ok(None) };
        index.version += 1;
        if write_over(store, &index, raw.as_ref()).await? {
            drop_if_unused(store, &index, &entry.sha256).await;
            return Ok(Some((index.version, entry)));
        }
    }
    Err(StoreError::new("the components index kept changing under this removal; try again"))
}

async fn drop_if_unused(store: &dyn KvStore, index: &Index, sha256: &str) {
    if index.components.values().all(|e| e.sha256 != sha256) {
        if let Err(e) = store.delete(NAMESPACE, &blob_key(sha256)).await {
            tracing::warn!(error = %e, "an unused component could not be deleted from the store");
        }
    }
}

/// Writes `index` if the record is still `was`; whether it was.
async fn write_over(store: &dyn KvStore, index: &Index, was: Option<&Value>) -> Result<bool, StoreError> {
    let value = serde_json::to_value(index).map_err(|e| StoreError::new(e.to_string()))?;
    store.put_if(NAMESPACE, INDEX, was, &value, FOREVER).await
}

async fn put_bytes(store: &dyn KvStore, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    store.put(NAMESPACE, &blob_key(sha256), &Value::String(text), FOREVER).await
}

/// Why a component's bytes could not be read: the store failed (nothing can be read), or this
/// one record is not what was written (only this component is lost).
#[derive(Debug, thiserror::Error)]
pub enum BytesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("component {0} is damaged in the store{1}")]
    Damaged(String, String),
}

pub async fn bytes(store: &dyn KvStore, sha256: &str) -> Result<Option<Vec<u8>>, BytesError> {
    match store.get(NAMESPACE, &blob_key(sha256)).await? {
        Some(Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Some)
            .map_err(|e| BytesError::Damaged(sha256.to_string(), format!(": {e}"))),
        Some(_) => Err(BytesError::Damaged(sha256.to_string(), String::new())),
        None => Ok(None),
    }
}

fn blob_key(sha256: &str) -> String {
    format!("wasm:{sha256}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    /// An addition made on what the index no longer is (a removal or another addition came
    /// between) is refused, not written over it: a removal raced by a replacement on another
    /// replica was undone and its generation came back (found by a red team).
    #[tokio::test]
    async fn an_addition_on_what_changed_meanwhile_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sluice.db")).unwrap();
        let add = |was: Option<u64>, generation: u64| {
            let store = store.clone();
            async move { insert(&store, "p", b"\0asm", "abc", "p.wasm".into(), generation, was).await }
        };
        add(None, 1).await.unwrap();
        assert!(matches!(add(None, 2).await, Err(InsertError::Changed(_))), "added twice as new");
        add(Some(1), 1).await.unwrap();
        remove(&store, "p").await.unwrap().unwrap();
        assert!(matches!(add(Some(1), 1).await, Err(InsertError::Changed(_))), "a replacement of what was removed");
        let index = read(&store).await.unwrap();
        assert!(index.components.is_empty(), "{index:?}");
        assert!(bytes(&store, "abc").await.unwrap().is_none(), "the refused addition's bytes were kept");
    }
}
