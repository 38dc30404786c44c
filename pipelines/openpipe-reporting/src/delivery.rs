//! The background worker that empties the outbox into OpenPipe (openpipe-reporting.md §12–§13):
//! timeouts per attempt, full-jitter backoff, `Retry-After`, a pause on 401/403 until the key
//! changes, dead letters by age or for permanent refusals. Delivery is at least once; the
//! stable `completionId` of each report makes a duplicate recognisable downstream.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_sdk::outbox::{Entry, NewEntry};
use sluice_sdk::{CancellationToken, KvStore, Outbox, ValvesCell};
use tokio::sync::Notify;

use crate::counters::Counters;
use crate::valves::ReportingValves;
use crate::{now_ms, QUEUE};

pub const KIND_REPORT: &str = "report";
pub const KIND_DATASET: &str = "dataset_entries";
const DATASETS_NS: &str = "openpipe_reporting.datasets";
/// Requests in flight at once (§13.1).
const CONCURRENCY: usize = 4;
const BATCH: usize = 32;

/// Most bytes of an answer read (a dataset list is the longest OpenPipe sends).
const MAX_REPLY_BYTES: usize = 4 << 20;

/// How often an idle worker looks at the queue without being woken.
const IDLE_LOOK: Duration = Duration::from_secs(2);

/// Timing knobs; tests shorten them, production uses the spec's values.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Backoff is full jitter on `min(cap, base × 2^attempts)`.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
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
            probe_interval: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(3600),
            shutdown_wait: Duration::from_secs(10),
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Entries of a dataset job that OpenPipe refused one by one; the rest were stored.
    PartlyDelivered(Vec<(Value, String)>),
    Retry {
        status: Option<u16>,
        error: String,
        after: Option<Duration>,
    },
    Auth {
        status: u16,
    },
    TooLarge,
    Permanent {
        status: Option<u16>,
        error: String,
    },
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
    crate::dpo::sha256_hex(format!("{}\n{}", v.OPENPIPE_API_KEY.expose(), v.base_url()).as_bytes())
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Full jitter: uniform in `[0, min(cap, base × 2^attempts)]`.
fn backoff(t: &Tuning, attempts: u32) -> Duration {
    let exp = t.backoff_base.saturating_mul(1u32 << attempts.min(20));
    exp.min(t.backoff_cap).mul_f64(random_unit())
}

fn retry_after(headers: &reqwest::header::HeaderMap, cap: Duration) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default(),
    };
    Some(wait.min(cap))
}

/// OpenPipe's error text (`{"message": ...}`), shortened.
fn error_text(status: u16, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let message: String = message.chars().take(300).collect();
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    }
}

fn classify_status(status: u16, headers: &reqwest::header::HeaderMap, body: &str, tuning: &Tuning) -> Outcome {
    match status {
        401 | 403 => Outcome::Auth { status },
        413 => Outcome::TooLarge,
        408 | 425 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: error_text(status, body),
            after: retry_after(headers, tuning.retry_after_cap),
        },
        _ => Outcome::Permanent { status: Some(status), error: error_text(status, body) },
    }
}

fn transport_error(e: reqwest::Error) -> Outcome {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's message names the URL (no key in it) and the cause.
    Outcome::Retry { status: None, error: format!("{what}: {}", e.without_url()), after: None }
}

/// Dataset ids are cached per API root and name (§11.4).
fn dataset_cache_key(v: &ReportingValves, name: &str) -> String {
    format!("{}|{name}", v.base_url())
}

/// Status, headers and text of one OpenPipe answer.
type Reply = (u16, reqwest::header::HeaderMap, String);

/// A 2xx answer as is; anything else as the outcome its status calls for.
fn success(reply: Reply, tuning: &Tuning) -> Result<Reply, Outcome> {
    let (status, headers, text) = &reply;
    if (200..300).contains(status) {
        Ok(reply)
    } else {
        Err(classify_status(*status, headers, text, tuning))
    }
}

/// What OpenPipe's answer to `/report` means: only a 2xx with `"status": "ok"` is delivered.
fn report_outcome(reply: Reply, tuning: &Tuning) -> Outcome {
    let (status, _, text) = match success(reply, tuning) {
        Ok(r) => r,
        Err(o) => return o,
    };
    match serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|b| b.get("status").and_then(Value::as_str).map(str::to_string))
    {
        Some(s) if s == "ok" => Outcome::Delivered,
        Some(s) => {
            Outcome::Retry { status: Some(status), error: format!("OpenPipe answered status {s:?}"), after: None }
        }
        None => {
            Outcome::Retry { status: Some(status), error: "OpenPipe answered without a status".into(), after: None }
        }
    }
}

/// The entries OpenPipe refused in its answer to `/datasets/{id}/entries` (index into
/// `entries` and its message); indexes it cannot have sent back are ignored.
fn refused_entries(text: &str, entries: &[Value]) -> Vec<(Value, String)> {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    body.pointer("/errors/data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let i = usize::try_from(e.get("entry_index")?.as_u64()?).ok()?;
            let msg = e.get("message").and_then(Value::as_str).unwrap_or("refused").to_string();
            Some((entries.get(i)?.clone(), msg))
        })
        .collect()
}

impl Worker {
    /// One authenticated call with the attempt timeout; the reply's status, headers and text,
    /// with the key removed should the answer quote it (error texts are stored and logged).
    async fn call(&self, v: &ReportingValves, request: reqwest::RequestBuilder) -> Result<Reply, Outcome> {
        let resp = request
            .bearer_auth(v.OPENPIPE_API_KEY.expose())
            .timeout(Duration::from_secs(v.TIMEOUT_SECONDS))
            .send()
            .await
            .map_err(transport_error)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // OpenPipe's answers are small; whatever answers at its address need not be.
        let mut body = resp.bytes_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(transport_error)?);
            if bytes.len() > MAX_REPLY_BYTES {
                bytes.truncate(MAX_REPLY_BYTES);
                break;
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let text = sluice_sdk::secret::redact(&text, &[v.OPENPIPE_API_KEY.expose()]).into_owned();
        Ok((status, headers, text))
    }

    async fn post(&self, v: &ReportingValves, path: &str, body: &Value) -> Result<Reply, Outcome> {
        self.call(v, self.http.post(format!("{}{path}", v.base_url())).json(body)).await
    }

    async fn get(&self, v: &ReportingValves, path: &str) -> Result<Reply, Outcome> {
        self.call(v, self.http.get(format!("{}{path}", v.base_url()))).await
    }

    async fn send_report(&self, v: &ReportingValves, entry: &Entry) -> Outcome {
        match self.post(v, &entry.target, &entry.body).await {
            Ok(reply) => report_outcome(reply, &self.tuning),
            Err(o) => o,
        }
    }

    /// The dataset's id: cached, else looked up by exact name, else created (§11.4).
    async fn dataset_id(&self, v: &ReportingValves, name: &str) -> Result<String, Outcome> {
        let cache_key = dataset_cache_key(v, name);
        if let Ok(Some(Value::String(id))) = self.store.get(DATASETS_NS, &cache_key).await {
            return Ok(id);
        }
        let (status, _, text) = self.get(v, "/datasets").await.and_then(|r| success(r, &self.tuning))?;
        let list: Value = serde_json::from_str(&text).map_err(|_| Outcome::Retry {
            status: Some(status),
            error: "dataset list is not JSON".into(),
            after: None,
        })?;
        let mut matches: Vec<&Value> = list
            .get("data")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d.get("name").and_then(Value::as_str) == Some(name))
            .collect();
        if matches.len() > 1 {
            tracing::warn!(
                count = matches.len(),
                "several OpenPipe datasets share the DPO dataset name; using the newest"
            );
        }
        matches.sort_by_key(|d| d.get("updated").map(|u| u.to_string()).unwrap_or_default());
        let id = match matches.last().and_then(|d| d.get("id")).and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                let (status, _, text) =
                    self.post(v, "/datasets", &json!({"name": name})).await.and_then(|r| success(r, &self.tuning))?;
                serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|d| d.get("id").and_then(Value::as_str).map(str::to_string))
                    .ok_or(Outcome::Retry {
                        status: Some(status),
                        error: "created dataset has no id".into(),
                        after: None,
                    })?
            }
        };
        let _ =
            self.store.put(DATASETS_NS, &cache_key, &Value::String(id.clone()), Duration::from_secs(30 * 86_400)).await;
        Ok(id)
    }

    async fn send_dataset_entries(&self, v: &ReportingValves, entry: &Entry) -> Outcome {
        let name = entry.target.as_str();
        for round in 0..2 {
            let id = match self.dataset_id(v, name).await {
                Ok(id) => id,
                Err(o) => return o,
            };
            let reply = match self.post(v, &format!("/datasets/{id}/entries"), &entry.body).await {
                Ok(r) => r,
                Err(o) => return o,
            };
            if reply.0 == 404 && round == 0 {
                // The cached dataset is gone: resolve the name again, once.
                let _ = self.store.delete(DATASETS_NS, &dataset_cache_key(v, name)).await;
                continue;
            }
            let (_, _, text) = match success(reply, &self.tuning) {
                Ok(r) => r,
                Err(o) => return o,
            };
            let entries = entry.body.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
            let failed = refused_entries(&text, &entries);
            self.counters
                .dpo_pairs_submitted
                .fetch_add((entries.len() - failed.len().min(entries.len())) as u64, Ordering::Relaxed);
            return if failed.is_empty() { Outcome::Delivered } else { Outcome::PartlyDelivered(failed) };
        }
        Outcome::Permanent { status: Some(404), error: "dataset not found".into() }
    }

    /// Moves an entry to the dead letters (kept, never dropped) and counts it.
    async fn bury(&self, id: &str, status: Option<u16>, reason: &str) -> Result<(), sluice_sdk::StoreError> {
        self.outbox.dead_letter(QUEUE, id, status, reason).await?;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn attempt(&self, v: &ReportingValves, entry: &Entry) -> Outcome {
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        match entry.kind.as_str() {
            KIND_REPORT => self.send_report(v, entry).await,
            KIND_DATASET => self.send_dataset_entries(v, entry).await,
            other => Outcome::Permanent { status: None, error: format!("unknown outbox entry kind {other:?}") },
        }
    }

    /// Applies an attempt's outcome to the store; returns whether OpenPipe refused the key.
    async fn settle(
        &self,
        v: &ReportingValves,
        entry: &Entry,
        outcome: Outcome,
    ) -> Result<bool, sluice_sdk::StoreError> {
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
                for (id, (_, msg)) in ids.iter().zip(&failed) {
                    self.bury(id, Some(200), &format!("entry refused: {msg}")).await?;
                }
                self.outbox.complete(QUEUE, &entry.id).await?;
                tracing::warn!(id = %entry.id, refused = failed.len(), "openpipe: some dataset entries were refused; kept as dead letters");
            }
            Outcome::Retry { status, error, after } => {
                let wait = after.unwrap_or_else(|| backoff(&self.tuning, entry.attempts + 1));
                let next = now_ms() + wait.as_millis() as u64;
                self.outbox.retry_later(QUEUE, &entry.id, next, status, &error).await?;
                self.counters.retried.fetch_add(1, Ordering::Relaxed);
                if debug {
                    tracing::debug!(id = %entry.id, status = ?status, wait_ms = wait.as_millis() as u64, "openpipe: will retry");
                }
            }
            Outcome::Auth { status } => {
                // Stays due: the pause, not the entry's schedule, holds it back, so a new key
                // sends everything at once.
                self.outbox
                    .retry_later(QUEUE, &entry.id, now_ms(), Some(status), &format!("HTTP {status}: key refused"))
                    .await?;
                return Ok(true);
            }
            Outcome::TooLarge => {
                let mut body = entry.body.clone();
                if entry.last_status != Some(413) && crate::shrink_report(&mut body) {
                    self.outbox.replace_body(QUEUE, &entry.id, &body).await?;
                    self.outbox.retry_later(QUEUE, &entry.id, now_ms(), Some(413), "HTTP 413: shrunk").await?;
                } else {
                    self.bury(&entry.id, Some(413), "too_large").await?;
                    tracing::warn!(id = %entry.id, "openpipe: report too large even after shrinking; dead-lettered");
                }
            }
            Outcome::Permanent { status, error } => {
                self.bury(&entry.id, status, &error).await?;
                tracing::warn!(id = %entry.id, kind = %entry.kind, status = ?status, error = %error, "openpipe: refused; dead-lettered");
            }
        }
        Ok(false)
    }

    /// Moves entries older than `DELIVERY_MAX_AGE_HOURS` to the dead letters; returns the rest.
    async fn expire(&self, v: &ReportingValves, due: Vec<Entry>) -> Result<Vec<Entry>, sluice_sdk::StoreError> {
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

    /// Sleeps until `until_ms`, a wake-up, or shutdown.
    async fn wait(&self, until_ms: Option<u64>) {
        // Nothing due: look again soon anyway. Reports can appear without waking this worker:
        // queued by another replica that died before sending them, or written late by the
        // store (held while a shared database was away).
        let wait = until_ms.map(|t| Duration::from_millis(t.saturating_sub(now_ms()))).unwrap_or(IDLE_LOOK);
        tokio::select! {
            _ = tokio::time::sleep(wait.min(self.tuning.probe_interval)) => {}
            _ = self.wake.notified() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    pub async fn run(self) {
        // The settings an auth pause applies to, and when to probe next.
        let mut paused: Option<(String, u64)> = None;
        let mut warned_no_key = false;
        while !self.shutdown.is_cancelled() {
            let v = self.valves.get();
            if v.OPENPIPE_API_KEY.is_empty() {
                if !warned_no_key {
                    tracing::warn!("openpipe: no OPENPIPE_API_KEY; queued reports wait until one is set");
                    warned_no_key = true;
                }
                self.wait(None).await;
                continue;
            }
            warned_no_key = false;
            let fp = fingerprint(&v);
            if let Some((paused_fp, _)) = &paused {
                if *paused_fp != fp {
                    tracing::info!("openpipe: key or base URL changed; resuming deliveries");
                    paused = None;
                }
            }
            let now = now_ms();
            let due = match self.outbox.due(QUEUE, now, BATCH).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "openpipe: outbox unreadable; retrying");
                    self.wait(Some(now + 1000)).await;
                    continue;
                }
            };
            let mut due = match self.expire(&v, due).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "openpipe: outbox write failed; retrying");
                    self.wait(Some(now + 1000)).await;
                    continue;
                }
            };
            if let Some((_, probe_at)) = &paused {
                if now < *probe_at {
                    self.wait(Some(*probe_at)).await;
                    continue;
                }
                due.truncate(1);
            }
            if due.is_empty() {
                let next = self.outbox.next_due_at(QUEUE).await.ok().flatten();
                self.wait(next).await;
                continue;
            }
            let this = &self;
            let results: Vec<(Entry, Outcome)> = futures_util::stream::iter(due)
                .map(|e| {
                    let v = &v;
                    async move {
                        let o = this.attempt(v, &e).await;
                        (e, o)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let mut refused = false;
            let mut delivered = 0usize;
            for (entry, outcome) in results {
                if matches!(outcome, Outcome::Delivered | Outcome::PartlyDelivered(_)) {
                    delivered += 1;
                }
                match self.settle(&v, &entry, outcome).await {
                    Ok(auth) => refused |= auth,
                    Err(e) => tracing::warn!(error = %e, "openpipe: outbox write failed after an attempt"),
                }
            }
            if refused {
                if paused.is_none() {
                    tracing::warn!(
                        "openpipe: OpenPipe refused the key (401/403); deliveries paused until the key changes"
                    );
                }
                paused = Some((fp, now_ms() + self.tuning.probe_interval.as_millis() as u64));
            } else if delivered > 0 {
                if paused.take().is_some() {
                    tracing::info!("openpipe: key accepted again; resuming deliveries");
                }
                tracing::info!(delivered, "openpipe: reports delivered");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_capped() {
        let t = Tuning::default();
        for attempts in 0..30 {
            let d = backoff(&t, attempts);
            assert!(d <= t.backoff_cap);
            assert!(d <= Duration::from_secs(1 << attempts.min(20)));
        }
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, Duration::from_secs(3600)), Some(Duration::from_secs(7)));
        h.insert(reqwest::header::RETRY_AFTER, reqwest::header::HeaderValue::from_static("99999"));
        assert_eq!(retry_after(&h, Duration::from_secs(3600)), Some(Duration::from_secs(3600)));
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_str(&date).unwrap_or(reqwest::header::HeaderValue::from_static("0")),
        );
        let wait = retry_after(&h, Duration::from_secs(3600)).unwrap_or_default();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_status_and_message_only() {
        assert_eq!(
            error_text(400, r#"{"message":"Failed to parse tags","code":"BAD_REQUEST"}"#),
            "HTTP 400: Failed to parse tags"
        );
        assert_eq!(error_text(502, ""), "HTTP 502");
    }
}

/// Fuzzing what OpenPipe (or whatever answers at its address) can send back: any status, any
/// Retry-After, any body, and mutations of its real answers. Every answer has an outcome; the
/// worker never panics on one.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use sluice_sdk::fuzz::{arb_json, cases, mutate};

    fn body() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            arb_json().prop_map(|v| v.to_string()),
            mutate(json!({"status": "ok"})).prop_map(|v| v.to_string()),
            mutate(json!({"message": "Invalid API key", "code": "UNAUTHORIZED"})).prop_map(|v| v.to_string()),
            mutate(json!({"errors": {"object": "list", "data": [{"entry_index": 0, "message": "bad"}]}}))
                .prop_map(|v| v.to_string()),
        ]
    }

    fn tuning() -> Tuning {
        Tuning::default()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]
        #[test]
        fn every_answer_has_an_outcome(status in 100u16..600, retry_after in any::<String>(), text in body()) {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&retry_after) {
                headers.insert(reqwest::header::RETRY_AFTER, value);
            }
            let outcome = report_outcome((status, headers.clone(), text.clone()), &tuning());
            if let Outcome::Retry { after: Some(wait), .. } = outcome {
                prop_assert!(wait <= tuning().retry_after_cap);
            }
            let entries = vec![json!({"a": 1}), json!({"b": 2})];
            let refused = refused_entries(&text, &entries);
            prop_assert!(refused.len() <= entries.len() * 64);
            let _ = classify_status(status, &headers, &text, &tuning());
        }
    }
}
