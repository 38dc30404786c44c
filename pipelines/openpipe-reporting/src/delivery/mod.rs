//! The background worker that empties the outbox into OpenPipe (docs/reporting.md §12–§13).
//!
//! Delivery is at least once, and each report carries a stable id (`respPayload.id`) so a
//! duplicate is recognisable downstream. What keeps duplicates to the few sluice cannot avoid:
//! - the worker takes from the queue only what it starts at once (up to four attempts), and
//!   records each outcome as soon as it is known, not at the end of a batch;
//! - an outcome that cannot be recorded (the database is away) is kept and recorded when the
//!   database answers again, before anything new is taken;
//! - on a shared store, the lease of every attempt in flight is renewed every third of the
//!   lease, so a slow attempt is never taken and sent again by another replica.
//!
//! A `kill -9` can therefore re-send at most the attempts that were in flight (four per
//! replica), plus outcomes still waiting for the database if the database was away too.
//! Pacing (refusals, `Retry-After`, the attempt-rate cap) is in [`pacing`]; the OpenPipe calls
//! and what their answers mean in [`openpipe`].

mod openpipe;
mod pacing;

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use serde_json::json;
use sluice_sdk::outbox::{Entry, NewEntry};
use sluice_sdk::{CancellationToken, KvStore, Outbox, StoreError, ValvesCell};
use tokio::sync::Notify;

use self::openpipe::{Client, Outcome};
pub use self::openpipe::{KIND_DATASET, KIND_DATASET_EXISTING, KIND_REPORT};
use self::pacing::{entry_backoff, Pacing};
use crate::counters::Counters;
use crate::valves::ReportingValves;
use crate::{now_ms, QUEUE};

/// Requests in flight at once (§13.1).
const CONCURRENCY: usize = 4;

/// How often an idle worker looks at the queue without being woken.
const IDLE_LOOK: Duration = Duration::from_secs(2);
/// How often outcomes waiting for the database are tried again.
const SETTLE_RETRY: Duration = Duration::from_secs(1);
/// While deliveries fail, a reminder in the log this often.
const FAILING_REMINDER: Duration = Duration::from_secs(60);
/// Deliveries are summed in the log at most this often.
const DELIVERED_SUMMARY: Duration = Duration::from_secs(10);

/// Timing knobs; tests shorten them, production uses the spec's values.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// An entry's backoff is full jitter on `min(cap, base × 2^attempts)`; the worker's pause
    /// after refusals grows from `base` too.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Longest pause of the whole worker after consecutive refusals (unless OpenPipe asks for
    /// longer): also how late deliveries resume after an outage without `Retry-After`.
    pub pause_cap: Duration,
    /// How often one entry probes OpenPipe while deliveries are paused on 401/403.
    pub probe_interval: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// How long shutdown waits for attempts in flight.
    pub shutdown_wait: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            pause_cap: Duration::from_secs(30),
            probe_interval: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(3600),
            shutdown_wait: Duration::from_secs(10),
        }
    }
}

pub struct Worker {
    pub outbox: Arc<dyn Outbox>,
    pub store: Arc<dyn KvStore>,
    pub valves: ValvesCell<ReportingValves>,
    pub http: reqwest::Client,
    pub wake: Arc<Notify>,
    pub counters: Arc<Counters>,
    pub tuning: Tuning,
    pub shutdown: CancellationToken,
}

/// Identifies the settings an auth pause was for: a new key or base URL lifts it.
fn fingerprint(v: &ReportingValves) -> String {
    sluice_sdk::digest::sha256_hex(format!("{}\n{}", v.OPENPIPE_API_KEY.expose(), v.base_url()).as_bytes())
}

/// One attempt in flight: the entry, what came of it, and the valves it was made with.
type Attempt<'a> = Pin<Box<dyn Future<Output = (Entry, Outcome, Arc<ReportingValves>)> + Send + 'a>>;

/// What the log has been told, so it says things once and sums the rest.
struct Journal {
    delivered: usize,
    summed_at: Instant,
    failing_since: Option<Instant>,
    failed: usize,
    reminded_at: Instant,
    warned_no_key: bool,
}

impl Journal {
    fn new() -> Self {
        let now = Instant::now();
        Journal { delivered: 0, summed_at: now, failing_since: None, failed: 0, reminded_at: now, warned_no_key: false }
    }

    /// Reports recorded as delivered, summed every few seconds (and when the queue is empty).
    fn delivered(&mut self, n: usize) {
        self.delivered += n;
    }

    fn sum_up(&mut self, force: bool) {
        if self.delivered > 0 && (force || self.summed_at.elapsed() >= DELIVERED_SUMMARY) {
            tracing::info!(delivered = self.delivered, "openpipe: reports delivered and recorded");
            self.delivered = 0;
            self.summed_at = Instant::now();
        }
    }

    /// An attempt failed in a way worth retrying: said at once the first time, then once a
    /// minute with a count, at the default log level.
    fn failed(&mut self, status: Option<u16>, error: &str, pause: Duration) {
        self.failed += 1;
        let now = Instant::now();
        match self.failing_since {
            None => {
                self.failing_since = Some(now);
                self.reminded_at = now;
                tracing::warn!(status = status, error = %error, retry_in_ms = pause.as_millis() as u64,
                    "openpipe: deliveries are failing; reports stay queued and are retried");
            }
            Some(since) if now.duration_since(self.reminded_at) >= FAILING_REMINDER => {
                self.reminded_at = now;
                tracing::warn!(status = status, error = %error, failed_attempts = self.failed,
                    failing_for_s = now.duration_since(since).as_secs(), "openpipe: deliveries are still failing");
            }
            Some(_) => {}
        }
    }

    fn recovered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                failed_attempts = self.failed,
                after_s = since.elapsed().as_secs(),
                "openpipe: deliveries resumed"
            );
            self.failed = 0;
        }
    }
}

impl Worker {
    /// Moves an entry to the dead letters (kept, never dropped) and counts it.
    async fn bury(&self, id: &str, status: Option<u16>, reason: &str) -> Result<(), StoreError> {
        self.outbox.dead_letter(QUEUE, id, status, reason).await?;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records an attempt's outcome in the store. Every step is safe to repeat, so an outcome
    /// whose recording failed half-way is simply recorded again.
    async fn settle(&self, v: &ReportingValves, entry: &Entry, outcome: &Outcome) -> Result<(), StoreError> {
        let debug = v.DEBUG_LOGGING;
        match outcome {
            Outcome::Delivered => {
                self.outbox.complete(QUEUE, &entry.id).await?;
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                if debug {
                    tracing::debug!(id = %entry.id, kind = %entry.kind, attempts = entry.attempts + 1, "openpipe: delivered");
                }
            }
            Outcome::PartlyDelivered(failed) => {
                let dead: Vec<NewEntry> = failed
                    .iter()
                    .enumerate()
                    .map(|(i, (e, _))| NewEntry {
                        id: format!("{}-e{i}", entry.id),
                        kind: entry.kind.clone(),
                        target: entry.target.clone(),
                        body: json!({"entries": [e]}),
                    })
                    .collect();
                let ids: Vec<String> = dead.iter().map(|d| d.id.clone()).collect();
                self.outbox.enqueue(QUEUE, dead, Vec::new()).await?;
                for (id, (_, msg)) in ids.iter().zip(failed) {
                    self.bury(id, Some(200), &format!("entry refused: {msg}")).await?;
                }
                self.outbox.complete(QUEUE, &entry.id).await?;
                tracing::warn!(id = %entry.id, refused = failed.len(), "openpipe: some dataset entries were refused; kept as dead letters");
            }
            Outcome::Retry { status, error, after } => {
                let wait = entry_backoff(&self.tuning, entry.attempts + 1, *after);
                let next = now_ms() + wait.as_millis() as u64;
                self.outbox.retry_later(QUEUE, &entry.id, next, *status, error).await?;
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                if debug {
                    tracing::debug!(id = %entry.id, status = status, wait_ms = wait.as_millis() as u64, "openpipe: will retry");
                }
            }
            Outcome::Auth { status } => {
                // Stays due: the pause, not the entry's schedule, holds it back, so a new key
                // sends everything at once.
                let error = format!("HTTP {status}: key refused");
                self.outbox.retry_later(QUEUE, &entry.id, now_ms(), Some(*status), &error).await?;
            }
            Outcome::TooLarge => {
                let mut body = entry.body.clone();
                if entry.last_status != Some(413) && crate::shrink::shrink_report(&mut body) {
                    self.outbox.replace_body(QUEUE, &entry.id, &body).await?;
                    self.outbox.retry_later(QUEUE, &entry.id, now_ms(), Some(413), "HTTP 413: shrunk").await?;
                } else {
                    self.bury(&entry.id, Some(413), "too_large").await?;
                    tracing::warn!(id = %entry.id, "openpipe: report too large even after shrinking; dead-lettered");
                }
            }
            Outcome::Permanent { status, error } => {
                self.bury(&entry.id, *status, error).await?;
                tracing::warn!(id = %entry.id, kind = %entry.kind, status = status, error = %error, "openpipe: refused; dead-lettered");
            }
        }
        Ok(())
    }

    /// Moves entries older than `DELIVERY_MAX_AGE_HOURS` to the dead letters; returns the rest.
    async fn expire(&self, v: &ReportingValves, due: Vec<Entry>) -> Result<Vec<Entry>, StoreError> {
        let max_age = v.DELIVERY_MAX_AGE_HOURS * 3_600_000;
        let now = now_ms();
        let mut live = Vec::with_capacity(due.len());
        for e in due {
            if now.saturating_sub(e.created_at_ms) > max_age {
                let reason = format!(
                    "undelivered after {} h; last error: {}",
                    v.DELIVERY_MAX_AGE_HOURS,
                    e.last_error.as_deref().unwrap_or("none")
                );
                self.bury(&e.id, None, &reason).await?;
                tracing::warn!(id = %e.id, "openpipe: report expired undelivered; dead-lettered");
            } else {
                live.push(e);
            }
        }
        Ok(live)
    }

    pub async fn run(self) {
        let client = Client {
            http: self.http.clone(),
            store: Arc::clone(&self.store),
            counters: Arc::clone(&self.counters),
            tuning: self.tuning,
        };
        let mut state = Loop {
            worker: &self,
            client: &client,
            in_flight: FuturesUnordered::new(),
            ids: HashSet::new(),
            unsettled: Vec::new(),
            pacing: Pacing::new(),
            auth_pause: None,
            journal: Journal::new(),
            renewed_at: Instant::now(),
        };
        state.drive().await;
    }
}

/// The worker's state while it runs.
struct Loop<'a> {
    worker: &'a Worker,
    client: &'a Client,
    in_flight: FuturesUnordered<Attempt<'a>>,
    /// Ids of the attempts in flight and of the outcomes not yet recorded: their leases are
    /// renewed.
    ids: HashSet<String>,
    /// Outcomes known but not yet recorded (the database was away).
    unsettled: Vec<(Entry, Outcome, Arc<ReportingValves>)>,
    pacing: Pacing,
    /// The key (fingerprint) OpenPipe refused, and when to probe it again.
    auth_pause: Option<(String, Instant)>,
    journal: Journal,
    renewed_at: Instant,
}

impl<'a> Loop<'a> {
    async fn drive(&mut self) {
        let w = self.worker;
        loop {
            let stopping = w.shutdown.is_cancelled();
            self.settle_waiting().await;
            if stopping && self.in_flight.is_empty() {
                if !self.unsettled.is_empty() {
                    tracing::warn!(
                        unrecorded = self.unsettled.len(),
                        "openpipe: outcomes not recorded at shutdown; those reports may be sent again"
                    );
                }
                self.journal.sum_up(true);
                return;
            }
            // Nothing new is taken while outcomes wait for the database, or while stopping.
            let wake_at = if stopping || !self.unsettled.is_empty() {
                Some(Instant::now() + SETTLE_RETRY)
            } else {
                self.start_attempts().await
            };
            self.renew_leases().await;
            let mut sleep = wake_at.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or(IDLE_LOOK);
            if let Some(lease) = w.outbox.lease().filter(|_| !self.ids.is_empty()) {
                sleep = sleep.min(lease / 3);
            }
            tokio::select! {
                Some((entry, outcome, v)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finished(entry, outcome, v).await;
                }
                _ = tokio::time::sleep(sleep) => {}
                _ = w.wake.notified() => {}
                _ = w.shutdown.cancelled(), if !stopping => {}
            }
        }
    }

    /// Starts what may start now; when to look again if nothing could.
    async fn start_attempts(&mut self) -> Option<Instant> {
        let w = self.worker;
        let v = w.valves.get();
        let now = Instant::now();
        if v.OPENPIPE_API_KEY.is_empty() {
            // Only reports already queued are worth a warning: without a key nothing new is
            // captured, and the filter said so at start.
            if !self.journal.warned_no_key {
                if let Ok(stats) = w.outbox.stats(QUEUE).await {
                    if stats.depth > 0 {
                        tracing::warn!(
                            queued = stats.depth,
                            "openpipe: no OPENPIPE_API_KEY; queued reports wait until one is set"
                        );
                    }
                }
                self.journal.warned_no_key = true;
            }
            return None;
        }
        self.journal.warned_no_key = false;
        let fp = fingerprint(&v);
        if self.auth_pause.as_ref().is_some_and(|(paused, _)| *paused != fp) {
            tracing::info!("openpipe: key or base URL changed; resuming deliveries");
            self.auth_pause = None;
        }
        let mut slots = self.pacing.concurrency(CONCURRENCY).saturating_sub(self.in_flight.len());
        if let Some((_, probe_at)) = &self.auth_pause {
            if now < *probe_at {
                return Some(*probe_at);
            }
            slots = slots.min(1);
        }
        if let Some(until) = self.pacing.paused_until(now) {
            return Some(until);
        }
        if slots == 0 {
            return None;
        }
        let (slots, later) = self.pacing.take(slots, v.MAX_ATTEMPTS_PER_SECOND, now);
        if slots == 0 {
            return later;
        }
        // A store with one worker (SQLite) claims nothing: what is in flight is still due there,
        // so more are asked for. A shared store claims (leases) every entry it answers, and
        // those past `slots` waited a whole lease unsent (found by a red team): exactly
        // `slots` there, where what is in flight is not due.
        let ask = if w.outbox.lease().is_some() { slots } else { slots + self.ids.len() };
        let due = match w.outbox.due(QUEUE, now_ms(), ask).await {
            Ok(d) => d.into_iter().filter(|e| !self.ids.contains(&e.id)).take(slots).collect(),
            Err(e) => {
                tracing::warn!(error = %e, "openpipe: outbox unreadable; retrying");
                return Some(now + SETTLE_RETRY);
            }
        };
        let due = match w.expire(&v, due).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "openpipe: outbox write failed; retrying");
                return Some(now + SETTLE_RETRY);
            }
        };
        if due.is_empty() {
            if !self.in_flight.is_empty() {
                // What is due is in flight: the next finished attempt wakes the loop.
                return None;
            }
            self.journal.sum_up(true);
            // Reports can appear without waking this worker (queued by another replica, or
            // written late by a store that was away): look again soon anyway.
            let next = w.outbox.next_due_at(QUEUE).await.ok().flatten();
            let wait = next.map(|t| Duration::from_millis(t.saturating_sub(now_ms()))).unwrap_or(IDLE_LOOK);
            return Some(now + wait.min(IDLE_LOOK));
        }
        let client = self.client;
        for entry in due {
            self.ids.insert(entry.id.clone());
            let v = Arc::clone(&v);
            self.in_flight.push(Box::pin(async move {
                let outcome = client.attempt(&v, &entry).await;
                (entry, outcome, v)
            }));
        }
        // More may be due at once: look again right away.
        Some(now)
    }

    /// An attempt finished: pace, then record its outcome now.
    async fn finished(&mut self, entry: Entry, outcome: Outcome, v: Arc<ReportingValves>) {
        let w = self.worker;
        match &outcome {
            Outcome::Delivered | Outcome::PartlyDelivered(_) => {
                if self.pacing.succeeded() {
                    self.journal.recovered();
                }
                if self.auth_pause.take().is_some() {
                    tracing::info!("openpipe: key accepted again; resuming deliveries");
                }
            }
            Outcome::Retry { status, error, after } => {
                let pause = self.pacing.refused(&w.tuning, *after, Instant::now());
                self.journal.failed(*status, error, pause);
            }
            Outcome::Auth { .. } => {
                if self.auth_pause.is_none() {
                    tracing::warn!(
                        "openpipe: OpenPipe refused the key (401/403); deliveries paused until the key changes"
                    );
                }
                self.auth_pause = Some((fingerprint(&v), Instant::now() + w.tuning.probe_interval));
            }
            Outcome::TooLarge | Outcome::Permanent { .. } => {}
        }
        self.unsettled.push((entry, outcome, v));
        self.settle_waiting().await;
    }

    /// Records every outcome waiting to be recorded, oldest first; stops at the first failure.
    async fn settle_waiting(&mut self) {
        while let Some((entry, outcome, v)) = self.unsettled.first() {
            match self.worker.settle(v, entry, outcome).await {
                Ok(()) => {
                    if matches!(outcome, Outcome::Delivered | Outcome::PartlyDelivered(_)) {
                        self.journal.delivered(1);
                    }
                    self.ids.remove(&entry.id);
                    self.unsettled.remove(0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, waiting = self.unsettled.len(),
                        "openpipe: an outcome could not be recorded; it is kept and recorded when the store answers");
                    return;
                }
            }
        }
        self.journal.sum_up(false);
    }

    /// Keeps what this worker holds (attempts in flight, outcomes not yet recorded) from being
    /// taken by another replica: every third of the lease.
    async fn renew_leases(&mut self) {
        let Some(lease) = self.worker.outbox.lease() else { return };
        if self.ids.is_empty() || self.renewed_at.elapsed() < lease / 3 {
            return;
        }
        let ids: Vec<String> = self.ids.iter().cloned().collect();
        match self.worker.outbox.renew(QUEUE, &ids, now_ms()).await {
            Ok(()) => self.renewed_at = Instant::now(),
            Err(e) => tracing::warn!(error = %e, "openpipe: leases could not be renewed"),
        }
    }
}
