//! The request half of a report (docs/reporting.md §7.2): the chat request as OpenAI would
//! have received it, whatever Open WebUI added taken out, and what can be read from it (tools
//! offered, tool use, usage).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::blocks::{self, Answer};

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
                out.extend(blocks::call_pairs(&answer, answer.calls.len()));
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
}
