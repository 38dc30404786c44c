//! The inlet's half of a turn (docs/reporting.md §4.1): what is kept of each chat request until
//! its outlet, within bounds of number and bytes. A background task is kept until this server
//! answers it instead (§5.4), since Open WebUI sends no outlet for one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_sdk::digest::sha256_hex;

use crate::runtime::Runtime;
use crate::valves::ReportingValves;
use crate::{now_ms, request, shrink, str_at, OpenPipeReporting};

pub(crate) const CAPTURE_NS: &str = "openpipe_reporting.capture";
/// Background-task inlets waiting for the completion this server answers for them.
pub(crate) const TASK_NS: &str = "openpipe_reporting.task";
/// Inlets of API callers' chats (no chat or message id) waiting for their completion, with
/// `REPORT_API_CHATS_FROM_ANSWERS` (Open WebUI before 0.10 sends them no outlet).
pub(crate) const API_NS: &str = "openpipe_reporting.api_chat";
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

/// What the inlet keeps for the outlet (§4.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Capture {
    pub(crate) session_id: Option<String>,
    #[serde(default)]
    pub(crate) chat_id: Option<String>,
    #[serde(default)]
    pub(crate) message_id: Option<String>,
    pub(crate) user_id: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) model_id: String,
    pub(crate) base_model_id: Option<String>,
    pub(crate) requested_at_ms: u64,
    /// Monotonic time is only comparable within one process run.
    pub(crate) run_id: String,
    pub(crate) mono_ms: u64,
    pub(crate) request: Map<String, Value>,
    /// What was taken out of the request to keep the capture within the report size
    /// (`images_omitted`, `truncated`), for the report's metadata.
    #[serde(default)]
    pub(crate) shrunk: Vec<(String, String)>,
}

/// A message's text as the reporting filter reads it: the parts of one message joined as one
/// text.
pub(crate) fn message_text(message: &Value) -> String {
    sluice_sdk::message::text(message.get("content"), "").into_owned()
}

/// Identifies one model request across the inlet and `/chat/completions`: who, which model,
/// and the messages' roles and texts (Open WebUI strips `metadata` in between, so no id is
/// shared).
pub(crate) fn task_key(user_id: Option<&str>, model: &str, messages: &[Value]) -> String {
    let texts: Vec<Value> = messages
        .iter()
        .map(|m| json!([m.get("role").and_then(Value::as_str).unwrap_or_default(), message_text(m)]))
        .collect();
    sha256_hex(json!([user_id.unwrap_or_default(), model, texts]).to_string().as_bytes())
}

impl OpenPipeReporting {
    /// Keeps what the outlet (or, for a task, the answer) will need of this request.
    pub(crate) async fn keep(&self, rt: &Runtime, v: &ReportingValves, body: &Value, user: Option<&Value>) {
        if let Some((namespace, key, capture)) = self.capture(rt, v, body, user) {
            let ttl = if namespace == CAPTURE_NS { Duration::from_secs(v.PENDING_TTL_SECONDS) } else { TASK_TTL };
            let value = json!(capture);
            let bytes = shrink::serialized_len(&value) as u64;
            match rt.store.put(namespace, &key, &value, ttl).await {
                Ok(()) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    let counter =
                        if namespace == CAPTURE_NS { &self.counters.captured } else { &self.counters.task_captures };
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
        let ids = meta_str("chat_id").zip(meta_str("message_id"));
        let (namespace, key) = match (&task, ids) {
            // Open WebUI never sends an outlet for a background task (§5.4): its answer is
            // matched later, when this server answers the same request (`observe_completion`).
            (Some(_), _) => (TASK_NS, task_key(user_id.as_deref(), &model_id, messages)),
            (None, Some((chat, message))) => (CAPTURE_NS, format!("{chat}|{message}")),
            // An API caller's chat: Open WebUI 0.10 and later send its outlet (reported
            // without timing, as ids are missing); before 0.10 only the answer tells (§5.6).
            (None, None) if v.REPORT_API_CHATS_FROM_ANSWERS => {
                (API_NS, task_key(user_id.as_deref(), &model_id, messages))
            }
            (None, None) => return None,
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
            request: request::sanitize_request(obj, v.PARSE_OPENWEBUI_BLOCKS),
        };
        // A capture never holds more than its report could carry: what the report would lose
        // to its size limit goes now, or one client could store gigabytes a minute.
        let max = v.MAX_REPORT_BYTES as usize;
        if shrink::serialized_len(&capture.request) > max {
            if let Some(messages) = capture.request.get_mut("messages").and_then(Value::as_array_mut) {
                let (omitted, truncated) = shrink::shrink_messages(messages);
                if omitted > 0 {
                    capture.shrunk.push(("images_omitted".into(), omitted.to_string()));
                }
                if truncated {
                    capture.shrunk.push(("truncated".into(), "true".into()));
                }
            }
            if shrink::serialized_len(&capture.request) > max.saturating_mul(2) {
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
}
