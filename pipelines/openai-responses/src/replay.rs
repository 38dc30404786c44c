//! The records behind earlier answers (docs/manifold.md §7.5): each upstream response's items
//! verbatim (encrypted reasoning, function calls), so a tool round or a later turn can send
//! them back byte for byte. Nothing is added to an answer: a record is found again by what
//! the client sends back of that answer:
//! - a round that ended in tool calls comes back with its `tool_calls`, whose ids are the
//!   model's: the record is kept under each call id;
//! - a final answer comes back as its text (Open WebUI trims it): the record is kept under a
//!   digest of its owner and the text, white space collapsed. An edited answer no longer
//!   matches and is replayed as plain text.
//!
//! Chats from before this scheme carry a marker `[sluice:v1:turn:<ID>]: #` in their text; those
//! records are still found by the ID.

use std::collections::HashMap;

use serde_json::{json, Value};
use sluice_sdk::marker;

/// Store namespace of turn records.
pub const NAMESPACE: &str = "openai_responses.turn";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The key of a record found by a tool call of its response.
pub fn call_key(call_id: &str) -> String {
    format!("call:{call_id}")
}

/// The key of a record found by its answer's text, for one owner.
pub fn text_key(owner: &str, text: &str) -> String {
    format!("text:{}", sluice_sdk::digest::sha256_hex(format!("{owner}\n{}", squash(text)).as_bytes()))
}

/// The keys a response's record is kept under: its call ids, else its text (none when the
/// response has neither: nothing could find it again).
pub fn keys_of(owner: &str, items: &[Value]) -> Vec<String> {
    let calls: Vec<String> = items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("function_call"))
        .filter_map(|i| i.get("call_id").and_then(Value::as_str))
        .map(call_key)
        .collect();
    if !calls.is_empty() {
        return calls;
    }
    let text = visible_text_of(items);
    if text.trim().is_empty() {
        Vec::new()
    } else {
        vec![text_key(owner, &text)]
    }
}

/// The keys to look an assistant message's records up by, in the order they are tried: the
/// markers of older chats, then its tool calls, then its text.
pub fn lookup_keys(message: &Value, owner: &str) -> Vec<String> {
    let raw = sluice_sdk::message::text(message.get("content"), "\n");
    let markers = find_markers(&raw);
    if !markers.is_empty() {
        return markers;
    }
    let calls: Vec<String> = message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("id").and_then(Value::as_str))
        .map(call_key)
        .collect();
    if !calls.is_empty() {
        return calls;
    }
    let visible = strip_markers(&strip_reasoning(&raw));
    if visible.is_empty() {
        Vec::new()
    } else {
        vec![text_key(owner, &visible)]
    }
}

/// The records an assistant message stands for: every marker's (all must be found), or the one
/// its tool calls or its text find. Empty when they are not all there.
pub fn records_for<'a>(message: &Value, owner: &str, records: &'a HashMap<String, Record>) -> Vec<&'a Record> {
    let keys = lookup_keys(message, owner);
    let raw = sluice_sdk::message::text(message.get("content"), "\n");
    if !find_markers(&raw).is_empty() {
        let found: Vec<&Record> = keys.iter().filter_map(|k| records.get(k)).collect();
        return if found.len() == keys.len() { found } else { Vec::new() };
    }
    keys.iter().find_map(|k| records.get(k)).into_iter().collect()
}

fn is_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| CROCKFORD.contains(&b))
}

/// Marker ids in `text`, in order.
pub fn find_markers(text: &str) -> Vec<String> {
    marker::contents(text)
        .into_iter()
        .filter_map(|inner| {
            let (kind, id) = inner.split_once(':')?;
            let kind_ok = (2..=30).contains(&kind.len())
                && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            (kind_ok && is_id(id)).then(|| id.to_string())
        })
        .collect()
}

/// Removes our markers and the Function manifold's (`[openai_responses:v2:…]: #`), wherever
/// they stand, then trims.
pub fn strip_markers(text: &str) -> String {
    marker::strip(text, false).trim().to_string()
}

/// Removes reasoning the UI may have left in assistant text: `<details type="reasoning" …>…</details>`
/// and `<think>…</think>` (§4.3).
pub fn strip_reasoning(text: &str) -> String {
    let mut out = text.to_string();
    for (open, close) in [("<details type=\"reasoning\"", "</details>"), ("<think>", "</think>")] {
        out = without_blocks(&out, open, close);
    }
    out
}

/// `text` without each `open` … `close` block, and without everything from an `open` that is
/// never closed. One pass: removing blocks in place rewrote the text once per block (seconds
/// for a few MB of `<think></think>`, found by a red team).
fn without_blocks(text: &str, open: &str, close: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        out.push_str(&rest[..start]);
        match rest[start..].find(close) {
            Some(len) => rest = &rest[start + len + close.len()..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// One upstream response's items, as kept in the store.
#[derive(Debug, Clone)]
pub struct Record {
    pub owner: String,
    pub model: String,
    pub encrypted_reasoning: bool,
    pub items: Vec<Value>,
}

impl Record {
    pub fn from_value(v: &Value) -> Option<Record> {
        Some(Record {
            owner: v.get("owner")?.as_str()?.to_string(),
            model: v.get("model")?.as_str()?.to_string(),
            encrypted_reasoning: v.get("encrypted_reasoning").and_then(Value::as_bool).unwrap_or(false),
            items: v.get("items")?.as_array()?.clone(),
        })
    }

    /// Concatenated `output_text` of the message items: what the user saw of this response.
    pub fn visible_text(&self) -> String {
        visible_text_of(&self.items)
    }
}

/// The answer text of Responses output items: the `output_text` of their message items.
fn visible_text_of(items: &[Value]) -> String {
    items
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("message"))
        .flat_map(|m| m.get("content").and_then(Value::as_array).into_iter().flatten())
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn record_value(
    owner: &str,
    chat_id: Option<&str>,
    owui_model: &str,
    model: &str,
    response_id: Option<&str>,
    status: &str,
    encrypted_reasoning: bool,
    items: Vec<Value>,
) -> Value {
    let now = sluice_sdk::clock::unix_secs();
    json!({
        "v": 1, "kind": "turn", "owner": owner, "chat_id": chat_id, "owui_model": owui_model, "model": model,
        "response_id": response_id, "status": status, "created_at": now,
        "encrypted_reasoning": encrypted_reasoning, "items": items,
    })
}

/// Collapses runs of white space so a text check survives Open WebUI's trimming and re-wrapping.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The pairing rule when reasoning is not replayed: messages lose their ids (content as plain
/// text), calls lose `id`/`status`, hosted-tool items are dropped (§7.5 step 4).
pub fn deidentify(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter_map(|item| match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => None,
            Some("message") => {
                let text = Record {
                    owner: String::new(),
                    model: String::new(),
                    encrypted_reasoning: false,
                    items: vec![item.clone()],
                }
                .visible_text();
                (!text.trim().is_empty()).then(|| json!({"role": "assistant", "content": text}))
            }
            Some("function_call") => {
                let mut call = item.clone();
                if let Some(map) = call.as_object_mut() {
                    map.shift_remove("id");
                    map.shift_remove("status");
                }
                Some(call)
            }
            Some("function_call_output") => Some(item.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_markers_are_found_and_stripped() {
        let text = "[sluice:v1:turn:0123456789ABCDEF]: #\n\nHello\n\n[openai_responses:v2:function_call:0123456789ABCDEF]: #\n";
        assert_eq!(find_markers(text), vec!["0123456789ABCDEF".to_string()]);
        assert_eq!(strip_markers(text), "Hello");
        assert!(find_markers("[sluice:v1:turn:short]: #").is_empty());
        assert!(find_markers("[sluice:v1:turn:0123456789ABCDEU]: #").is_empty(), "U is not Crockford");
    }

    #[test]
    fn a_response_is_found_again_by_its_calls_or_its_text() {
        let calls = vec![
            json!({"type": "reasoning", "id": "rs_1", "encrypted_content": "x"}),
            json!({"type": "function_call", "call_id": "call_a", "name": "f", "arguments": "{}"}),
            json!({"type": "function_call", "call_id": "call_b", "name": "f", "arguments": "{}"}),
        ];
        assert_eq!(keys_of("u1", &calls), ["call:call_a", "call:call_b"]);
        let answer = vec![json!({"type": "message", "content": [{"type": "output_text", "text": "Hello  there.\n"}]})];
        let key = keys_of("u1", &answer);
        // As Open WebUI sends it back: trimmed, white space as it likes.
        assert_eq!(lookup_keys(&json!({"role": "assistant", "content": "Hello there."}), "u1"), key);
        assert_ne!(lookup_keys(&json!({"role": "assistant", "content": "Hello there."}), "u2"), key, "owners apart");
        assert_ne!(lookup_keys(&json!({"role": "assistant", "content": "Hello there!"}), "u1"), key, "edited");
        let round = json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_b", "type": "function"}]});
        assert_eq!(lookup_keys(&round, "u1"), ["call:call_b"]);
        assert!(keys_of("u1", &[json!({"type": "web_search_call"})]).is_empty());
    }
    #[test]
    fn reasoning_blocks_are_removed() {
        let text = "<details type=\"reasoning\" done=\"true\">\n<summary>Thought</summary>\nx\n</details>\nA<think>hmm</think>B";
        assert_eq!(strip_reasoning(text), "\nAB");
        assert_eq!(strip_reasoning("A<think>never closed"), "A");
        assert_eq!(strip_reasoning("<think></think>".repeat(200_000).as_str()), "");
        let many = format!("{}end", "x<think>y</think>".repeat(100_000));
        assert_eq!(strip_reasoning(&many), format!("{}end", "x".repeat(100_000)));
    }
}
