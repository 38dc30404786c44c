//! What happens to reports while PostgreSQL is unreachable: an outlet's enqueue that fails is
//! kept in memory, in order, and retried every second until the database takes it. Bounded
//! (entries, bytes and age); anything dropped at a bound is logged as an error and counted,
//! never silently. Key/value reads and writes are not held: captures and replay records are
//! optional for an answer, and the callers already go on without them.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;
use sluice_sdk::outbox::{Entry, KvWrite, NewEntry, Outbox, QueueStats};
use sluice_sdk::{KvStore, StoreError};
use tokio_util::sync::CancellationToken;

use super::admin::{StoreAdmin, StoreHealth};
use super::postgres::PgStore;
use super::shared_valves::SharedValves;

/// Bounds of what is held in memory while the database is away.
#[derive(Debug, Clone, Copy)]
pub struct SpillLimits {
    pub entries: usize,
    pub bytes: usize,
    pub age: Duration,
}

impl Default for SpillLimits {
    fn default() -> Self {
        SpillLimits { entries: 10_000, bytes: 64 * 1024 * 1024, age: Duration::from_secs(3600) }
    }
}

struct Held {
    queue: String,
    entries: Vec<NewEntry>,
    kv: Vec<KvWrite>,
    bytes: usize,
    since: Instant,
}

#[derive(Default)]
struct Spill {
    held: VecDeque<Held>,
    entries: usize,
    bytes: usize,
}

/// Longest a single store call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// While the store is away, how often a call may try it.
const PROBE_EVERY: Duration = Duration::from_secs(1);

pub struct SpillingStore {
    pg: PgStore,
    last_probe: Mutex<Option<Instant>>,
    spill: Mutex<Spill>,
    limits: SpillLimits,
    up: AtomicBool,
    dropped: AtomicU64,
}

impl SpillingStore {
    pub fn new(pg: PgStore, limits: SpillLimits) -> Self {
        SpillingStore {
            pg,
            last_probe: Mutex::new(None),
            spill: Mutex::default(),
            limits,
            up: AtomicBool::new(true),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spill> {
        self.spill.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!("store reachable again; held reports are being written");
            } else {
                tracing::error!("store unreachable; reports are held in memory until it is back");
            }
        }
    }

    /// Keeps an enqueue that failed; refuses it when a bound is reached.
    fn hold(&self, queue: &str, entries: Vec<NewEntry>, kv: Vec<KvWrite>, why: &StoreError) -> Result<(), StoreError> {
        let bytes: usize = entries.iter().map(|e| e.body.to_string().len()).sum();
        let mut spill = self.lock();
        if spill.entries + entries.len() > self.limits.entries || spill.bytes + bytes > self.limits.bytes {
            self.dropped.fetch_add(entries.len() as u64, Ordering::Relaxed);
            tracing::error!(
                queue,
                dropped = entries.len(),
                held = spill.entries,
                "store unreachable and the in-memory hold is full: reports dropped"
            );
            return Err(StoreError::new(format!("store unreachable ({why}) and the in-memory hold is full")));
        }
        spill.entries += entries.len();
        spill.bytes += bytes;
        spill.held.push_back(Held { queue: queue.to_string(), entries, kv, bytes, since: Instant::now() });
        tracing::warn!(queue, held = spill.entries, error = %why, "report held in memory: store unreachable");
        Ok(())
    }

    /// Writes what is held, oldest first, until the database refuses; drops what is too old.
    pub async fn flush(&self) {
        loop {
            let next = {
                let mut spill = self.lock();
                while spill.held.front().is_some_and(|h| h.since.elapsed() > self.limits.age) {
                    if let Some(old) = spill.held.pop_front() {
                        spill.entries -= old.entries.len();
                        spill.bytes -= old.bytes;
                        self.dropped.fetch_add(old.entries.len() as u64, Ordering::Relaxed);
                        tracing::error!(queue = %old.queue, dropped = old.entries.len(), "held reports dropped: the store stayed unreachable too long");
                    }
                }
                spill.held.pop_front()
            };
            let Some(h) = next else { return };
            match self.guarded(self.pg.enqueue(&h.queue, h.entries.clone(), h.kv.clone())).await {
                Ok(()) => {
                    let mut spill = self.lock();
                    spill.entries -= h.entries.len();
                    spill.bytes -= h.bytes;
                }
                Err(_) => {
                    self.lock().held.push_front(h);
                    return;
                }
            }
        }
    }

    /// Retries what is held every second until `stop`.
    pub async fn run_flusher(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.cancelled() => return,
            }
            if !self.lock().held.is_empty() {
                self.flush().await;
            }
        }
    }

    /// One call on the database: bounded in time and, while the database is known to be away,
    /// refused at once except for one probe a second. A hook then pays one timeout at the moment
    /// the database stalls, not one per statement for as long as it is gone.
    async fn guarded<T>(&self, call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        if !self.up.load(Ordering::Relaxed) {
            let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
                return Err(StoreError::new("the store is unreachable"));
            }
            *last = Some(Instant::now());
        }
        let r = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::new(format!("no answer from the store in {} s", CALL_TIMEOUT.as_secs()))),
        };
        if r.is_err() {
            // The next try is a second away, whoever makes it.
            *self.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        }
        self.mark(r.is_ok());
        r
    }
}

#[async_trait]
impl KvStore for SpillingStore {
    async fn put(&self, namespace: &str, key: &str, value: &Value, ttl: Duration) -> Result<(), StoreError> {
        self.guarded(self.pg.put(namespace, key, value, ttl)).await
    }
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, StoreError> {
        self.guarded(self.pg.get(namespace, key)).await
    }
    async fn put_if(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&Value>,
        value: &Value,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.guarded(self.pg.put_if(namespace, key, expected, value, ttl)).await
    }
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        self.guarded(self.pg.delete(namespace, key)).await
    }
    async fn trim(&self, namespace: &str, keep: usize, max_bytes: u64) -> Result<usize, StoreError> {
        self.guarded(self.pg.trim(namespace, keep, max_bytes)).await
    }
}

#[async_trait]
impl Outbox for SpillingStore {
    async fn enqueue(&self, queue: &str, entries: Vec<NewEntry>, kv: Vec<KvWrite>) -> Result<(), StoreError> {
        // Behind what is already held: keep the order.
        if !self.lock().held.is_empty() {
            return self.hold(queue, entries, kv, &StoreError::new("earlier reports are still held"));
        }
        match self.guarded(self.pg.enqueue(queue, entries.clone(), kv.clone())).await {
            Ok(()) => Ok(()),
            Err(e) => self.hold(queue, entries, kv, &e),
        }
    }
    async fn due(&self, queue: &str, now_ms: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.guarded(self.pg.due(queue, now_ms, limit)).await
    }
    async fn next_due_at(&self, queue: &str) -> Result<Option<u64>, StoreError> {
        self.guarded(self.pg.next_due_at(queue)).await
    }
    fn lease(&self) -> Option<std::time::Duration> {
        self.pg.lease()
    }
    async fn renew(&self, queue: &str, ids: &[String], now_ms: u64) -> Result<(), StoreError> {
        self.guarded(self.pg.renew(queue, ids, now_ms)).await
    }
    async fn retry_later(&self, q: &str, id: &str, at: u64, status: Option<u16>, e: &str) -> Result<(), StoreError> {
        self.guarded(self.pg.retry_later(q, id, at, status, e)).await
    }
    async fn replace_body(&self, queue: &str, id: &str, body: &Value) -> Result<(), StoreError> {
        self.guarded(self.pg.replace_body(queue, id, body)).await
    }
    async fn complete(&self, queue: &str, id: &str) -> Result<(), StoreError> {
        self.guarded(self.pg.complete(queue, id)).await
    }
    async fn dead_letter(&self, q: &str, id: &str, status: Option<u16>, reason: &str) -> Result<(), StoreError> {
        self.guarded(self.pg.dead_letter(q, id, status, reason)).await
    }
    async fn stats(&self, queue: &str) -> Result<QueueStats, StoreError> {
        self.guarded(Outbox::stats(&self.pg, queue)).await
    }
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.guarded(Outbox::dead_letters(&self.pg, queue, limit)).await
    }
}

#[async_trait]
impl StoreAdmin for SpillingStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }
    async fn queues(&self) -> Result<Vec<QueueStats>, StoreError> {
        self.guarded(self.pg.queues()).await
    }
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.guarded(self.pg.purge_expired()).await
    }
    async fn requeue_dead(&self, queue: &str) -> Result<u64, StoreError> {
        self.guarded(self.pg.requeue_dead(queue)).await
    }
    async fn write_held(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let held = self.lock().entries;
        if held > 0 {
            tracing::warn!(
                held,
                within_secs = within.as_secs(),
                "stopping with reports held in memory: waiting for the store"
            );
        }
        loop {
            self.flush().await;
            let held = self.lock().entries;
            if held == 0 {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                // They were acknowledged: the loss is said and counted, never silent (a stop
                // while the database was away lost them without a word; found by a red team).
                self.dropped.fetch_add(held as u64, Ordering::Relaxed);
                tracing::error!(lost = held, "reports held in memory are lost: the store was not back before the end");
                return;
            }
            tokio::time::sleep(PROBE_EVERY.min(deadline - now)).await;
        }
    }

    fn health(&self) -> Option<StoreHealth> {
        let spill = self.lock();
        Some(StoreHealth {
            up: self.up.load(Ordering::Relaxed),
            held_entries: spill.entries as u64,
            held_oldest_secs: spill.held.front().map_or(0.0, |h| h.since.elapsed().as_secs_f64()),
            dropped: self.dropped.load(Ordering::Relaxed),
        })
    }
}

#[async_trait]
impl SharedValves for SpillingStore {
    async fn seed(&self, id: &str, local: &str) -> Result<(String, i64), StoreError> {
        self.guarded(self.pg.seed_valves(id, local)).await
    }
    async fn publish(&self, id: &str, toml: &str) -> Result<i64, StoreError> {
        self.guarded(self.pg.publish_valves(id, toml)).await
    }
    async fn versions(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.guarded(self.pg.valves_versions()).await
    }
    async fn text(&self, id: &str) -> Result<Option<(String, i64)>, StoreError> {
        self.guarded(self.pg.valves_text(id)).await
    }
}
