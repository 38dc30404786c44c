//! The OpenPipe side of delivery (docs/reporting.md §12): one attempt at a queued entry,
//! with the attempt timeout, and what OpenPipe's answer means for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_sdk::outbox::Entry;
use sluice_sdk::KvStore;

use super::Tuning;
use crate::counters::Counters;
use crate::valves::ReportingValves;

pub const KIND_REPORT: &str = "report";
pub const KIND_DATASET: &str = "dataset_entries";
/// Entries for a dataset that must exist already (`AUTO_CREATE_DATASET = false`).
pub const KIND_DATASET_EXISTING: &str = "dataset_entries_existing";
const DATASETS_NS: &str = "openpipe_reporting.datasets";

/// Most bytes of an answer read (a dataset list is the longest OpenPipe sends).
const MAX_REPLY_BYTES: usize = 4 << 20;

/// What one attempt came to.
#[derive(Debug)]
pub enum Outcome {
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

/// Sends queued entries to OpenPipe.
pub struct Client {
    pub http: reqwest::Client,
    /// Where dataset ids are cached.
    pub store: Arc<dyn KvStore>,
    pub counters: Arc<Counters>,
    pub tuning: Tuning,
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

impl Client {
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
    async fn dataset_id(&self, v: &ReportingValves, name: &str, create: bool) -> Result<String, Outcome> {
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
            None if !create => {
                return Err(Outcome::Permanent {
                    status: None,
                    error: format!("no OpenPipe dataset is named {name:?} (AUTO_CREATE_DATASET is off)"),
                })
            }
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

    async fn send_dataset_entries(&self, v: &ReportingValves, entry: &Entry, create: bool) -> Outcome {
        let name = entry.target.as_str();
        for round in 0..2 {
            let id = match self.dataset_id(v, name, create).await {
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
            let stored = (entries.len() - failed.len().min(entries.len())) as u64;
            let dpo =
                entries.iter().any(|e| e.pointer("/metadata/kind").and_then(Value::as_str) == Some("dpo_regeneration"));
            let counter =
                if dpo { &self.counters.dpo_pairs_submitted } else { &self.counters.dataset_entries_submitted };
            counter.fetch_add(stored, Ordering::Relaxed);
            return if failed.is_empty() { Outcome::Delivered } else { Outcome::PartlyDelivered(failed) };
        }
        Outcome::Permanent { status: Some(404), error: "dataset not found".into() }
    }

    pub async fn attempt(&self, v: &ReportingValves, entry: &Entry) -> Outcome {
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        match entry.kind.as_str() {
            KIND_REPORT => self.send_report(v, entry).await,
            KIND_DATASET => self.send_dataset_entries(v, entry, true).await,
            KIND_DATASET_EXISTING => self.send_dataset_entries(v, entry, false).await,
            other => Outcome::Permanent { status: None, error: format!("unknown outbox entry kind {other:?}") },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
