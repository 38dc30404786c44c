//! A durable queue of outgoing HTTP work (reports, dataset entries) for pipelines that must
//! never lose what they accepted. Entries are written together with related key/value changes
//! in one transaction, survive restarts, are retried by the pipeline's own worker, and move to
//! a dead-letter list instead of being dropped.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use crate::StoreError;

/// Work to queue. `id` is chosen by the caller (a UUID), so a retry of the same work can be
/// recognised downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub id: String,
    /// What the worker does with it, e.g. `report` or `dataset_entries`.
    pub kind: String,
    /// Where it goes, e.g. an endpoint path.
    pub target: String,
    pub body: Value,
}

/// A queued (or dead-lettered) entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    pub id: String,
    pub kind: String,
    pub target: String,
    pub body: Value,
    pub created_at_ms: u64,
    pub attempts: u32,
    pub next_attempt_at_ms: u64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Set once the entry is dead-lettered.
    pub dead_at_ms: Option<u64>,
}

/// A key/value change made in the same transaction as an enqueue.
#[derive(Debug, Clone, PartialEq)]
pub enum KvWrite {
    Put { namespace: String, key: String, value: Value, ttl: Duration },
    Delete { namespace: String, key: String },
}

/// Size of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub queue: String,
    /// Entries waiting for delivery.
    pub depth: u64,
    /// Entries given up on, kept for the operator.
    pub dead: u64,
    pub oldest_created_at_ms: Option<u64>,
    /// Why the most-tried waiting entry failed last (status and reason), for the operator;
    /// only filled by the store's overview of all queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl QueueStats {
    /// How long the oldest waiting entry has waited, at `now_ms`.
    pub fn oldest_age(&self, now_ms: u64) -> Option<Duration> {
        self.oldest_created_at_ms.map(|t| Duration::from_millis(now_ms.saturating_sub(t)))
    }
}

#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Queues `entries` and applies `kv` atomically; returns once all of it is durable.
    async fn enqueue(&self, queue: &str, entries: Vec<NewEntry>, kv: Vec<KvWrite>) -> Result<(), StoreError>;

    /// Live entries whose next attempt is due at `now_ms`, oldest first.
    async fn due(&self, queue: &str, now_ms: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// When the earliest live entry becomes due, if any is queued.
    async fn next_due_at(&self, queue: &str) -> Result<Option<u64>, StoreError>;

    /// Records a failed attempt (attempts + 1) and when to try again.
    async fn retry_later(
        &self,
        queue: &str,
        id: &str,
        next_attempt_at_ms: u64,
        status: Option<u16>,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Replaces an entry's body (e.g. shrunk after a 413), keeping its place in the queue.
    async fn replace_body(&self, queue: &str, id: &str, body: &Value) -> Result<(), StoreError>;

    /// Delivered: removes the entry.
    async fn complete(&self, queue: &str, id: &str) -> Result<(), StoreError>;

    /// Given up: keeps the entry with `reason`, out of the delivery queue. With a `status`, an
    /// attempt was answered and is counted, once however often this is repeated (a report
    /// refused at its first attempt showed `attempts: 0`).
    async fn dead_letter(&self, queue: &str, id: &str, status: Option<u16>, reason: &str) -> Result<(), StoreError>;

    async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError>;

    /// Dead-lettered entries, newest first.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// How long what [`Outbox::due`] hands out stays with the caller before another worker may
    /// take it, for a store that several workers share; `None` for a store with one worker.
    fn lease(&self) -> Option<Duration> {
        None
    }

    /// Keeps `ids`, still being worked on, with this worker for another lease from `now_ms`,
    /// so an attempt that outlasts the lease is not taken and sent again by another worker.
    async fn renew(&self, _queue: &str, _ids: &[String], _now_ms: u64) -> Result<(), StoreError> {
        Ok(())
    }
}
