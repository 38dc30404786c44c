//! Scripted stand-ins for real pipelines: a pipe, a filter and a manifold whose behaviour the
//! tests choose through the last user message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_sdk::schemars::JsonSchema;
use sluice_sdk::{
    async_trait, DynValves, FieldError, FinishReason, PipeEvent, PipeRequest, PipeStream, Pipeline, PipelineError,
    PipelineKind, Secret, Status, SubModel, ToolCallDelta, Valves, ValvesCell,
};
use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Fast,
    Slow,
}

#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(default, deny_unknown_fields)]
pub struct PipeValves {
    pub API_KEY: Secret,
    pub TEMPERATURE: f64,
    pub MAX: i64,
    pub ENABLED: bool,
    pub TAGS: Vec<String>,
    pub NOTE: Option<String>,
    pub MODE: Mode,
    /// A described valve
    pub DESCRIBED: String,
    pub BASE_URL: String,
}

impl Default for PipeValves {
    fn default() -> Self {
        Self {
            API_KEY: Secret::default(),
            TEMPERATURE: 0.7,
            MAX: 3,
            ENABLED: true,
            TAGS: vec!["a".into(), "b".into()],
            NOTE: None,
            MODE: Mode::Fast,
            DESCRIBED: "x".into(),
            BASE_URL: "https://api.example.com/v1".into(),
        }
    }
}

impl Valves for PipeValves {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if !(0.0..=2.0).contains(&self.TEMPERATURE) {
            errors.push(FieldError::new("TEMPERATURE", "must be between 0 and 2"));
        }
        if !self.BASE_URL.starts_with("http://") && !self.BASE_URL.starts_with("https://") {
            errors.push(FieldError::new("BASE_URL", "must be an http(s) URL"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn env_aliases() -> &'static [(&'static str, &'static str)] {
        &[("API_KEY", "SCRIPTED_API_KEY")]
    }
}

/// What the tests observe of the pipe from outside.
#[derive(Default)]
pub struct Probe {
    pub cancelled: Notify,
    pub cancellations: AtomicUsize,
    pub valves_updates: AtomicUsize,
    pub last_body: std::sync::Mutex<Option<Map<String, Value>>>,
}

pub struct ScriptedPipe {
    pub valves: ValvesCell<PipeValves>,
    pub probe: Arc<Probe>,
}

fn stream(events: Vec<PipeEvent>) -> PipeStream {
    futures_util::stream::iter(events).boxed()
}

#[async_trait]
impl Pipeline for ScriptedPipe {
    fn id(&self) -> &str {
        "scripted_pipe"
    }

    fn name(&self) -> &str {
        "Scripted Pipe"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Pipe
    }

    // No hooks: its inlet and outlet answer the bytes that came (the parsed path is the
    // scripted filter's).
    fn passes_through(&self, _hook: sluice_sdk::Hook) -> bool {
        true
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    async fn on_valves_updated(&self) -> Result<(), PipelineError> {
        self.probe.valves_updates.fetch_add(1, Ordering::SeqCst);
        if self.valves.get().DESCRIBED == "fail-hook" {
            return Err(PipelineError::internal("hook refused the new valves"));
        }
        Ok(())
    }

    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        *self.probe.last_body.lock().unwrap() = Some(request.body.clone());
        let said = request.user_message().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let usage = |p: u64, c: u64| {
            PipeEvent::Usage(Map::from_iter([
                ("prompt_tokens".to_string(), json!(p)),
                ("completion_tokens".to_string(), json!(c)),
                ("total_tokens".to_string(), json!(p + c)),
            ]))
        };
        Ok(match said.as_str() {
            "hello" => stream(vec![PipeEvent::text("Hello"), PipeEvent::text(" world"), usage(9, 2)]),
            "unicode" => stream(vec![PipeEvent::text("h\u{e9}llo \u{2713}")]),
            "error-before" => {
                return Err(PipelineError::new(sluice_sdk::ErrorKind::RateLimited, "Rate limit reached for gpt-x")
                    .with_code("rate_limit_exceeded"))
            }
            "error-mid" => stream(vec![
                PipeEvent::status("Working", false),
                PipeEvent::text("partial"),
                PipeEvent::Error(PipelineError::upstream("upstream exploded").with_code("server_error")),
                PipeEvent::text("never sent"),
            ]),
            "tools" => stream(vec![
                PipeEvent::ToolCall(ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    name: Some("get_weather".into()),
                    arguments: String::new(),
                }),
                PipeEvent::ToolCall(ToolCallDelta { index: 0, arguments: "{\"city\":".into(), ..Default::default() }),
                PipeEvent::ToolCall(ToolCallDelta { index: 0, arguments: "\"Paris\"}".into(), ..Default::default() }),
                PipeEvent::Finish(FinishReason::ToolCalls),
                usage(96, 18),
            ]),
            "events" => stream(vec![
                PipeEvent::Status(Status {
                    description: "Searching".into(),
                    done: false,
                    hidden: false,
                    extra: Map::from_iter([
                        ("action".to_string(), json!("web_search_queries_generated")),
                        ("queries".to_string(), json!(["q"])),
                    ]),
                }),
                PipeEvent::Reasoning("thinking...".into()),
                PipeEvent::text("Answer"),
                PipeEvent::Annotations(vec![
                    json!({"type": "url_citation", "url_citation": {"url": "https://example.com/a", "title": "A"}}),
                ]),
                PipeEvent::Source(
                    json!({"source": {"name": "Doc A", "url": "https://example.com/a"}, "document": ["snippet"], "metadata": [{"source": "https://example.com/a", "name": "Doc A"}]}),
                ),
                PipeEvent::Images(vec!["data:image/png;base64,AAAA".into()]),
                PipeEvent::Notification { level: "info".into(), content: "note".into() },
                PipeEvent::Finish(FinishReason::Length),
            ]),
            "empty" => stream(vec![]),
            "slow" => {
                let probe = Arc::clone(&self.probe);
                let cancel = request.cancel.clone();
                tokio::spawn(async move {
                    cancel.cancelled().await;
                    probe.cancellations.fetch_add(1, Ordering::SeqCst);
                    probe.cancelled.notify_waiters();
                });
                let tick = futures_util::stream::unfold(0u32, |n| async move {
                    if n > 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Some((PipeEvent::text(format!("tick{n} ")), n + 1))
                })
                .take(200);
                tick.boxed()
            }
            "pause" => {
                // Silent for 2.5 s, then done: exercises keep-alive pings.
                let s = futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    PipeEvent::text("late")
                });
                s.boxed()
            }
            _ => stream(vec![PipeEvent::text(format!("echo: {said}"))]),
        })
    }
}

#[allow(non_snake_case)]
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "sluice_sdk::schemars")]
#[serde(default, deny_unknown_fields)]
pub struct FilterValves {
    pub pipelines: Vec<String>,
    pub priority: i64,
    /// Requests whose last message contains this word are refused.
    pub BLOCK_WORD: Option<String>,
}

impl Default for FilterValves {
    fn default() -> Self {
        Self { pipelines: vec!["*".into()], priority: 0, BLOCK_WORD: None }
    }
}

impl Valves for FilterValves {}

pub struct ScriptedFilter {
    pub valves: ValvesCell<FilterValves>,
}

#[async_trait]
impl Pipeline for ScriptedFilter {
    fn id(&self) -> &str {
        "scripted_filter"
    }

    fn name(&self) -> &str {
        "Scripted Filter"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    async fn inlet(&self, mut body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        if let Some(word) = &self.valves.get().BLOCK_WORD {
            if body.to_string().contains(word.as_str()) {
                return Err(PipelineError::rejected("Blocked by policy"));
            }
        }
        body["inlet_seen"] = json!(true);
        Ok(body)
    }

    async fn outlet(&self, mut body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        body["outlet_done"] = json!(true);
        Ok(body)
    }
}

/// A filter without valves: `/models` must still carry `pipelines: []` and `priority: 0`.
pub struct BareFilter;

#[async_trait]
impl Pipeline for BareFilter {
    fn id(&self) -> &str {
        "bare_filter"
    }

    fn name(&self) -> &str {
        "Bare Filter"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }
}

pub struct ScriptedManifold;

#[async_trait]
impl Pipeline for ScriptedManifold {
    fn id(&self) -> &str {
        "scripted_manifold"
    }

    fn name(&self) -> &str {
        "Scripted: "
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Manifold
    }

    fn sub_models(&self) -> Arc<[SubModel]> {
        Arc::new([
            SubModel { id: "m-1".into(), name: "Model One".into(), info: None },
            SubModel {
                id: "m.2".into(),
                name: "Model Two".into(),
                info: Some(json!({"meta": {"description": "second"}})),
            },
        ])
    }

    async fn inlet(&self, mut body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        body["manifold_inlet"] = json!(true);
        Ok(body)
    }

    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        Ok(stream(vec![PipeEvent::text(format!("manifold model_id={}", request.model_id))]))
    }
}
