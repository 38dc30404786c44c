//! What the filter holds once it has started: the store, the outbox, the delivery worker's
//! handle and wake-up, and the locks that serialise the outlets of one chat.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sluice_sdk::{KvStore, Outbox, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Outlets of one chat are serialised (dedupe and sibling lists are read-modify-write);
/// different chats run in parallel on different stripes.
pub(crate) const STRIPES: usize = 64;

pub(crate) struct Runtime {
    pub(crate) store: Arc<dyn KvStore>,
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) wake: Arc<Notify>,
    pub(crate) run_id: String,
    pub(crate) started: Instant,
    pub(crate) stripes: Vec<tokio::sync::Mutex<()>>,
    pub(crate) worker: Mutex<Option<JoinHandle<()>>>,
    /// Bytes captured since the captures were last trimmed.
    pub(crate) captured_bytes: std::sync::atomic::AtomicU64,
}

impl Runtime {
    pub(crate) fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(crate) fn stripe(&self, chat: &str) -> &tokio::sync::Mutex<()> {
        let h = chat.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        &self.stripes[(h % STRIPES as u64) as usize]
    }
}

/// A record of ours; one that no longer parses counts as absent.
pub(crate) async fn load<T: serde::de::DeserializeOwned>(
    rt: &Runtime,
    namespace: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    Ok(rt.store.get(namespace, key).await?.and_then(|v| serde_json::from_value(v).ok()))
}

/// A record that could not be read is treated as absent, with a warning.
pub(crate) fn degrade<T>(read: Result<Option<T>, StoreError>, what: &str) -> Option<T> {
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "openpipe: {what} unreadable; reporting without it");
        None
    })
}
