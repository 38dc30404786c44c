//! Responses stream events → [`PipeEvent`]s (docs/manifold.md §5.3). A pure state
//! machine: one event in, zero or more pipe events out, so each mapping is unit-testable.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::{json, Map, Value};
use sluice_sdk::{ErrorKind, FinishReason, PipeEvent, PipelineError, Status, ToolCallDelta};

use crate::events::{self, EventKind};
use crate::models;
use crate::valves::ReasoningDisplay;

/// Options fixed for one answer.
#[derive(Debug, Clone)]
pub struct Options {
    pub status_updates: bool,
    pub reasoning_display: ReasoningDisplay,
    pub reasoning_model: bool,
    pub show_cost: bool,
    pub custom_pricing: Option<Value>,
}

/// What one upstream event means for the answer.
#[derive(Debug)]
pub enum Outcome {
    Continue(Vec<PipeEvent>),
    /// `response.completed` or `response.incomplete`: the caller stores the items, then sends `tail`.
    Finished {
        response: Value,
        tail: Vec<PipeEvent>,
    },
    Failed(PipelineError),
}

pub struct Converter {
    options: Options,
    tool_index: HashMap<u64, u32>,
    args_seen: HashSet<u32>,
    urls: HashSet<String>,
    started: Instant,
    any_status: bool,
    /// When the answer itself (text or a tool call) began: the end of the thinking.
    answer_began: Option<Instant>,
    /// Reasoning went out as `reasoning_content`, which Open WebUI shows with its own
    /// "Thought for …" line.
    reasoning_shown: bool,
    /// An output item has started: from here on, a failure can no longer be retried silently.
    pub output_started: bool,
}

fn status(description: &str, extra: &[(&str, Value)]) -> PipeEvent {
    let mut s = Status::new(description, false);
    s.extra = extra.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect();
    PipeEvent::Status(s)
}

/// `OpenAI: <message> (<code>)` (§8.2).
pub fn upstream_message(message: &str, code: Option<&str>, request_id: Option<&str>) -> String {
    let details: Vec<String> =
        code.map(str::to_owned).into_iter().chain(request_id.map(|r| format!("request {r}"))).collect();
    if details.is_empty() {
        format!("OpenAI: {message}")
    } else {
        format!("OpenAI: {message} ({})", details.join("; "))
    }
}

/// Removes `utm_source=openai` from a cited URL, keeping other query parameters.
pub fn clean_url(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_string() };
    let kept: Vec<&str> = query.split('&').filter(|p| *p != "utm_source=openai").collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl Converter {
    pub fn new(options: Options) -> Self {
        Converter {
            options,
            tool_index: HashMap::new(),
            args_seen: HashSet::new(),
            urls: HashSet::new(),
            started: Instant::now(),
            any_status: false,
            answer_began: None,
            reasoning_shown: false,
            output_started: false,
        }
    }

    fn status(&mut self, event: PipeEvent) -> Vec<PipeEvent> {
        if self.options.status_updates {
            self.any_status = true;
            vec![event]
        } else {
            Vec::new()
        }
    }

    fn reasoning(&mut self, text: &str) -> Vec<PipeEvent> {
        match self.options.reasoning_display {
            ReasoningDisplay::ReasoningContent => {
                self.reasoning_shown = true;
                vec![PipeEvent::Reasoning(text.to_string())]
            }
            _ => Vec::new(),
        }
    }

    fn answer_begins(&mut self) {
        self.answer_began.get_or_insert_with(Instant::now);
    }

    /// A text delta's text (`response.output_text.delta`, `response.refusal.delta`).
    pub fn on_text(&mut self, text: String) -> PipeEvent {
        self.answer_begins();
        PipeEvent::Text(text)
    }

    pub fn on_event(&mut self, event: &Value) -> Outcome {
        let out = match EventKind::of(event) {
            EventKind::Created if self.options.reasoning_model => self.status(status("Thinking…", &[])),
            EventKind::OutputItemAdded => {
                self.output_started = true;
                let item = event.get("item").unwrap_or(&Value::Null);
                if str_of(item, "type") == Some("function_call") {
                    self.answer_begins();
                    let k = self.tool_index.len() as u32;
                    self.tool_index.insert(event.get("output_index").and_then(Value::as_u64).unwrap_or(u64::MAX), k);
                    vec![PipeEvent::ToolCall(ToolCallDelta {
                        index: k,
                        id: str_of(item, "call_id").map(str::to_owned),
                        name: str_of(item, "name").map(str::to_owned),
                        arguments: String::new(),
                    })]
                } else {
                    Vec::new()
                }
            }
            EventKind::ReasoningSummaryPartAdded => {
                if event.get("summary_index").and_then(Value::as_u64).unwrap_or(0) > 0 {
                    self.reasoning("\n\n")
                } else {
                    Vec::new()
                }
            }
            EventKind::ReasoningDelta => self.reasoning(str_of(event, "delta").unwrap_or_default()),
            EventKind::ReasoningSummaryDone if self.options.reasoning_display == ReasoningDisplay::Status => {
                let text = str_of(event, "text").unwrap_or_default();
                let title = text.split("**").nth(1).filter(|t| !t.trim().is_empty()).unwrap_or("Thinking…").to_string();
                self.status(status(&title, &[]))
            }
            EventKind::TextDelta => vec![self.on_text(str_of(event, "delta").unwrap_or_default().to_string())],
            EventKind::AnnotationAdded => {
                let a = event.get("annotation").unwrap_or(&Value::Null);
                match (str_of(a, "type"), str_of(a, "url")) {
                    (Some("url_citation"), Some(url)) => {
                        let url = clean_url(url);
                        if self.urls.insert(url.clone()) {
                            vec![PipeEvent::Annotations(vec![json!({"type": "url_citation", "url_citation": {
                                "url": url, "title": a.get("title").cloned().unwrap_or(Value::Null),
                                "start_index": a.get("start_index").cloned().unwrap_or(Value::Null),
                                "end_index": a.get("end_index").cloned().unwrap_or(Value::Null)}})])]
                        } else {
                            Vec::new()
                        }
                    }
                    _ => Vec::new(),
                }
            }
            EventKind::ArgumentsDelta => {
                let k = self.index_of(event);
                self.args_seen.insert(k);
                vec![PipeEvent::ToolCall(ToolCallDelta {
                    index: k,
                    arguments: str_of(event, "delta").unwrap_or_default().to_string(),
                    ..Default::default()
                })]
            }
            EventKind::ArgumentsDone => {
                let k = self.index_of(event);
                if self.args_seen.insert(k) {
                    vec![PipeEvent::ToolCall(ToolCallDelta {
                        index: k,
                        arguments: str_of(event, "arguments").unwrap_or_default().to_string(),
                        ..Default::default()
                    })]
                } else {
                    Vec::new()
                }
            }
            EventKind::PartialImage => {
                let n = event.get("partial_image_index").and_then(Value::as_u64).unwrap_or(0).saturating_add(1);
                self.status(status(&format!("Generating the image… (preview {n})"), &[]))
            }
            EventKind::OutputItemDone => self.item_done(event.get("item").unwrap_or(&Value::Null)),
            EventKind::Completed | EventKind::Incomplete => return self.finish(event),
            EventKind::Failed => {
                let (code, message) = events::failure(event).unwrap_or_default();
                let message = message.unwrap_or("the response failed");
                let mut e = PipelineError::upstream(upstream_message(message, code, None));
                e.code = code.map(str::to_owned);
                return Outcome::Failed(e);
            }
            EventKind::Error => {
                let (code, message) = events::failure(event).unwrap_or_default();
                let message = message.unwrap_or("stream error");
                let kind = if matches!(code, Some("rate_limit_exceeded" | "too_many_requests")) {
                    ErrorKind::RateLimited
                } else {
                    ErrorKind::Upstream
                };
                let mut e = PipelineError::new(kind, upstream_message(message, code, None));
                e.code = code.map(str::to_owned);
                return Outcome::Failed(e);
            }
            _ => {
                tracing::trace!(event = str_of(event, "type").unwrap_or_default(), "upstream event without an effect");
                Vec::new()
            }
        };
        Outcome::Continue(out)
    }

    fn index_of(&self, event: &Value) -> u32 {
        let output = event.get("output_index").and_then(Value::as_u64).unwrap_or(u64::MAX);
        self.tool_index.get(&output).copied().unwrap_or(0)
    }

    fn item_done(&mut self, item: &Value) -> Vec<PipeEvent> {
        match str_of(item, "type") {
            Some("web_search_call") => {
                let action = item.get("action").unwrap_or(&Value::Null);
                if str_of(action, "type") != Some("search") {
                    return Vec::new();
                }
                let query = action.get("query").cloned().unwrap_or(Value::Null);
                let mut out = self.status(status(
                    "Searching",
                    &[("action", "web_search_queries_generated".into()), ("queries", json!([query.clone()]))],
                ));
                if let Some(Value::Array(sources)) = action.get("sources") {
                    let urls: Vec<Value> = sources.iter().filter_map(|s| s.get("url").cloned()).collect();
                    let mut count = Status::new("", false);
                    count.extra = Map::from_iter([
                        ("action".to_string(), Value::from("sources_retrieved")),
                        ("count".to_string(), Value::from(urls.len())),
                    ]);
                    out.extend(self.status(PipeEvent::Status(count)));
                    out.extend(self.status(status(
                        "Reading through {{count}} sites",
                        &[("action", "web_search".into()), ("query", query), ("urls", Value::Array(urls))],
                    )));
                }
                out
            }
            Some("image_generation_call") => match str_of(item, "result") {
                // Only what makes a data URL: the upstream's text goes into a page (a red team's
                // upstream named the format `<script>`).
                Some(b64)
                    if !b64.is_empty() && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) =>
                {
                    let format = str_of(item, "output_format")
                        .filter(|f| matches!(*f, "png" | "jpeg" | "webp" | "gif"))
                        .unwrap_or("png");
                    vec![PipeEvent::Images(vec![format!("data:image/{format};base64,{b64}")])]
                }
                _ => Vec::new(),
            },
            Some("mcp_call") => self.status(status("Let me query the MCP server…", &[])),
            Some("file_search_call") => self.status(status("Let me skim those files…", &[])),
            Some("local_shell_call") => self.status(status("Let me run that command…", &[])),
            _ => Vec::new(),
        }
    }

    fn finish(&mut self, event: &Value) -> Outcome {
        let response = event.get("response").cloned().unwrap_or(Value::Null);
        let reason = if EventKind::of(event) == EventKind::Incomplete {
            match response.get("incomplete_details").and_then(|d| str_of(d, "reason")) {
                Some("content_filter") => FinishReason::ContentFilter,
                _ => FinishReason::Length,
            }
        } else if self.tool_index.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        };
        let mut tail = vec![PipeEvent::Finish(reason)];
        if let Some(usage) = self.usage(&response) {
            tail.push(PipeEvent::Usage(usage));
        }
        if self.any_status {
            // One truthful line: the time to the answer's first output, not the whole
            // response; and none of ours when Open WebUI shows its own beside the reasoning.
            let thinking = self.answer_began.unwrap_or_else(Instant::now).duration_since(self.started);
            let mut done = if self.options.reasoning_model {
                Status::new(format!("Thought for {:.1} seconds", thinking.as_secs_f64()), true)
            } else {
                Status::new("Done", true)
            };
            done.hidden = self.reasoning_shown;
            tail.push(PipeEvent::Status(done));
        }
        Outcome::Finished { response, tail }
    }

    /// Responses usage → chat names (§5.8), plus an estimated cost.
    fn usage(&self, response: &Value) -> Option<Map<String, Value>> {
        let u = response.get("usage").filter(|u| u.is_object())?;
        let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = n(u.get("input_tokens"));
        let output = n(u.get("output_tokens"));
        let cached = n(u.get("input_tokens_details").and_then(|d| d.get("cached_tokens")));
        let reasoning = n(u.get("output_tokens_details").and_then(|d| d.get("reasoning_tokens")));
        let mut map = Map::new();
        map.insert("prompt_tokens".into(), input.into());
        map.insert("completion_tokens".into(), output.into());
        map.insert(
            "total_tokens".into(),
            u.get("total_tokens").and_then(Value::as_u64).unwrap_or(input.saturating_add(output)).into(),
        );
        map.insert("prompt_tokens_details".into(), json!({"cached_tokens": cached}));
        map.insert("completion_tokens_details".into(), json!({"reasoning_tokens": reasoning}));
        if self.options.show_cost {
            let served = str_of(response, "model").unwrap_or_default();
            if let Some(cost) = models::cost(served, self.options.custom_pricing.as_ref(), input, cached, output) {
                map.insert("cost".into(), cost.get("total_cost").cloned().unwrap_or(Value::Null));
                map.insert("cost_details".into(), cost);
            }
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cited_urls_lose_only_the_utm_parameter() {
        assert_eq!(clean_url("https://a.com/x?utm_source=openai"), "https://a.com/x");
        assert_eq!(clean_url("https://a.com/x?q=1&utm_source=openai"), "https://a.com/x?q=1");
        assert_eq!(clean_url("https://a.com/x"), "https://a.com/x");
    }

    #[test]
    fn upstream_messages_name_code_and_request() {
        assert_eq!(
            upstream_message("boom", Some("server_error"), Some("req_1")),
            "OpenAI: boom (server_error; request req_1)"
        );
        assert_eq!(upstream_message("boom", None, None), "OpenAI: boom");
    }

    #[test]
    fn an_image_becomes_a_data_url_only_of_what_one_may_hold() {
        let options = Options {
            status_updates: false,
            reasoning_display: ReasoningDisplay::None,
            reasoning_model: false,
            show_cost: false,
            custom_pricing: None,
        };
        let image = |format: &str, b64: &str| {
            let item = serde_json::json!({"type": "image_generation_call", "output_format": format, "result": b64});
            Converter::new(options.clone()).item_done(&item)
        };
        let urls = |events: Vec<PipeEvent>| -> Vec<String> {
            events.into_iter().flat_map(|e| if let PipeEvent::Images(urls) = e { urls } else { Vec::new() }).collect()
        };
        assert_eq!(urls(image("webp", "iVBO+/w==")), ["data:image/webp;base64,iVBO+/w=="]);
        assert_eq!(urls(image("<script>", "iVBO")), ["data:image/png;base64,iVBO"]);
        assert!(urls(image("png", "iVBO\"><script>")).is_empty());
    }
}

/// Fuzzing the converter with upstream events: the recorded transcripts with events mutated,
/// dropped or duplicated, and arbitrary JSON. Whatever OpenAI (or a proxy) sends, an event
/// gives events, an end or an error; never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use sluice_sdk::fuzz::{arb_json, cases, mutate};

    const TRANSCRIPTS: [&str; 9] = [
        include_str!("../../../tests/api/fixtures/responses-api/1_plain_text.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/2_reasoning_summary.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/3a_function_call.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/3b_function_call_followup.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/4_web_search.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/5a_failed.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/5b_incomplete.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/5c_error_event.sse"),
        include_str!("../../../tests/api/fixtures/responses-api/5d_error_event_nested.sse"),
    ];

    fn events(transcript: &str) -> Value {
        let mut reader = crate::sse::SseReader::default();
        let mut data = reader.push(transcript.as_bytes()).unwrap_or_default();
        data.extend(reader.flush());
        Value::Array(data.iter().filter_map(|d| serde_json::from_str(d).ok()).collect())
    }

    fn run(events: &Value, options: Options) {
        let mut converter = Converter::new(options);
        for event in events.as_array().into_iter().flatten() {
            match converter.on_event(event) {
                Outcome::Continue(_) => {}
                Outcome::Finished { .. } | Outcome::Failed(_) => return,
            }
        }
    }

    fn options(flags: u8) -> Options {
        Options {
            status_updates: flags & 1 != 0,
            reasoning_display: match (flags >> 1) % 3 {
                0 => ReasoningDisplay::ReasoningContent,
                1 => ReasoningDisplay::Status,
                _ => ReasoningDisplay::None,
            },
            reasoning_model: flags & 8 != 0,
            show_cost: flags & 16 != 0,
            custom_pricing: (flags & 32 != 0).then(|| serde_json::json!({"gpt-4.1": {"input": 2.0, "output": "x"}})),
        }
    }

    fn mutated_transcript() -> impl Strategy<Value = Value> {
        (0..TRANSCRIPTS.len()).prop_flat_map(|i| mutate(events(TRANSCRIPTS[i])))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]
        #[test]
        fn mutated_transcripts_never_panic(events in mutated_transcript(), flags in any::<u8>()) {
            run(&events, options(flags));
        }

        #[test]
        fn arbitrary_events_never_panic(events in proptest::collection::vec(arb_json(), 0..12), flags in any::<u8>()) {
            run(&Value::Array(events), options(flags));
        }
    }
}
