//! A mock OpenPipe on 127.0.0.1 speaking docs/reporting.md §12 and §15: bearer auth,
//! `/report` schema checks (no extra top-level keys, scalar tags), datasets and their entries
//! with per-entry errors, and switchable faults.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    /// A 429 with `Retry-After: <secs>`.
    RetryAfter(u64),
    /// `200 {"status": "error"}`.
    StatusError,
    /// Answer only after this long (past the client's timeout).
    Delay(Duration),
}

#[derive(Default)]
pub struct State {
    pub key: String,
    /// Every `/report` request that reached the mock, accepted or not.
    pub report_attempts: usize,
    /// Accepted report bodies, in arrival order.
    pub reports: Vec<Value>,
    /// Applied to the next `/report` requests, one each.
    pub faults: VecDeque<Fault>,
    /// While set, every `/report` gets this status.
    pub down: Option<u16>,
    /// The body sent with `down` (a JSON text); a generic error without it.
    pub down_body: Option<String>,
    /// While set, every accepted report is answered this much later (a slow receiver: the
    /// report is accepted when it arrives, whether or not the sender waits for the answer).
    pub slow: Option<Duration>,
    pub datasets: Vec<Value>,
    pub dataset_creates: usize,
    pub entries: Vec<(String, Value)>,
}

#[derive(Clone)]
pub struct MockOpenPipe {
    pub server: Arc<MockServer>,
    pub state: Arc<Mutex<State>>,
}

const REPORT_KEYS: &[&str] =
    &["requestedAt", "receivedAt", "reqPayload", "respPayload", "statusCode", "errorMessage", "tags"];
const ENTRY_KEYS: &[&str] =
    &["messages", "rejected_message", "tools", "tool_choice", "response_format", "split", "metadata"];

fn error(status: u16, message: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"message": message, "code": code}))
}

struct Responder(Arc<Mutex<State>>);

impl Responder {
    fn report(&self, state: &mut State, body: Value) -> ResponseTemplate {
        state.report_attempts += 1;
        let Some(obj) = body.as_object() else { return error(400, "body must be an object", "BAD_REQUEST") };
        if let Some(k) = obj.keys().find(|k| !REPORT_KEYS.contains(&k.as_str())) {
            return error(400, &format!("Unrecognized key: {k}"), "BAD_REQUEST");
        }
        if let Some(tags) = obj.get("tags") {
            let ok = tags.as_object().is_some_and(|t| t.values().all(|v| !v.is_object() && !v.is_array()));
            if !ok {
                return error(400, "Failed to parse tags", "BAD_REQUEST");
            }
        }
        if let Some(status) = state.down {
            if let Some(body) = &state.down_body {
                return ResponseTemplate::new(status).set_body_raw(body.clone(), "application/json");
            }
            return error(status, "unavailable", "INTERNAL_SERVER_ERROR");
        }
        match state.faults.pop_front() {
            Some(Fault::Status(s)) => return error(s, "injected failure", "INTERNAL_SERVER_ERROR"),
            Some(Fault::RetryAfter(secs)) => {
                return error(429, "rate limited", "TOO_MANY_REQUESTS")
                    .insert_header("retry-after", secs.to_string().as_str())
            }
            Some(Fault::StatusError) => return ResponseTemplate::new(200).set_body_json(json!({"status": "error"})),
            Some(Fault::Delay(d)) => {
                return ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})).set_delay(d)
            }
            None => {}
        }
        state.reports.push(body);
        let ok = ResponseTemplate::new(200).set_body_json(json!({"status": "ok"}));
        match state.slow {
            Some(d) => ok.set_delay(d),
            None => ok,
        }
    }

    fn entries(&self, state: &mut State, id: &str, body: Value) -> ResponseTemplate {
        if !state.datasets.iter().any(|d| d["id"] == id) {
            return error(404, "Dataset not found", "NOT_FOUND");
        }
        let entries = body.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
        if entries.is_empty() || entries.len() > 100 {
            return error(400, "entries must hold 1 to 100 items", "BAD_REQUEST");
        }
        let mut errors = Vec::new();
        let mut created = 0;
        for (i, e) in entries.iter().enumerate() {
            let bad_key = e.as_object().and_then(|o| o.keys().find(|k| !ENTRY_KEYS.contains(&k.as_str())).cloned());
            let bad_message = e["messages"].as_array().into_iter().flatten().find_map(|m| {
                let allowed: &[&str] =
                    &["role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"];
                m.as_object().and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())).cloned())
            });
            let rejected_ok =
                e.get("rejected_message").is_none_or(|r| r["content"].is_string() || r["content"].is_null());
            let message = match (bad_key, bad_message, rejected_ok) {
                (Some(k), _, _) => Some(format!("Unrecognized key: {k}")),
                (_, Some(k), _) => Some(format!("Unrecognized message key: {k}")),
                (_, _, false) => Some("rejected_message.content must be a string".to_string()),
                _ => None,
            };
            match message {
                Some(m) => {
                    errors.push(json!({"object": "dataset.entries.creation.error", "entry_index": i, "message": m}))
                }
                None => {
                    created += 1;
                    state.entries.push((id.to_string(), e.clone()));
                }
            }
        }
        ResponseTemplate::new(200).set_body_json(json!({
            "object": "dataset.entries.creation",
            "entries_created": created,
            "errors": {"object": "list", "data": errors}
        }))
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let auth = request.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if auth != format!("Bearer {}", state.key) {
            if request.url.path() == "/api/v1/report" {
                state.report_attempts += 1;
            }
            return error(401, "Invalid API key", "UNAUTHORIZED");
        }
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let path = request.url.path().strip_prefix("/api/v1").unwrap_or_default().to_string();
        let method = request.method.as_str();
        match (method, path.as_str()) {
            ("POST", "/report") => self.report(&mut state, body),
            ("GET", "/datasets") => {
                ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": state.datasets.clone()}))
            }
            ("POST", "/datasets") => {
                state.dataset_creates += 1;
                let d = json!({
                    "object": "dataset", "id": format!("ds_{}", state.dataset_creates), "name": body["name"],
                    "created": "2026-11-22T00:00:00Z", "updated": "2026-11-22T00:00:00Z",
                    "dataset_entry_count": 0, "fine_tune_count": 0
                });
                state.datasets.push(d.clone());
                ResponseTemplate::new(200).set_body_json(d)
            }
            ("POST", p) if p.starts_with("/datasets/") && p.ends_with("/entries") => {
                let id = p.trim_start_matches("/datasets/").trim_end_matches("/entries").to_string();
                self.entries(&mut state, &id, body)
            }
            ("DELETE", p) if p.starts_with("/datasets/") => {
                let id = p.trim_start_matches("/datasets/").to_string();
                let before = state.datasets.len();
                state.datasets.retain(|d| d["id"] != id.as_str());
                ResponseTemplate::new(200)
                    .set_body_json(json!({"id": id, "object": "dataset", "deleted": before != state.datasets.len()}))
            }
            _ => error(404, "Not found", "NOT_FOUND"),
        }
    }
}

impl MockOpenPipe {
    pub async fn start(key: &str) -> MockOpenPipe {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State { key: key.to_string(), ..State::default() }));
        Mock::given(any()).respond_with(Responder(Arc::clone(&state))).mount(&server).await;
        MockOpenPipe { server: Arc::new(server), state }
    }

    pub fn base_url(&self) -> String {
        format!("{}/api/v1", self.server.uri())
    }

    pub fn reports(&self) -> Vec<Value> {
        self.state.lock().unwrap().reports.clone()
    }

    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().report_attempts
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Waits until `n` reports were accepted (or fails after `secs`).
    pub async fn wait_for_reports(&self, n: usize, secs: u64) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let reports = self.reports();
            if reports.len() >= n {
                return reports;
            }
            assert!(tokio::time::Instant::now() < deadline, "{} of {n} reports arrived in {secs} s", reports.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
