//! The OpenPipe reporting filter: the inlet captures each chat request, the outlet turns the
//! finished turn into OpenPipe reports and queues them durably, and a background worker
//! delivers them. The filter never edits the conversation and never waits on the network.
//! Spec: docs/reporting.md.

mod blocks;
mod counters;
mod delivery;
mod dpo;
mod report;
pub mod valves;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_sdk::digest::sha256_hex;
use sluice_sdk::outbox::{KvWrite, NewEntry};
use sluice_sdk::{
    async_trait, DynValves, KvStore, Outbox, Pipeline, PipelineContext, PipelineError, PipelineKind, ServedCompletion,
    StoreError, ValvesCell,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub use crate::counters::Counters;
pub use crate::delivery::Tuning;
use crate::report::{Head, Turn};
pub use crate::valves::ReportingValves;

/// The module id, also the outbox queue's name.
pub const PIPELINE_ID: &str = "openpipe_reporting";
pub const QUEUE: &str = PIPELINE_ID;
const CAPTURE_NS: &str = "openpipe_reporting.capture";
const REPORTED_NS: &str = "openpipe_reporting.reported";
/// Background-task inlets waiting for the completion this server answers for them.
const TASK_NS: &str = "openpipe_reporting.task";
/// Live captures kept at most (§4.1), in number and in bytes; the outlet-only path still
/// reports an evicted turn.
const MAX_CAPTURES: usize = 10_000;
const MAX_CAPTURE_BYTES: u64 = 256 << 20;
/// Captures are trimmed every this many, or once this many bytes were captured since the last
/// trim, whichever comes first.
const TRIM_EVERY: u64 = 100;
const TRIM_EVERY_BYTES: u64 = 16 << 20;
/// Open WebUI asks for the task's answer right after its inlet.
const TASK_TTL: Duration = Duration::from_secs(300);
/// How long a reported turn's content hash is kept for dedupe (§4.4).
const REPORTED_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Outlets of one chat are serialised (dedupe and sibling lists are read-modify-write);
/// different chats run in parallel on different stripes.
const STRIPES: usize = 64;

pub use sluice_sdk::clock::unix_ms as now_ms;

/// What the inlet keeps for the outlet (§4.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Capture {
    session_id: Option<String>,
    #[serde(default)]
    chat_id: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
    user_id: Option<String>,
    task: Option<String>,
    model_id: String,
    base_model_id: Option<String>,
    requested_at_ms: u64,
    /// Monotonic time is only comparable within one process run.
    run_id: String,
    mono_ms: u64,
    request: Map<String, Value>,
    /// What was taken out of the request to keep the capture within the report size
    /// (`images_omitted`, `truncated`), for the report's metadata.
    #[serde(default)]
    shrunk: Vec<(String, String)>,
}

/// One turn as the regeneration bookkeeping sees it.
struct DpoTurn<'a> {
    chat_id: &'a str,
    session: Option<&'a str>,
    messages: &'a [Value],
    history: &'a [Value],
    interaction: &'a str,
    message_id: &'a str,
    answer: &'a blocks::Answer,
    request: &'a Map<String, Value>,
    model: &'a str,
    user_id: Option<&'a str>,
}

/// Metadata to add, dataset entries to submit, records to write.
#[derive(Default)]
struct DpoOutcome {
    tail: Vec<(String, String)>,
    entries: Vec<Value>,
    kv: Vec<KvWrite>,
}

/// A record of ours; one that no longer parses counts as absent.
async fn load<T: serde::de::DeserializeOwned>(
    rt: &Runtime,
    namespace: &str,
    key: &str,
) -> Result<Option<T>, StoreError> {
    Ok(rt.store.get(namespace, key).await?.and_then(|v| serde_json::from_value(v).ok()))
}

/// A record that could not be read is treated as absent, with a warning.
fn degrade<T>(read: Result<Option<T>, StoreError>, what: &str) -> Option<T> {
    read.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "openpipe: {what} unreadable; reporting without it");
        None
    })
}

/// Dedupe record (§4.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reported {
    hash: String,
    revision: u32,
}

struct Runtime {
    store: Arc<dyn KvStore>,
    outbox: Arc<dyn Outbox>,
    wake: Arc<Notify>,
    run_id: String,
    started: Instant,
    stripes: Vec<tokio::sync::Mutex<()>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Bytes captured since the captures were last trimmed.
    captured_bytes: std::sync::atomic::AtomicU64,
}

impl Runtime {
    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn stripe(&self, chat: &str) -> &tokio::sync::Mutex<()> {
        let h = chat.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
        &self.stripes[(h % STRIPES as u64) as usize]
    }
}

pub struct OpenPipeReporting {
    valves: ValvesCell<ReportingValves>,
    counters: Arc<Counters>,
    tuning: Tuning,
    runtime: OnceLock<Arc<Runtime>>,
}

impl Default for OpenPipeReporting {
    fn default() -> Self {
        Self::with_tuning(Tuning::default())
    }
}

fn str_at<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A message's text as the reporting filter reads it: the parts of one message joined as one
/// text.
fn message_text(message: &Value) -> String {
    sluice_sdk::message::text(message.get("content"), "").into_owned()
}

/// Identifies one model request across the inlet and `/chat/completions`: who, which model,
/// and the messages' roles and texts (Open WebUI strips `metadata` in between, so no id is
/// shared).
fn task_key(user_id: Option<&str>, model: &str, messages: &[Value]) -> String {
    let texts: Vec<Value> = messages
        .iter()
        .map(|m| json!([m.get("role").and_then(Value::as_str).unwrap_or_default(), message_text(m)]))
        .collect();
    sha256_hex(json!([user_id.unwrap_or_default(), model, texts]).to_string().as_bytes())
}

/// Shrinks a queued report after a 413 (§7.6): images out, long texts cut. Returns whether
/// anything changed.
pub fn shrink_report(body: &mut Value) -> bool {
    let Some(messages) = body.pointer_mut("/reqPayload/messages").and_then(Value::as_array_mut) else { return false };
    let (omitted, truncated) = report::shrink_messages(messages);
    if omitted == 0 && !truncated {
        return false;
    }
    for path in ["/reqPayload/metadata", "/tags"] {
        if let Some(meta) = body.pointer_mut(path).and_then(Value::as_object_mut) {
            if omitted > 0 {
                meta.insert("images_omitted".into(), Value::String(omitted.to_string()));
            }
            if truncated {
                meta.insert("truncated".into(), Value::String("true".into()));
            }
        }
    }
    true
}

impl OpenPipeReporting {
    pub fn new() -> Self {
        Self::default()
    }

    /// With other delivery timings (tests shorten backoff and probe intervals).
    pub fn with_tuning(tuning: Tuning) -> Self {
        OpenPipeReporting {
            valves: ValvesCell::default(),
            counters: Arc::new(Counters::default()),
            tuning,
            runtime: OnceLock::new(),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    fn capture(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        body: &Value,
        user: Option<&Value>,
    ) -> Option<(&'static str, String, Capture)> {
        let obj = body.as_object()?;
        let messages = obj.get("messages")?.as_array()?;
        let meta = obj.get("metadata").and_then(Value::as_object);
        let meta_str = |k: &str| meta.and_then(|m| str_at(m, k)).map(str::to_string);
        let user_id =
            user.and_then(|u| u.get("id")).and_then(Value::as_str).map(str::to_string).or(meta_str("user_id"));
        let task = meta_str("task");
        let model_id = str_at(obj, "model").unwrap_or("unknown").to_string();
        let (namespace, key) = match &task {
            // Open WebUI never sends an outlet for a background task (§5.4): its answer is
            // matched later, when this server answers the same request (`observe_completion`).
            Some(_) => (TASK_NS, task_key(user_id.as_deref(), &model_id, messages)),
            None => (CAPTURE_NS, format!("{}|{}", meta_str("chat_id")?, meta_str("message_id")?)),
        };
        let base_model_id = meta
            .and_then(|m| m.get("model"))
            .and_then(|m| m.pointer("/info/base_model_id"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let mut capture = Capture {
            shrunk: Vec::new(),
            session_id: meta_str("session_id"),
            user_id,
            task,
            chat_id: meta_str("chat_id"),
            message_id: meta_str("message_id"),
            model_id,
            base_model_id,
            requested_at_ms: now_ms(),
            run_id: rt.run_id.clone(),
            mono_ms: rt.mono_ms(),
            request: report::sanitize_request(obj, v.PARSE_OPENWEBUI_BLOCKS),
        };
        // A capture never holds more than its report could carry: what the report would lose
        // to its size limit goes now, or one client could store gigabytes a minute.
        let max = v.MAX_REPORT_BYTES as usize;
        if report::serialized_len(&capture.request) > max {
            if let Some(messages) = capture.request.get_mut("messages").and_then(Value::as_array_mut) {
                let (omitted, truncated) = report::shrink_messages(messages);
                if omitted > 0 {
                    capture.shrunk.push(("images_omitted".into(), omitted.to_string()));
                }
                if truncated {
                    capture.shrunk.push(("truncated".into(), "true".into()));
                }
            }
            if report::serialized_len(&capture.request) > max.saturating_mul(2) {
                self.counters.captures_too_large.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return None;
            }
        }
        Some((namespace, key, capture))
    }

    async fn trim_captures(&self, rt: &Runtime, namespace: &str) {
        match rt.store.trim(namespace, MAX_CAPTURES, MAX_CAPTURE_BYTES).await {
            Ok(0) => {}
            Ok(evicted) => {
                self.counters.captures_evicted.fetch_add(evicted as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    evicted,
                    "openpipe: captures waiting for an outlet exceeded {MAX_CAPTURES} or {} MiB; the oldest were dropped",
                    MAX_CAPTURE_BYTES >> 20
                );
            }
            Err(e) => tracing::warn!(error = %e, "openpipe: captures could not be trimmed"),
        }
    }

    /// Reports a background task whose inlet was captured, with the answer this server gave.
    async fn report_task(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        served: &ServedCompletion,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let user_id = served.request.get("user").and_then(|u| u.get("id")).and_then(Value::as_str);
        let messages = served.request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let key = task_key(user_id, &served.model, messages);
        let Some(capture) = load::<Capture>(rt, TASK_NS, &key).await? else { return Ok(()) };
        let kv = vec![KvWrite::Delete { namespace: TASK_NS.into(), key }];
        let task = capture.task.clone().unwrap_or_else(|| "unknown".into());
        let interaction = if v.INCLUDE_INTERACTION_CLASSIFICATION { task.clone() } else { "unknown".into() };
        let allowed = v.reports(&interaction);
        if !allowed {
            self.counters.skipped_by_type.fetch_add(1, Relaxed);
            return rt.outbox.enqueue(QUEUE, Vec::new(), kv).await;
        }
        let message = served.response.pointer("/choices/0/message").cloned().unwrap_or(Value::Null);
        let content = message.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
        let message_id = capture.message_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let model = v.reported_model(&capture.model_id, capture.base_model_id.as_deref());
        let head = Head {
            capture: "inlet_completion",
            interaction: &interaction,
            user_id: capture.user_id.as_deref(),
            chat_id: capture.chat_id.as_deref(),
            message_id: &message_id,
            model_id: &capture.model_id,
            inference_ms: Some(served.finished_at_ms.saturating_sub(capture.requested_at_ms)),
            tools: BTreeSet::new(),
            calls: 0,
        }
        .pairs(v);
        let turn = Turn {
            request: capture.request.clone(),
            model,
            // The chat's own answer uses `chatcmpl-<message id>`; the task gets its own id.
            message_id: format!("{message_id}-{task}"),
            head,
            tail: Vec::new(),
            custom: v.custom(),
            answer: blocks::Answer { texts: vec![content], calls: Vec::new() },
            usage: served.response.get("usage").and_then(|u| report::usage_of(&json!({ "usage": u }))),
            revision: 0,
            requested_at_ms: capture.requested_at_ms,
            received_at_ms: served.finished_at_ms,
            shrunk: capture.shrunk.clone(),
        };
        let count = self.queue_reports(rt, v, &turn, Vec::new(), kv).await?;
        self.counters.task_reports.fetch_add(count, Relaxed);
        Ok(())
    }

    /// Regeneration bookkeeping of one turn (§10): confirms open pairs this turn continues
    /// from, adds the answer to its siblings, and says what to tag and what to submit.
    async fn dpo_turn(&self, rt: &Runtime, v: &ReportingValves, t: DpoTurn<'_>) -> Result<DpoOutcome, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = DpoOutcome::default();
        let chat = dpo::chat_key(t.chat_id, t.session);
        let parent = dpo::parent_key(t.messages).unwrap_or_default();
        let history_ids: Vec<&str> = t.history.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).collect();
        let window = Duration::from_secs(v.DPO_WINDOW_HOURS * 3600);
        let put = |key: String, namespace: &str, value: Value| KvWrite::Put {
            namespace: namespace.into(),
            key,
            value,
            ttl: window,
        };

        // Confirmation: this turn continues from one sibling of an open pair.
        let mut pending: dpo::PendingList = load(rt, dpo::PENDING_NS, &chat).await?.unwrap_or_default();
        let before = pending.parents.len();
        let mut still_open = Vec::new();
        for p in std::mem::take(&mut pending.parents) {
            let list_key = format!("{chat}|{p}");
            let Some(mut list) = load::<dpo::SiblingList>(rt, dpo::SIBLINGS_NS, &list_key).await? else { continue };
            let Some(chosen) = list.chosen(&history_ids).cloned() else {
                still_open.push(p);
                continue;
            };
            self.counters.dpo_pairs_confirmed.fetch_add(1, Relaxed);
            if v.AUTO_SUBMIT_DPO_PAIRS {
                let rejected = list.rejected(&chosen);
                out.entries.extend(dpo::entries(t.chat_id, &p, &chosen, &rejected, v.DPO_SPLIT));
            }
            list.pending = false;
            out.kv.push(put(list_key, dpo::SIBLINGS_NS, json!(list)));
        }
        pending.parents = still_open;

        // Detection: this answer joins its siblings.
        if matches!(t.interaction, "chat_message" | "function_calling") {
            let list_key = format!("{chat}|{parent}");
            let mut list: dpo::SiblingList = load(rt, dpo::SIBLINGS_NS, &list_key).await?.unwrap_or_default();
            let mut final_messages = t.request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
            final_messages.extend(report::call_pairs(t.answer, t.answer.calls.len()));
            let sibling = dpo::Sibling {
                message_id: t.message_id.to_string(),
                text: dpo::normalize(&t.answer.texts),
                final_text: dpo::strip_think(t.answer.final_text()),
                has_tool_calls: !t.answer.calls.is_empty(),
                model: t.model.to_string(),
                request_messages: final_messages,
                user_id: t.user_id.map(str::to_string),
            };
            if let Some(regen) = list.add(sibling) {
                self.counters.dpo_pairs_detected.fetch_add(1, Relaxed);
                out.tail.push(("regenerated_from".into(), regen.regenerated_from));
                out.tail.push(("regeneration_index".into(), regen.index.to_string()));
                if !pending.parents.contains(&parent) {
                    pending.parents.push(parent.clone());
                }
            }
            out.kv.push(put(list_key, dpo::SIBLINGS_NS, json!(list)));
        }
        if before > 0 || !pending.parents.is_empty() {
            out.kv.push(put(chat, dpo::PENDING_NS, json!(pending)));
        }
        Ok(out)
    }

    /// Writes a turn's reports (plus `extra` work and `kv` changes) to the outbox in one
    /// transaction and wakes the worker; a report over `MAX_REPORT_BYTES` even after shrinking
    /// is kept as a dead letter (§7.6). Returns how many reports were queued.
    async fn queue_reports(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        turn: &Turn,
        extra: Vec<NewEntry>,
        kv: Vec<KvWrite>,
    ) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut entries = Vec::new();
        let mut too_large = Vec::new();
        for b in turn.reports(v.MAX_REPORT_BYTES as usize) {
            let id = uuid::Uuid::new_v4().to_string();
            if b.too_large {
                too_large.push(id.clone());
            }
            entries.push(NewEntry { id, kind: delivery::KIND_REPORT.into(), target: "/report".into(), body: b.body });
        }
        let reports = entries.len() as u64;
        entries.extend(extra);
        let count = entries.len() as u64;
        let sizes: Vec<usize> = if v.DEBUG_LOGGING {
            entries.iter().map(|e| report::serialized_len(&e.body)).collect()
        } else {
            Vec::new()
        };
        rt.outbox.enqueue(QUEUE, entries, kv).await?;
        for id in &too_large {
            rt.outbox.dead_letter(QUEUE, id, None, "too_large").await?;
            self.counters.dead_lettered.fetch_add(1, Relaxed);
            tracing::warn!(id = %id, "openpipe: report larger than MAX_REPORT_BYTES after shrinking; dead-lettered");
        }
        self.counters.queued.fetch_add(count, Relaxed);
        if v.DEBUG_LOGGING {
            tracing::debug!(message_id = %turn.message_id, ?sizes, "openpipe: report queued");
        }
        rt.wake.notify_one();
        Ok(reports)
    }

    /// Builds and queues the reports of one finished turn (§5.2). Errors are the store's.
    async fn report_turn(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        body: &Value,
        user: Option<&Value>,
        received_at_ms: u64,
        received_mono: u64,
    ) -> Result<(), sluice_sdk::StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(obj) = body.as_object() else { return Ok(()) };
        let messages = obj.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let Some((last, history)) =
            messages.split_last().filter(|(m, _)| m.get("role").and_then(Value::as_str) == Some("assistant"))
        else {
            self.counters.outlet_without_answer.fetch_add(1, Relaxed);
            return Ok(());
        };
        let chat_id = str_at(obj, "chat_id").unwrap_or_default().to_string();
        let given_id = str_at(obj, "id").map(str::to_string);
        let ids_known = !chat_id.is_empty() && given_id.is_some();
        let message_id = given_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let key = format!("{chat_id}|{message_id}");

        let _serial = rt.stripe(&chat_id).lock().await;
        let mut kv = Vec::new();
        // A store that cannot be read (a shared database away) costs the timing and the dedupe,
        // not the report: it goes out as an outlet-only report, deduplicated by its id.
        let capture: Option<Capture> =
            if ids_known { degrade(load(rt, CAPTURE_NS, &key).await, "capture") } else { None };
        if capture.is_some() {
            kv.push(KvWrite::Delete { namespace: CAPTURE_NS.into(), key: key.clone() });
        }

        // The answer as the model produced it.
        let content = blocks::strip_markers(&message_text(last)).into_owned();
        let output = last.get("output").and_then(Value::as_array);
        let answer = if v.PARSE_OPENWEBUI_BLOCKS {
            let parsed = blocks::parse(&content, &message_id);
            match output {
                Some(items) if !content.contains("<details") => {
                    blocks::parse_output(items, &message_id).unwrap_or(parsed)
                }
                _ => parsed,
            }
        } else {
            blocks::Answer { texts: vec![content.clone()], calls: Vec::new() }
        };

        // Dedupe and revisions (§5.5).
        let hash = sha256_hex(
            format!("{content}\n{}", output.map(|o| Value::Array(o.clone())).unwrap_or_default()).as_bytes(),
        );
        let mut revision = 0;
        if ids_known {
            let previous: Option<Reported> = degrade(load(rt, REPORTED_NS, &key).await, "dedupe record");
            if let Some(prev) = previous {
                if prev.hash == hash {
                    self.counters.duplicates.fetch_add(1, Relaxed);
                    if !kv.is_empty() {
                        rt.outbox.enqueue(QUEUE, Vec::new(), kv).await?;
                    }
                    return Ok(());
                }
                revision = prev.revision + 1;
            }
        }

        // The request: captured at the inlet, or rebuilt from the outlet (§5.3).
        let (request, requested_at_ms, inference_ms) = match &capture {
            Some(c) => {
                let elapsed = if c.run_id == rt.run_id {
                    Some(received_mono.saturating_sub(c.mono_ms))
                } else {
                    received_at_ms.checked_sub(c.requested_at_ms).filter(|d| *d <= 86_400_000)
                };
                (c.request.clone(), c.requested_at_ms, elapsed)
            }
            None => {
                let mut req = Map::new();
                if let Some(m) = obj.get("model") {
                    req.insert("model".into(), m.clone());
                }
                req.insert("messages".into(), Value::Array(history.to_vec()));
                let started = last
                    .get("timestamp")
                    .and_then(Value::as_f64)
                    .filter(|t| *t > 0.0)
                    .map(|t| (t * 1000.0) as u64)
                    .unwrap_or(received_at_ms);
                (report::sanitize_request(&req, v.PARSE_OPENWEBUI_BLOCKS), started, None)
            }
        };
        let model_id = str_at(obj, "model")
            .map(str::to_string)
            .or_else(|| capture.as_ref().map(|c| c.model_id.clone()))
            .unwrap_or_else(|| "unknown".into());
        let model = v.reported_model(&model_id, capture.as_ref().and_then(|c| c.base_model_id.as_deref()));

        // Classification and selective reporting (§6).
        let task = capture.as_ref().and_then(|c| c.task.clone());
        let interaction = report::classify(v.INCLUDE_INTERACTION_CLASSIFICATION, task.as_deref(), &request, &answer);
        let allowed = v.reports(&interaction);
        if !allowed {
            self.counters.skipped_by_type.fetch_add(1, Relaxed);
            if !kv.is_empty() {
                rt.outbox.enqueue(QUEUE, Vec::new(), kv).await?;
            }
            return Ok(());
        }
        if ids_known {
            let record = json!(Reported { hash, revision });
            kv.push(KvWrite::Put { namespace: REPORTED_NS.into(), key: key.clone(), value: record, ttl: REPORTED_TTL });
        }

        // Metadata (§7.3).
        let user_id = user
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| capture.as_ref().and_then(|c| c.user_id.clone()));
        let mut tools: BTreeSet<String> = report::request_tools(&request);
        tools.extend(answer.calls.iter().map(|c| c.name.clone()));
        let head = Head {
            capture: if capture.is_some() { "inlet_outlet" } else { "outlet_only" },
            interaction: &interaction,
            user_id: user_id.as_deref(),
            chat_id: Some(&chat_id),
            message_id: &message_id,
            model_id: &model_id,
            inference_ms,
            tools,
            calls: answer.calls.len(),
        }
        .pairs(v);

        // DPO bookkeeping (§10).
        let dpo = if v.ENABLE_DPO_DETECTION && ids_known {
            let session =
                capture.as_ref().and_then(|c| c.session_id.clone()).or(str_at(obj, "session_id").map(str::to_string));
            let turn = DpoTurn {
                chat_id: &chat_id,
                session: session.as_deref(),
                messages,
                history,
                interaction: &interaction,
                message_id: &message_id,
                answer: &answer,
                request: &request,
                model: &model,
                user_id: user_id.as_deref(),
            };
            // Sibling lists are rewritten whole: unreadable, they are left alone this turn.
            self.dpo_turn(rt, v, turn).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "openpipe: store unreadable; regeneration bookkeeping skipped this turn");
                DpoOutcome::default()
            })
        } else {
            DpoOutcome::default()
        };
        kv.extend(dpo.kv);

        // Reports (§7) and the one write that makes them durable (§5.2 step 8).
        let turn = Turn {
            request,
            model,
            message_id: message_id.clone(),
            head,
            tail: dpo.tail,
            custom: v.custom(),
            answer,
            usage: report::usage_of(last),
            revision,
            requested_at_ms,
            received_at_ms,
            shrunk: capture.as_ref().map(|c| c.shrunk.clone()).unwrap_or_default(),
        };
        let dataset_jobs: Vec<NewEntry> = dpo
            .entries
            .chunks(100)
            .map(|chunk| NewEntry {
                id: uuid::Uuid::new_v4().to_string(),
                kind: delivery::KIND_DATASET.into(),
                target: v.DPO_DATASET_NAME.clone(),
                body: json!({"entries": chunk}),
            })
            .collect();
        self.queue_reports(rt, v, &turn, dataset_jobs, kv).await?;
        self.counters.reported.fetch_add(1, Relaxed);
        Ok(())
    }
}

#[async_trait]
impl Pipeline for OpenPipeReporting {
    fn id(&self) -> &str {
        PIPELINE_ID
    }

    fn name(&self) -> &str {
        "OpenPipe Reporting"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }

    async fn on_startup(&self, ctx: &PipelineContext) -> Result<(), PipelineError> {
        let wake = Arc::new(Notify::new());
        let rt = Arc::new(Runtime {
            store: Arc::clone(&ctx.store),
            outbox: Arc::clone(&ctx.outbox),
            wake: Arc::clone(&wake),
            run_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            worker: Mutex::new(None),
            captured_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(self.valves.get().TIMEOUT_SECONDS.min(5)))
            .user_agent(concat!("sluice-openpipe-reporting/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| PipelineError::internal(format!("cannot build the HTTP client: {e}")))?;
        match ctx.outbox.stats(QUEUE).await {
            Ok(s) => tracing::info!(queued = s.depth, dead_letters = s.dead, "openpipe: outbox resumed"),
            Err(e) => tracing::warn!(error = %e, "openpipe: outbox stats unavailable"),
        }
        if !self.valves.get().active() {
            tracing::warn!("openpipe_reporting: disabled or no OPENPIPE_API_KEY; the filter passes requests through");
        }
        let worker = delivery::Worker {
            outbox: Arc::clone(&ctx.outbox),
            store: Arc::clone(&ctx.store),
            valves: self.valves.clone(),
            http,
            wake,
            counters: Arc::clone(&self.counters),
            tuning: self.tuning,
            shutdown: ctx.shutdown.clone(),
        };
        let handle = tokio::spawn(worker.run());
        if let Ok(mut slot) = rt.worker.lock() {
            *slot = Some(handle);
        }
        let _ = self.runtime.set(rt);
        Ok(())
    }

    async fn on_valves_updated(&self) -> Result<(), PipelineError> {
        if let Some(rt) = self.runtime.get() {
            // A new key or base URL lifts an auth pause at once (§13.3).
            rt.wake.notify_one();
        }
        if !self.valves.get().active() {
            tracing::warn!("openpipe_reporting: disabled or no OPENPIPE_API_KEY; the filter passes requests through");
        }
        Ok(())
    }

    async fn on_shutdown(&self) {
        let Some(rt) = self.runtime.get() else { return };
        rt.wake.notify_one();
        let handle = rt.worker.lock().ok().and_then(|mut h| h.take());
        if let Some(mut handle) = handle {
            // Attempts in flight get a little time; what is left stays queued for the next start.
            if tokio::time::timeout(self.tuning.shutdown_wait, &mut handle).await.is_err() {
                handle.abort();
                tracing::info!("openpipe: deliveries still in flight at shutdown stay queued");
            }
        }
    }

    async fn inlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return Ok(body) };
        if let Some((namespace, key, capture)) = self.capture(rt, &v, &body, user.as_ref()) {
            let ttl = if namespace == TASK_NS { TASK_TTL } else { Duration::from_secs(v.PENDING_TTL_SECONDS) };
            let value = json!(capture);
            let bytes = report::serialized_len(&value) as u64;
            match rt.store.put(namespace, &key, &value, ttl).await {
                Ok(()) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    let counter =
                        if namespace == TASK_NS { &self.counters.task_captures } else { &self.counters.captured };
                    let n = counter.fetch_add(1, Relaxed) + 1;
                    let since = rt.captured_bytes.fetch_add(bytes, Relaxed) + bytes;
                    // Bounded (§4.1): checked every 100 captures or 16 MiB, the oldest go first.
                    if n % TRIM_EVERY == 0 || since >= TRIM_EVERY_BYTES {
                        rt.captured_bytes.store(0, Relaxed);
                        self.trim_captures(rt, namespace).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "openpipe: capture not stored; the outlet will report what it can")
                }
            }
        }
        Ok(body)
    }

    async fn observe_completion(&self, served: &ServedCompletion) {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return };
        if let Err(e) = self.report_task(rt, &v, served).await {
            self.counters.report_build_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "openpipe: task report not queued");
        }
    }

    async fn outlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return Ok(body) };
        let (received_at, received_mono) = (now_ms(), rt.mono_ms());
        if let Err(e) = self.report_turn(rt, &v, &body, user.as_ref(), received_at, received_mono).await {
            self.counters.report_build_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ids = body
                .as_object()
                .map(|o| (str_at(o, "chat_id").unwrap_or_default(), str_at(o, "id").unwrap_or_default()));
            let (chat_id, message_id) = ids.unwrap_or_default();
            tracing::warn!(chat_id, message_id, error = %e, "openpipe: report not queued");
        }
        Ok(body)
    }
}
