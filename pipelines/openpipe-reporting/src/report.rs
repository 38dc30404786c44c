//! Building the OpenPipe report of one finished turn (docs/reporting.md §6–§8): request
//! sanitization, classification, the flat metadata map, the rebuilt `chat.completion`, steps
//! for tool calls, real usage only, and the size cap.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::blocks::{self, Answer, ToolCall};
use crate::valves::ReportingValves;

/// OpenAI chat-completions request keys kept in `reqPayload` (§7.2); everything Open WebUI adds
/// (metadata, files, features, ...) is dropped.
const REQUEST_KEYS: &[&str] = &[
    "model",
    "messages",
    "stream",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "reasoning_effort",
];

const MESSAGE_KEYS: &[&str] = &["role", "content", "name", "tool_calls", "tool_call_id", "function_call"];

/// The eight background task types governed by `REPORT_SYSTEM_TASKS` (§6.2).
pub const SYSTEM_TASKS: &[&str] = &[
    "title_generation",
    "follow_up_generation",
    "tags_generation",
    "emoji_generation",
    "query_generation",
    "image_prompt_generation",
    "autocomplete_generation",
    "moa_response_generation",
];

fn call_json(call: &ToolCall) -> Value {
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
}

fn text_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

/// The assistant/tool message pairs that precede step `k` (§7.5).
pub fn call_pairs(answer: &Answer, upto: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(upto * 2);
    for (j, call) in answer.calls.iter().take(upto).enumerate() {
        out.push(
            json!({"role": "assistant", "content": text_or_null(&answer.texts[j]), "tool_calls": [call_json(call)]}),
        );
        out.push(json!({"role": "tool", "tool_call_id": call.id, "content": call.result.clone().unwrap_or_default()}));
    }
    out
}

fn sanitize_part(part: &Value) -> Value {
    match part.get("type").and_then(Value::as_str) {
        Some("image_url") => {
            let image = part.get("image_url");
            let mut inner = Map::new();
            match image {
                Some(Value::String(url)) => {
                    inner.insert("url".into(), Value::String(url.clone()));
                }
                Some(obj) => {
                    for k in ["url", "detail"] {
                        if let Some(v) = obj.get(k) {
                            inner.insert(k.into(), v.clone());
                        }
                    }
                }
                None => {}
            }
            json!({"type": "image_url", "image_url": inner})
        }
        _ => part.clone(),
    }
}

/// One message as a model saw it; assistant history is un-rendered when `parse_blocks`.
fn sanitize_message(message: &Value, parse_blocks: bool, out: &mut Vec<Value>) {
    let Some(obj) = message.as_object() else { return };
    let mut m: Map<String, Value> = MESSAGE_KEYS
        .iter()
        .filter_map(|k| {
            let v = match (*k, obj.get(*k)?) {
                ("content", Value::Array(parts)) => Value::Array(parts.iter().map(sanitize_part).collect()),
                (_, v) => v.clone(),
            };
            Some(((*k).to_string(), v))
        })
        .collect();
    if parse_blocks && obj.get("role").and_then(Value::as_str) == Some("assistant") {
        if let Some(Value::String(content)) = obj.get("content") {
            let id = obj.get("id").and_then(Value::as_str).unwrap_or("history");
            let answer = blocks::parse(content, id);
            if !answer.calls.is_empty() {
                out.extend(call_pairs(&answer, answer.calls.len()));
                out.push(json!({"role": "assistant", "content": answer.final_text()}));
                return;
            }
            m.insert("content".into(), Value::String(answer.final_text().to_string()));
        }
    }
    out.push(Value::Object(m));
}

pub fn sanitize_messages(messages: &[Value], parse_blocks: bool) -> Vec<Value> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        sanitize_message(m, parse_blocks, &mut out);
    }
    out
}

/// `reqPayload` without its metadata: only chat-completions keys, messages sanitized.
pub fn sanitize_request(body: &Map<String, Value>, parse_blocks: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for k in REQUEST_KEYS {
        let Some(v) = body.get(*k) else { continue };
        if v.is_null() {
            continue;
        }
        let v = match (*k, v) {
            ("messages", Value::Array(list)) => Value::Array(sanitize_messages(list, parse_blocks)),
            _ => v.clone(),
        };
        out.insert((*k).into(), v);
    }
    out
}

/// Tool names anywhere in the request (§8): tool specs, functions, history calls, tool_use parts.
pub fn request_tools(request: &Map<String, Value>) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut add = |v: Option<&Value>| {
        if let Some(n) = v.and_then(Value::as_str).filter(|n| !n.is_empty()) {
            names.insert(n.to_string());
        }
    };
    for t in request.get("tools").and_then(Value::as_array).into_iter().flatten() {
        add(t.get("function").and_then(|f| f.get("name")));
        add(t.get("name"));
    }
    for f in request.get("functions").and_then(Value::as_array).into_iter().flatten() {
        add(f.get("name"));
    }
    for m in request.get("messages").and_then(Value::as_array).into_iter().flatten() {
        for c in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            add(c.get("function").and_then(|f| f.get("name")));
        }
        add(m.get("function_call").and_then(|f| f.get("name")));
        for p in m.get("content").and_then(Value::as_array).into_iter().flatten() {
            if p.get("type").and_then(Value::as_str) == Some("tool_use") {
                add(p.get("name"));
            }
        }
    }
    names
}

/// Tool use detected (§6.1): tools offered, tool traffic in the history, or calls in the answer.
pub fn tool_use_detected(request: &Map<String, Value>, answer: &Answer) -> bool {
    if !answer.calls.is_empty() {
        return true;
    }
    if request.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
        return true;
    }
    request.get("messages").and_then(Value::as_array).into_iter().flatten().any(|m| {
        m.get("tool_calls").is_some()
            || m.get("function_call").is_some()
            || matches!(m.get("role").and_then(Value::as_str), Some("tool" | "function"))
            || m.get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|p| p.get("type").and_then(Value::as_str) == Some("tool_use"))
    })
}

/// `interaction_type` by the rules of §6.1.
pub fn classify(enabled: bool, task: Option<&str>, request: &Map<String, Value>, answer: &Answer) -> String {
    if !enabled {
        return "unknown".into();
    }
    if let Some(task) = task.filter(|t| !t.is_empty()) {
        return task.to_string();
    }
    if tool_use_detected(request, answer) {
        "function_calling".into()
    } else {
        "chat_message".into()
    }
}

/// Which valve allows a type (§6.2); `None` means always reported.
pub enum Gate {
    Chat,
    Tools,
    Tasks,
    Always,
}

pub fn gate(interaction_type: &str) -> Gate {
    match interaction_type {
        "chat_message" => Gate::Chat,
        "function_calling" => Gate::Tools,
        t if SYSTEM_TASKS.contains(&t) => Gate::Tasks,
        _ => Gate::Always,
    }
}

/// Real token counts of the answer message, never an estimate (§7.4).
pub fn usage_of(message: &Value) -> Option<Value> {
    let read = |obj: &Value, keys: &[&str]| keys.iter().find_map(|k| obj.get(*k).and_then(Value::as_u64));
    for source in [message.get("usage"), message.get("info").and_then(|i| i.get("usage")), message.get("info")] {
        let Some(obj) = source.filter(|v| v.is_object()) else { continue };
        let prompt = read(obj, &["prompt_tokens", "prompt_eval_count", "input_tokens"]);
        let completion = read(obj, &["completion_tokens", "eval_count", "output_tokens"]);
        if let (Some(p), Some(c)) = (prompt, completion) {
            let total = read(obj, &["total_tokens"]).unwrap_or(p + c);
            return Some(json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": total}));
        }
    }
    None
}

/// The reserved metadata keys up to `tool_call_count` (§7.3), for a turn or a task.
pub struct Head<'a> {
    /// `inlet_outlet`, `outlet_only` or `inlet_completion`.
    pub capture: &'static str,
    pub interaction: &'a str,
    pub user_id: Option<&'a str>,
    pub chat_id: Option<&'a str>,
    pub message_id: &'a str,
    pub model_id: &'a str,
    pub inference_ms: Option<u64>,
    /// Tool names seen in the request and the answer.
    pub tools: BTreeSet<String>,
    /// Tool calls in the answer.
    pub calls: usize,
}

impl Head<'_> {
    /// The pairs in §7.3 order, as the valves select them.
    pub fn pairs(&self, v: &ReportingValves) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![
            ("source".into(), "open-webui".into()),
            ("capture".into(), self.capture.into()),
            ("interaction_type".into(), self.interaction.into()),
        ];
        if let Some(u) = self.user_id.filter(|u| !u.is_empty()) {
            out.push(("user_id".into(), u.into()));
        }
        if let Some(c) = self.chat_id.filter(|c| !c.is_empty()) {
            out.push(("chat_id".into(), c.into()));
        }
        out.push(("message_id".into(), self.message_id.into()));
        out.push(("model_id".into(), self.model_id.into()));
        if let (true, Some(ms)) = (v.INCLUDE_TIMING_METRICS, self.inference_ms) {
            out.push(("inference_time_ms".into(), ms.to_string()));
        }
        if v.INCLUDE_TOOL_METRICS {
            if !self.tools.is_empty() {
                out.push(("tools_used".into(), self.tools.iter().cloned().collect::<Vec<_>>().join(",")));
            }
            let has = !self.tools.is_empty() || self.calls > 0;
            out.push(("has_tool_calls".into(), has.to_string()));
            out.push(("tool_call_count".into(), self.calls.to_string()));
        }
        out
    }
}

/// Everything one turn's reports are made of.
pub struct Turn {
    pub request: Map<String, Value>,
    pub model: String,
    pub message_id: String,
    /// Reserved keys up to `tool_call_count`, in §7.3 order.
    pub head: Vec<(String, String)>,
    /// `regenerated_from`, `regeneration_index` when they apply.
    pub tail: Vec<(String, String)>,
    pub custom: Vec<(String, String)>,
    pub answer: Answer,
    pub usage: Option<Value>,
    /// Above 0: the id gets `-r<revision>` and the metadata `revision` (§5.5).
    pub revision: u32,
    pub requested_at_ms: u64,
    pub received_at_ms: u64,
    /// `images_omitted` / `truncated` when the request was shrunk already at capture time.
    pub shrunk: Vec<(String, String)>,
}

/// A report ready for the outbox, or the reason it cannot be sent.
pub struct Built {
    pub body: Value,
    pub too_large: bool,
}

fn meta_object(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

impl Turn {
    fn response_id(&self, step: Option<usize>) -> String {
        let mut id = format!("chatcmpl-{}", self.message_id);
        if let Some(s) = step {
            id.push_str(&format!("-s{s}"));
        }
        if self.revision > 0 {
            id.push_str(&format!("-r{}", self.revision));
        }
        id
    }

    fn metadata(&self, step: Option<(usize, usize)>, cap: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = self.head.clone();
        if let Some((index, count)) = step {
            out.push(("step_index".into(), index.to_string()));
            out.push(("step_count".into(), count.to_string()));
        }
        if self.revision > 0 {
            out.push(("revision".into(), self.revision.to_string()));
        }
        out.extend(self.tail.iter().cloned());
        out.extend(cap.iter().cloned());
        out.extend(self.custom.iter().cloned());
        out
    }

    fn report(&self, k: usize, cap: &[(String, String)], messages: Vec<Value>) -> Value {
        let n = self.answer.calls.len();
        let (step, message, finish) = if k < n {
            let call = &self.answer.calls[k];
            (
                Some((k, n + 1)),
                json!({"role": "assistant", "content": text_or_null(&self.answer.texts[k]), "tool_calls": [call_json(call)]}),
                "tool_calls",
            )
        } else {
            let step = (n > 0).then_some((n, n + 1));
            (step, json!({"role": "assistant", "content": self.answer.final_text()}), "stop")
        };
        let metadata = meta_object(&self.metadata(step, cap));
        let mut req = self.request.clone();
        req.insert("model".into(), Value::String(self.model.clone()));
        req.insert("messages".into(), Value::Array(messages));
        req.insert("metadata".into(), metadata.clone());
        let mut resp = json!({
            "id": self.response_id(step.map(|s| s.0)),
            "object": "chat.completion",
            "created": self.received_at_ms / 1000,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        });
        if k == n {
            if let (Some(usage), Some(obj)) = (&self.usage, resp.as_object_mut()) {
                obj.insert("usage".into(), usage.clone());
            }
        }
        json!({
            "requestedAt": self.requested_at_ms,
            "receivedAt": self.received_at_ms,
            "reqPayload": req,
            "respPayload": resp,
            "statusCode": 200,
            "tags": metadata,
        })
    }

    fn base_messages(&self) -> Vec<Value> {
        self.request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default()
    }

    /// One report per step (N tool calls ⇒ N + 1), each within `max_bytes` if it can be (§7.6):
    /// images go first, then long texts one message at a time until it fits. Sizes are kept
    /// up to date by difference (a JSON list is its items' bytes plus separators), so a report
    /// of thousands of long messages is serialised a few times, not once per message.
    pub fn reports(&self, max_bytes: usize) -> Vec<Built> {
        let n = self.answer.calls.len();
        (0..=n)
            .map(|k| {
                let mut messages = self.base_messages();
                messages.extend(call_pairs(&self.answer, k));
                let mut cap = self.shrunk.clone();
                let body = self.report(k, &cap, messages.clone());
                let mut size = serialized_len(&body);
                if size <= max_bytes {
                    return Built { body, too_large: false };
                }
                let omitted = omit_images(&mut messages);
                if omitted > 0 {
                    cap.retain(|(key, _)| key != "images_omitted");
                    cap.push(("images_omitted".to_string(), omitted.to_string()));
                    let body = self.report(k, &cap, messages.clone());
                    size = serialized_len(&body);
                    if size <= max_bytes {
                        return Built { body, too_large: false };
                    }
                }
                if !cap.iter().any(|(key, _)| key == "truncated") {
                    cap.push(("truncated".to_string(), "true".to_string()));
                    size += r#","truncated":"true""#.len() * 2;
                }
                for message in messages.iter_mut() {
                    let before = serialized_len(message);
                    if truncate_message(message) {
                        size = size.saturating_sub(before.saturating_sub(serialized_len(message)));
                        if size <= max_bytes {
                            break;
                        }
                    }
                }
                let body = self.report(k, &cap, messages);
                let too_large = serialized_len(&body) > max_bytes;
                Built { body, too_large }
            })
            .collect()
    }
}

/// Every image out and every long text cut, for a report OpenPipe refused as too large.
pub fn shrink_messages(messages: &mut [Value]) -> (usize, bool) {
    let omitted = omit_images(messages);
    let mut truncated = false;
    for m in messages.iter_mut() {
        truncated |= truncate_message(m);
    }
    (omitted, truncated)
}

/// Bytes of `v` as compact JSON, counted without building the text.
pub fn serialized_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Replaces `data:` image URLs with `data:<mime>;omitted`; returns how many.
fn omit_images(messages: &mut [Value]) -> usize {
    let mut count = 0;
    for m in messages {
        let Some(parts) = m.get_mut("content").and_then(Value::as_array_mut) else { continue };
        for p in parts {
            let Some(url) = p.get_mut("image_url").and_then(|i| i.get_mut("url")) else { continue };
            let Some(text) = url.as_str() else { continue };
            if let Some(rest) = text.strip_prefix("data:") {
                let mime = rest.split([';', ',']).next().unwrap_or_default();
                if rest != format!("{mime};omitted") {
                    *url = Value::String(format!("data:{mime};omitted"));
                    count += 1;
                }
            }
        }
    }
    count
}

const TRUNCATE_AT: usize = 20_000;

fn truncate_text(text: &mut String) -> bool {
    if text.chars().count() <= TRUNCATE_AT {
        return false;
    }
    let cut: String = text.chars().take(TRUNCATE_AT).collect();
    *text = format!("{cut}…[truncated]");
    true
}

/// Shortens a message's long texts; returns whether anything changed.
fn truncate_message(message: &mut Value) -> bool {
    let Some(content) = message.get_mut("content") else { return false };
    match content {
        Value::String(s) => truncate_text(s),
        Value::Array(parts) => {
            let mut changed = false;
            for p in parts {
                if let Some(Value::String(s)) = p.get_mut("text") {
                    changed |= truncate_text(s);
                }
            }
            changed
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_keeps_chat_completion_keys_only() {
        let body = json!({
            "model": "m", "stream": true, "temperature": 0.2, "metadata": {"chat_id": "c"}, "files": [], "tool_ids": [],
            "messages": [
                {"id": "1", "role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "extra": 1}}], "timestamp": 1},
                {"id": "2", "role": "assistant", "content": "<details type=\"reasoning\" done=\"true\">\n<summary>Thought</summary>\n> hmm\n</details>\nHi!", "usage": {}}
            ]
        });
        let out = sanitize_request(body.as_object().unwrap(), true);
        assert_eq!(
            Value::Object(out),
            json!({"model": "m", "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
                {"role": "assistant", "content": "<think>hmm</think>\nHi!"}
            ], "stream": true, "temperature": 0.2})
        );
    }

    #[test]
    fn classification_follows_the_rules_in_order() {
        let plain = json!({"messages": [{"role": "user", "content": "hi"}]});
        let plain = plain.as_object().unwrap();
        let none = Answer { texts: vec!["x".into()], calls: vec![] };
        assert_eq!(classify(true, None, plain, &none), "chat_message");
        assert_eq!(classify(true, Some(""), plain, &none), "chat_message");
        assert_eq!(classify(true, Some("title_generation"), plain, &none), "title_generation");
        assert_eq!(classify(false, Some("title_generation"), plain, &none), "unknown");
        let tools = json!({"tools": [{"type": "function", "function": {"name": "f"}}], "messages": []});
        assert_eq!(classify(true, None, tools.as_object().unwrap(), &none), "function_calling");
        let history = json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": "r"}]});
        assert_eq!(classify(true, None, history.as_object().unwrap(), &none), "function_calling");
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "tool_use", "name": "g"}]}]});
        assert_eq!(classify(true, None, parts.as_object().unwrap(), &none), "function_calling");
        assert_eq!(request_tools(parts.as_object().unwrap()).into_iter().collect::<Vec<_>>(), ["g"]);
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into(), result: None };
        let answered = Answer { texts: vec![String::new(), String::new()], calls: vec![call] };
        assert_eq!(classify(true, None, plain, &answered), "function_calling");
        assert!(matches!(gate("emoji_generation"), Gate::Tasks));
        assert!(matches!(gate("memory_extraction"), Gate::Always));
    }

    #[test]
    fn usage_is_read_never_estimated() {
        assert_eq!(
            usage_of(&json!({"usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}})),
            Some(json!({"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}))
        );
        assert_eq!(
            usage_of(&json!({"info": {"prompt_eval_count": 5, "eval_count": 7}})),
            Some(json!({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}))
        );
        assert_eq!(usage_of(&json!({"content": "a b c"})), None);
        assert_eq!(usage_of(&json!({"usage": {"prompt_tokens": 5}})), None);
    }

    #[test]
    fn a_report_of_many_long_messages_is_shrunk_in_a_few_passes() {
        // 600 messages of 40,000 characters (24 MB), cut to 20,000 one at a time until the
        // report fits 15 MB: one serialisation per cut message would be 450 serialisations of
        // megabytes; sizes kept by difference make it a few.
        let messages: Vec<Value> =
            (0..600).map(|i| json!({"role": "user", "content": format!("{i}{}", "y".repeat(40_000))})).collect();
        let turn = Turn {
            request: json!({"messages": messages}).as_object().unwrap().clone(),
            model: "m".into(),
            message_id: "m2".into(),
            head: vec![],
            tail: vec![],
            custom: vec![],
            answer: Answer { texts: vec!["ok".into()], calls: vec![] },
            usage: None,
            revision: 0,
            requested_at_ms: 1,
            received_at_ms: 2,
            shrunk: vec![("images_omitted".into(), "2".into())],
        };
        let built = turn.reports(15_000_000);
        assert!(!built[0].too_large);
        assert!(serialized_len(&built[0].body) <= 15_000_000);
        assert_eq!(built[0].body["tags"]["truncated"], "true");
        assert_eq!(built[0].body["tags"]["images_omitted"], "2", "what the capture lost is said");
        let untouched = built[0].body["reqPayload"]["messages"][599]["content"].as_str().unwrap().len();
        assert!(untouched > 40_000, "only as many messages as needed are cut");
    }

    #[test]
    fn images_go_first_then_long_texts() {
        let big_image = format!("data:image/png;base64,{}", "A".repeat(30_000));
        let long_text = "x".repeat(25_000);
        let turn = Turn {
            request: json!({"messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big_image}}]},
                {"role": "user", "content": long_text}
            ]})
            .as_object()
            .unwrap()
            .clone(),
            model: "m".into(),
            message_id: "m1".into(),
            head: vec![],
            tail: vec![],
            custom: vec![("env".into(), "p".into())],
            answer: Answer { texts: vec!["ok".into()], calls: vec![] },
            usage: None,
            revision: 0,
            requested_at_ms: 1,
            received_at_ms: 2,
            shrunk: vec![],
        };
        let built = turn.reports(40_000);
        assert!(!built[0].too_large);
        let meta = &built[0].body["tags"];
        assert_eq!(meta["images_omitted"], "1");
        assert!(meta.get("truncated").is_none());
        let url = &built[0].body["reqPayload"]["messages"][0]["content"][0]["image_url"]["url"];
        assert_eq!(url, "data:image/png;omitted");

        let built = turn.reports(22_000);
        assert!(!built[0].too_large);
        assert_eq!(built[0].body["tags"]["truncated"], "true");
        let text = built[0].body["reqPayload"]["messages"][1]["content"].as_str().unwrap();
        assert!(text.ends_with("…[truncated]") && text.chars().count() == 20_000 + 12);
        // Custom keys stay last.
        let keys: Vec<_> = built[0].body["tags"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["images_omitted", "truncated", "env"]);

        assert!(turn.reports(5_000)[0].too_large);
    }
}
