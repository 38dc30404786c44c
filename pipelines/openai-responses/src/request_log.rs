//! The per-answer log the Function showed its users as a "Logs" citation (`LOG_LEVEL`): what
//! the pipe did with a request (model, input, tools, replay, upstream answers, retries, usage),
//! with times. Built only from names, counts and codes: never message text, never a key
//! (every line passes the valves' redaction too). Only for streamed answers to Open WebUI,
//! where a citation has a place.

use std::time::Instant;

use serde_json::{json, Value};
use sluice_sdk::{Dialect, PipeEvent, PipeRequest};

use crate::valves::{ChatLogLevel, ResponsesValves};

pub struct RequestLog {
    started: Instant,
    debug: bool,
    lines: Vec<String>,
}

impl RequestLog {
    /// A log for this request, when `LOG_LEVEL` asks for one and `LOG_USERS` names its user
    /// (by id or e-mail; empty names everyone).
    pub fn for_request(valves: &ResponsesValves, request: &PipeRequest) -> Option<RequestLog> {
        if valves.LOG_LEVEL == ChatLogLevel::Off || !request.stream || request.dialect != Dialect::OpenWebUi {
            return None;
        }
        let user = request.user.as_ref();
        let field = |k: &str| user.and_then(|u| u.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
        let (id, email) = (field("id"), field("email"));
        let users = valves.LOG_USERS.as_deref().unwrap_or_default();
        let listed = users.is_empty()
            || users
                .iter()
                .any(|u| (!id.is_empty() && *u == id) || (!email.is_empty() && u.eq_ignore_ascii_case(&email)));
        listed.then(|| RequestLog {
            started: Instant::now(),
            debug: valves.LOG_LEVEL == ChatLogLevel::Debug,
            lines: Vec::new(),
        })
    }

    pub fn info(&mut self, line: impl AsRef<str>) {
        let ms = self.started.elapsed().as_millis();
        self.lines.push(format!("+{ms} ms  {}", line.as_ref()));
    }

    pub fn debug(&mut self, line: impl AsRef<str>) {
        if self.debug {
            self.info(line);
        }
    }

    /// What was asked of OpenAI, by names and counts only.
    pub fn request(&mut self, body: &Value, degraded: bool, attempt: u32) {
        let log = self;
        let input = body.get("input").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let reasoning = input.iter().filter(|i| i.get("type").and_then(Value::as_str) == Some("reasoning")).count();
        let tools: Vec<String> = body
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("?");
                match t.get("name").or_else(|| t.get("server_label")).and_then(Value::as_str) {
                    Some(name) => format!("{kind}:{name}"),
                    None => kind.to_string(),
                }
            })
            .collect();
        let mode = if degraded { ", replayed as plain text after OpenAI refused the stored items" } else { "" };
        log.info(format!(
            "request {}: {} input items ({reasoning} encrypted reasoning){mode}; tools: {}",
            attempt + 1,
            input.len(),
            if tools.is_empty() { "none".to_string() } else { tools.join(", ") }
        ));
        let keys: Vec<&str> = body.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default();
        log.debug(format!("request fields: {}", keys.join(", ")));
        if let Some(r) = body.get("reasoning") {
            log.debug(format!("reasoning: {r}"));
        }
    }

    /// How the response ended, with its usage.
    pub fn finish(&mut self, response: &Value) {
        let log = self;
        let status = response.get("status").and_then(Value::as_str).unwrap_or("?");
        let usage = response.get("usage");
        let n = |p: &str| usage.and_then(|u| u.pointer(p)).and_then(Value::as_u64).unwrap_or(0);
        let items: Vec<&str> = response
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("type").and_then(Value::as_str))
            .collect();
        log.info(format!(
            "response {status}: output {}; tokens in {} (cached {}), out {} (reasoning {})",
            if items.is_empty() { "none".to_string() } else { items.join(", ") },
            n("/input_tokens"),
            n("/input_tokens_details/cached_tokens"),
            n("/output_tokens"),
            n("/output_tokens_details/reasoning_tokens")
        ));
    }

    /// The log as an Open WebUI source ("Logs"), redacted.
    pub fn into_event(self, valves: &ResponsesValves) -> PipeEvent {
        let text = self.lines.join("\n");
        let text = valves.redact(sluice_sdk::PipelineError::internal(text)).message;
        PipeEvent::Source(json!({
            "source": {"name": "Logs", "id": "openai_responses-log"},
            "document": [text],
            "metadata": [{"source": "Logs", "name": "Logs"}],
        }))
    }
}
