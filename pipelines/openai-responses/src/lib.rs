//! The OpenAI Responses manifold: several OpenAI models behind one pipe. Open WebUI's chat
//! requests become `POST {BASE_URL}/responses` (streaming); the event stream becomes chat
//! chunks and Open WebUI events. Spec: docs/manifold.md.

mod answer;
mod clients;
mod convert;
mod events;
mod files;
mod model_list;
pub mod models;
mod replay;
mod request;
mod request_log;
mod sse;
mod tools;
mod upstream;
pub mod valves;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use sluice_sdk::{
    async_trait, CancellationToken, Dialect, DynValves, KvStore, PipeRequest, PipeStream, Pipeline, PipelineContext,
    PipelineError, PipelineKind, SubModel, ValvesCell,
};
use tokio::sync::Notify;

use crate::answer::{Answer, RecordPlan};
use crate::clients::{ClientSettings, Clients};
use crate::convert::Converter;
use crate::events::EventKind;
use crate::replay::Record;
use crate::request::{Context, Stash};
use crate::upstream::{Events, Failure};
pub use crate::valves::ResponsesValves;

/// The module id: models are `openai_responses.<model>`.
pub const PIPELINE_ID: &str = "openai_responses";

/// What exists only after start-up.
struct Runtime {
    store: Arc<dyn KvStore>,
    clients: Clients,
    /// Base model ids the upstream serves, from the last successful fetch.
    served: ArcSwap<Option<model_list::Fetched>>,
    refresh: Notify,
    shutdown: CancellationToken,
}

const MISSING_KEY: &str = "the OpenAI API key is not set: set OPENAI_API_KEY or the API_KEY valve of openai_responses";

#[derive(Default)]
pub struct OpenAIResponses {
    valves: ValvesCell<ResponsesValves>,
    runtime: OnceLock<Arc<Runtime>>,
    /// Whether the last valves had a key, so losing it is logged once.
    had_key: std::sync::atomic::AtomicBool,
    /// The models offered, kept between `GET /models` calls.
    listed: model_list::ModelList,
}

fn client_settings(valves: &ResponsesValves) -> ClientSettings {
    ClientSettings { connect_timeout: Duration::from_secs(valves.REQUEST_TIMEOUT_CONNECT_S) }
}

const MAX_MODEL_LIST_BYTES: usize = 4 << 20;

async fn fetch_models(client: &reqwest::Client, valves: &ResponsesValves) -> Result<HashSet<String>, String> {
    let url = format!("{}/models", valves.BASE_URL.trim_end_matches('/'));
    let resp = client
        .get(&url)
        .bearer_auth(valves.API_KEY.expose())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status().as_u16()));
    }
    // A list of models is tens of kilobytes; a proxy that answers more is not listing models.
    let mut stream = resp.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        if bytes.len() > MAX_MODEL_LIST_BYTES {
            return Err(format!("the model list is larger than {} MiB", MAX_MODEL_LIST_BYTES >> 20));
        }
    }
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let ids = body.get("data").and_then(Value::as_array).ok_or("no data list")?;
    Ok(ids.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).map(models::normalize).collect())
}

impl OpenAIResponses {
    pub fn new() -> Self {
        Self::default()
    }

    fn runtime(&self) -> Result<&Arc<Runtime>, PipelineError> {
        self.runtime.get().ok_or_else(|| PipelineError::internal("openai_responses has not started"))
    }

    /// Keeps the served-model list fresh; a failed fetch keeps the last good list (§3.1).
    async fn refresh_models(runtime: Arc<Runtime>, valves: ValvesCell<ResponsesValves>) {
        loop {
            let v = valves.get();
            if v.FETCH_MODELS && !v.API_KEY.is_empty() {
                let fetched = match runtime.clients.get() {
                    Ok(client) => fetch_models(&client, &v).await,
                    Err(e) => Err(e.message),
                };
                match fetched {
                    Ok(ids) => {
                        runtime.served.store(Arc::new(Some(model_list::Fetched { base_url: v.BASE_URL.clone(), ids })))
                    }
                    Err(e) => {
                        tracing::warn!(pipeline = PIPELINE_ID, error = %e, "model list fetch failed; keeping the last list")
                    }
                }
            } else {
                runtime.served.store(Arc::new(None));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(v.MODEL_FETCH_TTL_SECONDS)) => {}
                _ = runtime.refresh.notified() => {}
                _ = runtime.shutdown.cancelled() => return,
            }
        }
    }
}

/// An error as the chat shows it: the short message, and the technical detail too for an
/// Open WebUI admin when `ERROR_DETAILS_FOR_ADMINS` is on.
fn with_detail(
    mut error: PipelineError,
    detail: Option<String>,
    valves: &ResponsesValves,
    user: Option<&Value>,
) -> PipelineError {
    let admin = user.and_then(|u| u.get("role")).and_then(Value::as_str) == Some("admin");
    if let Some(detail) = detail.filter(|_| admin && valves.ERROR_DETAILS_FOR_ADMINS) {
        error.message = valves.redact(PipelineError::internal(format!("{} ({detail})", error.message))).message;
    }
    error
}

fn owner_of(body: &Map<String, Value>) -> String {
    request::user_id(body).unwrap_or_default().to_string()
}

/// Loads the records the assistant messages stand for (replay.rs: by their tool calls, their
/// text, or the markers of older chats).
async fn load_records(store: &dyn KvStore, messages: &[Value], owner: &str) -> HashMap<String, Record> {
    let mut out = HashMap::new();
    for m in messages.iter().filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant")) {
        for id in replay::lookup_keys(m, owner) {
            if out.contains_key(&id) {
                continue;
            }
            match store.get(replay::NAMESPACE, &id).await {
                Ok(Some(v)) => {
                    if let Some(r) = Record::from_value(&v) {
                        out.insert(id, r);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "replay record could not be read; replaying degraded"),
            }
        }
    }
    out
}

/// How the start of an upstream stream went.
enum Prefetch {
    /// The first output item (or the end) arrived: the answer can start.
    Ready,
    /// A failure event worth retrying came before any output.
    RetryableFailure,
    /// The stream broke before any output.
    Broken(PipelineError),
}

/// What is held back while waiting for the first output item, at most: OpenAI sends two or
/// three events before it. An upstream that sent a gigabyte of other events first had it all
/// held (1.6 GB of memory before the answer's first byte, found by a red team); past this the
/// answer starts, and only a failure before it is still retried.
const PREFETCH_EVENTS: usize = 256;
const PREFETCH_BYTES: usize = 4 << 20;

/// Reads up to the first output item into `into`, so a failure before any output can still
/// be retried without the user seeing anything.
async fn prefetch(events: &mut Events, into: &mut Vec<Value>) -> Prefetch {
    let from = events.data_bytes;
    loop {
        if into.len() >= PREFETCH_EVENTS || events.data_bytes - from >= PREFETCH_BYTES {
            return Prefetch::Ready;
        }
        match events.next().await {
            Ok(Some(ev)) => {
                let kind = EventKind::of(&ev);
                let output = kind == EventKind::OutputItemAdded;
                let terminal = kind.is_terminal();
                let retry = terminal && events::is_retryable(&ev);
                into.push(ev);
                if retry {
                    return Prefetch::RetryableFailure;
                }
                if output || terminal {
                    return Prefetch::Ready;
                }
            }
            Ok(None) => return Prefetch::Ready,
            Err(e) => return Prefetch::Broken(e),
        }
    }
}

#[async_trait]
impl Pipeline for OpenAIResponses {
    fn id(&self) -> &str {
        PIPELINE_ID
    }

    fn name(&self) -> &str {
        "OpenAI: "
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Manifold
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    /// The configured models the upstream serves; all of them when the fetch is off, failed,
    /// or matched nothing (custom proxies). Cheap: reads the cached list.
    fn sub_models(&self) -> Arc<[SubModel]> {
        self.listed.get(self.valves.get(), self.runtime.get().map(|r| r.served.load_full()))
    }

    /// Any id is served: unknown ones pass through without capability flags (§3.1).
    fn serves(&self, sub_id: &str) -> bool {
        !sub_id.trim().is_empty()
    }

    async fn on_startup(&self, ctx: &PipelineContext) -> Result<(), PipelineError> {
        let runtime = Arc::new(Runtime {
            store: Arc::clone(&ctx.store),
            clients: Clients::new(client_settings(&self.valves.get()))?,
            served: ArcSwap::from_pointee(None),
            refresh: Notify::new(),
            shutdown: ctx.shutdown.clone(),
        });
        if self.runtime.set(Arc::clone(&runtime)).is_err() {
            return Err(PipelineError::internal("openai_responses started twice"));
        }
        tokio::spawn(Self::refresh_models(runtime, self.valves.clone()));
        let has_key = !self.valves.get().API_KEY.is_empty();
        self.had_key.store(has_key, std::sync::atomic::Ordering::Relaxed);
        if !has_key {
            tracing::warn!("openai_responses: {MISSING_KEY}; every chat with its models is refused (503) until then");
        }
        Ok(())
    }

    async fn on_valves_updated(&self) -> Result<(), PipelineError> {
        let runtime = self.runtime()?;
        runtime.clients.replace(client_settings(&self.valves.get()))?;
        runtime.refresh.notify_one();
        let has_key = !self.valves.get().API_KEY.is_empty();
        if self.had_key.swap(has_key, std::sync::atomic::Ordering::Relaxed) && !has_key {
            tracing::warn!("openai_responses: {MISSING_KEY}");
        }
        Ok(())
    }

    /// The outlet is not overridden: it answers the body as it came.
    fn passes_through(&self, hook: sluice_sdk::Hook) -> bool {
        hook == sluice_sdk::Hook::Outlet
    }

    /// Copies what `/chat/completions` will not receive (Open WebUI pops `metadata`) into
    /// `body.sluice`, and takes over Open WebUI's web search toggle for capable models (§4.1).
    async fn inlet(&self, mut body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        let valves = self.valves.get();
        let Some(map) = body.as_object_mut() else { return Ok(body) };
        // Only this inlet writes `sluice`: one sent by the caller is not trusted.
        map.remove("sluice");
        let meta = map.get("metadata").cloned().unwrap_or(Value::Null);
        let mut stash = Map::new();
        for key in ["chat_id", "message_id", "session_id", "task"] {
            if let Some(v) = meta.get(key).filter(|v| !v.is_null()) {
                stash.insert(key.into(), v.clone());
            }
        }
        let model = map.get("model").and_then(Value::as_str).map(|m| {
            models::resolve_with(
                m.rsplit_once(&format!("{PIPELINE_ID}.")).map_or(m, |(_, s)| s),
                valves.declared_capabilities().as_ref(),
            )
        });
        let toggle = map.get("features").and_then(|f| f.get("web_search")).and_then(Value::as_bool).unwrap_or(false);
        if toggle && valves.WEB_SEARCH_FROM_TOGGLE && model.is_some_and(|m| m.caps.web_search) {
            stash.insert("web_search".into(), true.into());
            if let Some(Value::Object(features)) = map.get_mut("features") {
                features.insert("web_search".into(), false.into());
            }
        }
        let attached = files::stash_entries(map);
        if !attached.is_empty() {
            stash.insert("files".into(), Value::Array(attached));
        }
        if !stash.is_empty() {
            map.insert("sluice".into(), Value::Object(stash));
        }
        Ok(body)
    }

    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        let runtime = Arc::clone(self.runtime()?);
        let valves = self.valves.get();
        if valves.API_KEY.is_empty() {
            return Err(PipelineError::not_configured(MISSING_KEY));
        }
        let model = models::resolve_with(&request.model_id, valves.declared_capabilities().as_ref());
        if request.dialect == Dialect::OpenAi {
            // Open WebUI sends its admin's model settings as they are, and gets them dropped as
            // before; other clients asked for them and are told (docs/manifold.md §4.8).
            request::check_openai_params(&request.body)?;
        }
        let stash = Stash::from_body(&request.body);
        let owner = owner_of(&request.body);
        let task = stash.task.is_some();
        let mut log = request_log::RequestLog::for_request(&valves, &request).filter(|_| !task);
        let records = load_records(runtime.store.as_ref(), request.messages(), &owner).await;
        if let Some(log) = log.as_mut() {
            let preset =
                model.preset.as_ref().map(|p| format!(" with {}", Value::Object(p.clone()))).unwrap_or_default();
            let known =
                if model.known() { "" } else { " (unknown to the model table: no tools or reasoning parameters)" };
            log.info(format!("model {} → {}{preset}{known}", request.model_id, model.base));
            log.info(format!(
                "{} messages; {} earlier answers found in the replay store",
                request.messages().len(),
                records.len()
            ));
        }
        let keep_record = valves.ITEM_STORE_TTL_DAYS > 0 && !task;
        let client = runtime.clients.get()?;
        // Fetched once, before the first attempt: retries send the same files.
        // Open WebUI's users only: their id is what a file's owner is checked against.
        let attached = if model.caps.files && !task && request.dialect == Dialect::OpenWebUi {
            let asker = request.body.get("user").and_then(|u| u.get("id")).and_then(Value::as_str);
            files::parts(&valves, &files::from_stash(request.body.get("sluice")), asker).await
        } else {
            Vec::new()
        };
        if let Some(log) = log.as_mut().filter(|_| !attached.is_empty()) {
            log.info(format!("{} attached files sent to the model as files", attached.len()));
        }

        let mut degraded = false;
        let mut attempt = 0u32;
        // Whether the answer starts with a failure sluice already retried (then the caller
        // should not retry it again).
        let mut retries_spent = false;
        let (events, prefetched, conversion) = loop {
            let ctx = Context {
                valves: &valves,
                model: &model,
                records: &records,
                owner: &owner,
                stash: &stash,
                degraded,
                dialect: request.dialect,
            };
            let mut conversion = request::convert(&request.body, &ctx);
            files::attach(&mut conversion.body, &attached);
            if let Some(log) = log.as_mut() {
                log.request(&conversion.body, degraded, attempt);
            }
            let sent_at = std::time::Instant::now();
            let failure = match upstream::send(&client, &valves, &conversion.body).await {
                Ok(resp) => {
                    if let Some(log) = log.as_mut() {
                        let id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
                        log.info(format!(
                            "OpenAI answered HTTP {} in {} ms (request {id})",
                            resp.status().as_u16(),
                            sent_at.elapsed().as_millis()
                        ));
                    }
                    let mut events = Events::new(resp, Duration::from_secs(valves.STREAM_IDLE_TIMEOUT_S));
                    let mut prefetched = Vec::new();
                    match prefetch(&mut events, &mut prefetched).await {
                        Prefetch::Ready => break (events, prefetched, conversion),
                        Prefetch::RetryableFailure if attempt < valves.MAX_RETRIES => {
                            // The retry can ride this connection once its body's end is read.
                            events.finish();
                            Failure {
                                error: PipelineError::upstream("retryable stream failure"),
                                retryable: true,
                                delay: None,
                                replay: false,
                                detail: None,
                            }
                        }
                        // Out of retries: the converter reports the failure event in the stream.
                        Prefetch::RetryableFailure => {
                            retries_spent = valves.MAX_RETRIES > 0;
                            break (events, prefetched, conversion);
                        }
                        Prefetch::Broken(e) => {
                            Failure { error: e, retryable: true, delay: None, replay: false, detail: None }
                        }
                    }
                }
                Err(f) => f,
            };
            if failure.replay && !degraded {
                tracing::warn!(markers = records.len(), error = %failure.error, "upstream refused replayed items; retrying with degraded replay");
                degraded = true;
                continue;
            }
            if !failure.retryable {
                return Err(with_detail(failure.error.final_(), failure.detail, &valves, request.user.as_ref()));
            }
            if attempt >= valves.MAX_RETRIES {
                // Spent: a client that retries now multiplies the upstream calls.
                let error = if valves.MAX_RETRIES > 0 { failure.error.final_() } else { failure.error };
                return Err(with_detail(error, failure.detail, &valves, request.user.as_ref()));
            }
            let wait = upstream::backoff(attempt, failure.delay);
            if let Some(log) = log.as_mut() {
                log.info(format!(
                    "attempt {} failed: {}; retrying in {} ms",
                    attempt + 1,
                    failure.error.message,
                    wait.as_millis()
                ));
            }
            tracing::info!(attempt = attempt + 1, wait_ms = wait.as_millis() as u64, error = %failure.error, "retrying the upstream request");
            attempt += 1;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = request.cancel.cancelled() => return Err(PipelineError::upstream("the client went away")),
            }
        };

        let record = keep_record.then(|| RecordPlan {
            store: Arc::clone(&runtime.store),
            ttl: Duration::from_secs(u64::from(valves.ITEM_STORE_TTL_DAYS) * 86_400),
            owner: owner.clone(),
            chat_id: stash.chat_id.clone(),
            owui_model: request.model.clone(),
            model: model.base.clone(),
            encrypted_reasoning: conversion
                .body
                .get("include")
                .and_then(Value::as_array)
                .is_some_and(|i| i.iter().any(|v| v == "reasoning.encrypted_content")),
            tool_outputs: conversion.tool_outputs.clone(),
        });
        let converter = Converter::new(convert::Options {
            status_updates: valves.STATUS_UPDATES && request.stream,
            reasoning_display: valves.REASONING_DISPLAY,
            reasoning_model: model.caps.reasoning,
            show_cost: valves.SHOW_USAGE_COST,
            custom_pricing: valves.custom_pricing(),
        });
        let answer = Answer { events, prefetched, converter, retries_spent, valves: Arc::clone(&valves), record, log };
        Ok(answer::stream(answer))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `events` as an upstream's event stream.
    fn stream_of(events: &[String]) -> Events {
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        Events::new(reqwest::Response::from(http::Response::new(body)), std::time::Duration::from_secs(5))
    }

    #[tokio::test]
    async fn what_is_held_before_the_first_output_is_bounded() {
        let progress = r#"{"type":"response.in_progress","response":{"id":"r"}}"#.to_string();
        let output = r#"{"type":"response.output_item.added","item":{"type":"message"}}"#.to_string();
        let mut events = vec![progress.clone(); 2 * PREFETCH_EVENTS];
        events.push(output.clone());
        let mut held = Vec::new();
        assert!(matches!(prefetch(&mut stream_of(&events), &mut held).await, Prefetch::Ready));
        assert_eq!(held.len(), PREFETCH_EVENTS);
        // By bytes too: a few large events.
        let large = format!(r#"{{"type":"response.in_progress","padding":"{}"}}"#, "x".repeat(1 << 20));
        let mut held = Vec::new();
        assert!(matches!(prefetch(&mut stream_of(&vec![large; 10]), &mut held).await, Prefetch::Ready));
        assert_eq!(held.len(), 4);
        // As OpenAI sends it: everything up to the first output item.
        let mut held = Vec::new();
        assert!(matches!(prefetch(&mut stream_of(&[progress, output]), &mut held).await, Prefetch::Ready));
        assert_eq!(held.len(), 2);
    }
}
