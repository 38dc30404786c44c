//! Open WebUI's chat-completions body → a Responses API request (docs/manifold.md §4).
//! Pure: the records behind markers are loaded by the caller and passed in.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};
use sluice_sdk::digest::sha256_hex;

use crate::models::Resolved;
use crate::replay::{self, Record};
use crate::tools;
use crate::valves::{CacheKeyMode, PersistReasoning, ReasoningSummary, ResponsesValves, Truncation};

/// What the pipe's own inlet stashed in the body (§4.1); every field optional.
#[derive(Debug, Default, Clone)]
pub struct Stash {
    pub chat_id: Option<String>,
    pub task: Option<String>,
    pub web_search: bool,
}

impl Stash {
    pub fn from_body(body: &Map<String, Value>) -> Stash {
        let s = body.get("sluice");
        let text =
            |k: &str| s.and_then(|s| s.get(k)).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
        Stash {
            chat_id: text("chat_id"),
            task: text("task"),
            web_search: s.and_then(|s| s.get("web_search")).and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

pub struct Context<'a> {
    pub valves: &'a ResponsesValves,
    pub model: &'a Resolved,
    /// Records found for the assistant messages (any owner: checked here).
    pub records: &'a HashMap<String, Record>,
    /// Who asks (Open WebUI's user id, or an OpenAI client's `user`): owner of new and
    /// replayable records.
    pub owner: &'a str,
    /// Open WebUI keeps getting what it got before; another client's own `service_tier` and
    /// `metadata` are passed on.
    pub dialect: sluice_sdk::Dialect,
    pub stash: &'a Stash,
    /// Replay nothing from records: the upstream refused replayed items (§7.5 "Recovery").
    pub degraded: bool,
}

/// The upstream body and what the new record must start with.
pub struct Conversion {
    pub body: Value,
    /// `function_call_output` items of this request's trailing tool messages.
    pub tool_outputs: Vec<Value>,
}

/// A chat message's text; its parts are separate blocks.
fn text_of(content: Option<&Value>) -> String {
    sluice_sdk::message::text(content, "\n").into_owned()
}

/// Parts dropped because the Responses API takes nothing like them; counted and logged once
/// per request (a request of 200,000 unknown parts must not write 200,000 log lines).
fn user_parts(content: Option<&Value>, task: bool, dropped: &mut Dropped) -> Vec<Value> {
    let clean = |t: &str| if task { replay::strip_markers(t) } else { t.to_string() };
    match content {
        Some(Value::String(s)) => vec![json!({"type": "input_text", "text": clean(s)})],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text" | "input_text") => {
                    Some(json!({"type": "input_text", "text": clean(p.get("text").and_then(Value::as_str).unwrap_or(""))}))
                }
                Some("image_url") => {
                    let (url, detail) = match p.get("image_url") {
                        Some(Value::String(u)) => (u.clone(), None),
                        Some(obj) => (
                            obj.get("url").and_then(Value::as_str).unwrap_or_default().to_string(),
                            obj.get("detail").and_then(Value::as_str).map(str::to_owned),
                        ),
                        None => return None,
                    };
                    Some(json!({"type": "input_image", "image_url": url, "detail": detail.unwrap_or_else(|| "auto".into())}))
                }
                Some("input_image" | "input_file") => Some(p.clone()),
                Some("file") => {
                    let f = p.get("file")?;
                    if let Some(id) = f.get("file_id").and_then(Value::as_str) {
                        Some(json!({"type": "input_file", "file_id": id}))
                    } else {
                        let mut part = Map::new();
                        part.insert("type".into(), "input_file".into());
                        if let Some(name) = f.get("filename") {
                            part.insert("filename".into(), name.clone());
                        }
                        part.insert("file_data".into(), f.get("file_data")?.clone());
                        Some(Value::Object(part))
                    }
                }
                other => {
                    dropped.parts += 1;
                    if dropped.first_part.is_none() {
                        dropped.first_part = Some(other.unwrap_or("(no type)").chars().take(40).collect());
                    }
                    None
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn function_call(tc: &Value) -> Option<Value> {
    let f = tc.get("function")?;
    let arguments = match f.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "{}".into(),
    };
    Some(
        json!({"type": "function_call", "call_id": tc.get("id")?.as_str()?, "name": f.get("name")?.as_str()?, "arguments": arguments}),
    )
}

fn item_type(item: &Value) -> Option<&str> {
    item.get("type").and_then(Value::as_str)
}

struct Input<'a> {
    ctx: &'a Context<'a>,
    items: Vec<Value>,
    calls: HashSet<String>,
    outputs: HashSet<String>,
    dropped: Dropped,
}

/// What the conversion left out, for one summary line.
#[derive(Default)]
struct Dropped {
    parts: usize,
    first_part: Option<String>,
    orphan_outputs: usize,
}

impl Input<'_> {
    fn push_items(&mut self, items: Vec<Value>) {
        for item in items {
            let call_id = item.get("call_id").and_then(Value::as_str).map(str::to_owned);
            // Open WebUI 0.12 sends earlier tool use as tool_calls/tool messages too, and a
            // record starts with the outputs of its round: each call and output goes in once.
            let fresh = match (item_type(&item), call_id) {
                (Some("function_call"), Some(id)) => self.calls.insert(id),
                (Some("function_call_output"), Some(id)) => self.outputs.insert(id),
                _ => true,
            };
            if fresh {
                self.items.push(item);
            }
        }
    }

    /// §4.3 assistant messages and §7.5 replay steps 2–5.
    fn assistant(&mut self, message: &Value, history: bool) {
        let raw = text_of(message.get("content"));
        let visible = replay::strip_markers(&replay::strip_reasoning(&raw));
        let valves = self.ctx.valves;
        let resolved: Vec<&Record> = replay::records_for(message, self.ctx.owner, self.ctx.records)
            .into_iter()
            .filter(|r| r.owner == self.ctx.owner)
            .collect();
        let full = !resolved.is_empty()
            && !self.ctx.degraded
            && resolved.iter().all(|r| r.model == self.ctx.model.base)
            && (!history || {
                let expected = replay::squash(&resolved.iter().map(|r| r.visible_text()).collect::<String>());
                expected.is_empty() || replay::squash(&visible).contains(&expected)
            });
        if full {
            let mut items = Vec::new();
            for record in &resolved {
                let keep_reasoning = record.encrypted_reasoning
                    && (!history || valves.PERSIST_REASONING_TOKENS == PersistReasoning::Conversation);
                if keep_reasoning {
                    items.extend(record.items.iter().cloned());
                } else {
                    items.extend(replay::deidentify(&record.items));
                }
            }
            if history && !valves.PERSIST_TOOL_RESULTS {
                items.retain(|i| i.get("role").is_some());
            }
            self.push_items(items);
        } else {
            if !resolved.is_empty() {
                tracing::debug!(resolved = resolved.len(), "degraded replay of an assistant message");
            }
            if !visible.trim().is_empty() {
                self.items.push(json!({"role": "assistant", "content": visible}));
            }
        }
        for tc in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let id = tc.get("id").and_then(Value::as_str).unwrap_or_default();
            if self.calls.contains(id) {
                continue;
            }
            if let Some(call) = function_call(tc) {
                self.push_items(vec![call]);
            }
        }
    }

    fn tool(&mut self, message: &Value) -> Option<Value> {
        let call_id = message.get("tool_call_id").and_then(Value::as_str)?.to_string();
        if self.outputs.contains(&call_id) {
            return None;
        }
        if !self.calls.contains(&call_id) {
            // An output before (or without) its call is a 400 upstream.
            self.dropped.orphan_outputs += 1;
            return None;
        }
        let output = match message.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(_)) => text_of(message.get("content")),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let item = json!({"type": "function_call_output", "call_id": call_id, "output": output});
        self.push_items(vec![item.clone()]);
        Some(item)
    }
}

/// Cheapest effort each family accepts, for background tasks (§4.6).
fn task_effort(base: &str) -> &'static str {
    if base.starts_with("gpt-6") || base.starts_with('o') {
        "low"
    } else if ["gpt-5.1", "gpt-5.2", "gpt-5.4", "gpt-5.5", "gpt-5.6"].iter().any(|p| base.starts_with(p)) {
        "none"
    } else {
        "minimal"
    }
}

/// Who asked: Open WebUI's `user.id`, or the string an OpenAI client sends as `user`.
pub fn user_id(body: &Map<String, Value>) -> Option<&str> {
    match body.get("user") {
        Some(Value::String(id)) => Some(id.as_str()),
        Some(user) => user.get("id").and_then(Value::as_str),
        None => None,
    }
    .filter(|s| !s.is_empty())
}

/// Chat Completions parameters the Responses API has no equivalent for, refused for OpenAI
/// clients by name rather than dropped (docs/manifold.md §4.8). `n` is refused above 1, the
/// others when set to anything but their default.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("stop", "the Responses API has no stop sequences"),
    ("seed", "the Responses API takes no seed"),
    ("logit_bias", "the Responses API takes no logit bias"),
    ("logprobs", "log probabilities are not available through this server"),
    ("top_logprobs", "log probabilities are not available through this server"),
    ("presence_penalty", "the Responses API has no presence penalty"),
    ("frequency_penalty", "the Responses API has no frequency penalty"),
    ("audio", "audio output is not available through this server"),
    ("prediction", "predicted outputs are not available through the Responses API"),
    ("functions", "use `tools` instead of the deprecated `functions`"),
    ("function_call", "use `tool_choice` instead of the deprecated `function_call`"),
    ("web_search_options", "web search is configured by the server's valves"),
];

/// Refuses what an OpenAI client asked for and this manifold cannot do.
pub fn check_openai_params(body: &Map<String, Value>) -> Result<(), sluice_sdk::PipelineError> {
    let unsupported = |param: &str, why: &str| {
        let mut e = sluice_sdk::PipelineError::bad_request(format!("{param}: {why}"));
        e.code = Some("unsupported_parameter".into());
        e
    };
    if let Some(n) = body.get("n").filter(|n| !n.is_null()) {
        // `1.0` is one too (pydantic's reading, which the reference server gives it).
        if n.as_f64() != Some(1.0) {
            return Err(unsupported("n", "only one choice per request is supported"));
        }
    }
    if let Some(modalities) = body.get("modalities").and_then(Value::as_array) {
        if modalities.iter().any(|m| m != "text") {
            return Err(unsupported("modalities", "only text output is supported"));
        }
    }
    for (param, why) in UNSUPPORTED {
        let set = match body.get(*param) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::Number(n)) => n.as_f64() != Some(0.0) || *param == "seed",
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if set {
            return Err(unsupported(param, why));
        }
    }
    Ok(())
}

/// Open WebUI's "Add Details" and "More Concise" regenerations (0.12: the label, in English, as
/// a user message after the answer being redone): the verbosity they ask for. The message stays
/// in the input for models without the setting; a translated label is an ordinary message.
fn regeneration_verbosity(messages: &[Value]) -> Option<&'static str> {
    let [.., previous, last] = messages else { return None };
    if previous.get("role").and_then(Value::as_str) != Some("assistant")
        || last.get("role").and_then(Value::as_str) != Some("user")
    {
        return None;
    }
    match text_of(last.get("content")).trim().to_ascii_lowercase().as_str() {
        "add details" => Some("high"),
        "more concise" => Some("low"),
        _ => None,
    }
}

pub fn convert(body: &Map<String, Value>, ctx: &Context<'_>) -> Conversion {
    let valves = ctx.valves;
    let model = ctx.model;
    let task = ctx.stash.task.is_some();
    let messages: &[Value] = body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let last_user = messages.iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let last_assistant = messages.iter().rposition(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
    let has_system = messages.iter().any(|m| m.get("role").and_then(Value::as_str) == Some("system"));

    let mut instructions: Option<String> = None;
    let mut input =
        Input { ctx, items: Vec::new(), calls: HashSet::new(), outputs: HashSet::new(), dropped: Dropped::default() };
    let mut tool_outputs = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or_default();
        match role {
            "system" | "developer" => {
                let text = text_of(message.get("content"));
                let leading_developer = role == "developer" && !has_system && input.items.is_empty();
                if instructions.is_none() && (role == "system" || leading_developer) && input.items.is_empty() {
                    instructions = Some(text);
                } else if !text.trim().is_empty() {
                    input.items.push(json!({"role": "developer", "content": text}));
                }
            }
            "user" => {
                let parts = user_parts(message.get("content"), task, &mut input.dropped);
                if !parts.is_empty() {
                    input.items.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => input.assistant(message, last_user.is_some_and(|u| i < u)),
            "tool" => {
                if let Some(item) = input.tool(message) {
                    if last_assistant.is_some_and(|a| i > a) {
                        tool_outputs.push(item);
                    }
                }
            }
            other => tracing::debug!(role = other, "skipped a message with an unknown role"),
        }
    }
    let dropped = &input.dropped;
    if dropped.parts > 0 || dropped.orphan_outputs > 0 {
        tracing::warn!(
            parts = dropped.parts,
            first_part_type = dropped.first_part.as_deref().unwrap_or(""),
            tool_results_without_call = dropped.orphan_outputs,
            "dropped what the Responses API does not take"
        );
    }

    let mut out = Map::new();
    out.insert("stream".into(), true.into());
    out.insert("store".into(), valves.STORE.into());
    if let Some(text) = instructions.filter(|t| !t.trim().is_empty()) {
        out.insert("instructions".into(), text.into());
    }
    let user_id = user_id(body);
    let cache_source = match valves.PROMPT_CACHE_KEY_MODE {
        CacheKeyMode::Chat => ctx.stash.chat_id.as_deref().or(user_id),
        CacheKeyMode::User => user_id,
        CacheKeyMode::None => None,
    };
    if let Some(source) = cache_source {
        out.insert(
            "prompt_cache_key".into(),
            format!("owui:{}", &sha256_hex(format!("{source}:{}", model.base).as_bytes())[..16]).into(),
        );
    }
    if let (true, Some(id)) = (valves.SAFETY_IDENTIFIER, user_id) {
        out.insert("safety_identifier".into(), sha256_hex(id.as_bytes()).into());
    }
    out.insert(
        "truncation".into(),
        match valves.TRUNCATION {
            Truncation::Auto => "auto",
            Truncation::Disabled => "disabled",
        }
        .into(),
    );
    // An OpenAI client's tier wins over the valve's.
    let openai = ctx.dialect == sluice_sdk::Dialect::OpenAi;
    match body.get("service_tier").filter(|t| t.is_string() && openai) {
        Some(tier) => {
            out.insert("service_tier".into(), tier.clone());
        }
        None => {
            if let Some(tier) = valves.SERVICE_TIER {
                out.insert("service_tier".into(), serde_json::to_value(tier).unwrap_or(Value::Null));
            }
        }
    }
    if let Some(Value::Object(meta)) = body.get("metadata").filter(|_| openai) {
        if meta.values().all(Value::is_string) {
            out.insert("metadata".into(), Value::Object(meta.clone()));
        }
    }
    out.insert("model".into(), model.base.clone().into());

    // Reasoning (§4.5): request value, then the request's `reasoning_effort`, then the alias.
    let mut effort: Option<String> = None;
    if model.caps.reasoning {
        let mut reasoning = body.get("reasoning").and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(e) = body.get("reasoning_effort").and_then(Value::as_str) {
            reasoning.entry("effort").or_insert_with(|| e.into());
        }
        if let Some(preset) = &model.preset {
            reasoning.extend(preset.clone());
        }
        if task && model.preset.is_none() {
            reasoning.insert("effort".into(), task_effort(&model.base).into());
        }
        if model.caps.summary && valves.REASONING_SUMMARY != ReasoningSummary::Disabled && !task {
            reasoning.insert("summary".into(), serde_json::to_value(valves.REASONING_SUMMARY).unwrap_or(Value::Null));
        }
        effort = reasoning.get("effort").and_then(Value::as_str).map(str::to_owned);
        if !reasoning.is_empty() {
            out.insert("reasoning".into(), Value::Object(reasoning));
        }
    } else if let Some(preset) = &model.preset {
        out.insert("reasoning".into(), Value::Object(preset.clone()));
    }
    let mut include = Vec::new();
    if model.caps.reasoning && valves.PERSIST_REASONING_TOKENS != PersistReasoning::Disabled && !valves.STORE && !task {
        include.push(Value::from("reasoning.encrypted_content"));
    }

    // Text options.
    let mut text = Map::new();
    // Only to models that take it: the others refuse the whole request.
    let asked = body.get("verbosity").and_then(Value::as_str).or_else(|| regeneration_verbosity(messages));
    if let Some(v) = asked.filter(|_| model.caps.verbosity) {
        text.insert("verbosity".into(), v.into());
    }
    if let Some(format) = body.get("response_format").and_then(tools::text_format) {
        text.insert("format".into(), format);
    }
    if !text.is_empty() {
        out.insert("text".into(), Value::Object(text));
    }
    let max = ["max_completion_tokens", "max_tokens"].iter().find_map(|k| body.get(*k).and_then(Value::as_u64));
    if let Some(max) = max {
        out.insert("max_output_tokens".into(), max.max(16).into());
    }

    // Tools (§4.4): none for task requests or models without function calling.
    if model.caps.tools && !task {
        let mut list = tools::function_tools(body.get("tools"), valves.ENABLE_STRICT_TOOL_CALLING);
        let wants_search = valves.ENABLE_WEB_SEARCH_TOOL || ctx.stash.web_search;
        if model.caps.web_search && wants_search && effort.as_deref() != Some("minimal") {
            let mut tool = Map::new();
            tool.insert("type".into(), "web_search".into());
            tool.insert(
                "search_context_size".into(),
                serde_json::to_value(valves.WEB_SEARCH_CONTEXT_SIZE).unwrap_or(Value::Null),
            );
            if let Some(location) = valves.user_location() {
                tool.insert("user_location".into(), location);
            }
            list.push(Value::Object(tool));
            include.push("web_search_call.action.sources".into());
        }
        if model.caps.image && valves.ENABLE_IMAGE_GENERATION {
            list.push(json!({"type": "image_generation"}));
        }
        list.extend(tools::mcp_tools(&valves.mcp_servers()));
        if let Some(Value::Array(extra)) = body.get("extra_tools") {
            list.extend(extra.iter().cloned());
        }
        let list = tools::dedupe(list);
        if !list.is_empty() {
            let has_functions = list.iter().any(|t| t.get("type").and_then(Value::as_str) == Some("function"));
            out.insert("tools".into(), Value::Array(list));
            if let Some(choice) = body.get("tool_choice").and_then(tools::tool_choice) {
                out.insert("tool_choice".into(), choice);
            }
            // Only function calls run in parallel; hosted tools alone take no such setting.
            if has_functions {
                let parallel =
                    body.get("parallel_tool_calls").and_then(Value::as_bool).unwrap_or(valves.PARALLEL_TOOL_CALLS);
                out.insert("parallel_tool_calls".into(), parallel.into());
            }
            if let Some(n) = valves.MAX_TOOL_CALLS {
                out.insert("max_tool_calls".into(), n.into());
            }
        }
    }
    if !include.is_empty() {
        out.insert("include".into(), Value::Array(include));
    }

    // Sampling (§4.5): reasoning models refuse it, except at effort "none" where allowed.
    let sampling_ok = !model.caps.reasoning
        || !valves.DROP_SAMPLING_FOR_REASONING
        || (effort.as_deref() == Some("none") && !model.base.starts_with("gpt-6"));
    if sampling_ok {
        for key in ["temperature", "top_p"] {
            if let Some(v) = body.get(key).filter(|v| v.is_number()) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    out.insert("input".into(), Value::Array(input.items));
    Conversion { body: Value::Object(out), tool_outputs }
}
