//! Hidden markers and the records behind them (docs/manifold.md §7.5). One marker per
//! upstream response, `[sluice:v1:turn:<ID>]: #` at the very start of the answer: a Markdown
//! link-reference definition, invisible when rendered. The record under ID holds the
//! response's items verbatim so a tool round or a later turn can send them back byte for byte.

use serde_json::{json, Value};
use sluice_sdk::marker;

/// Store namespace of turn records.
pub const NAMESPACE: &str = "openai_responses.turn";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// 16 Crockford base32 characters from the OS CSPRNG (80 bits).
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    // Without OS randomness the id is still unique enough to key a record; it only loses
    // unguessability, which the owner check backs up.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| CROCKFORD[(*b & 31) as usize] as char).collect()
}

/// The text sent as the first content of an answer (see [`sluice_sdk::marker`]).
pub fn marker(id: &str) -> String {
    marker::format("turn", id)
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
        while let Some(start) = out.find(open) {
            match out[start..].find(close) {
                Some(len) => out.replace_range(start..start + len + close.len(), ""),
                None => {
                    out.truncate(start);
                    break;
                }
            }
        }
    }
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
        self.items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("message"))
            .flat_map(|m| m.get("content").and_then(Value::as_array).cloned().unwrap_or_default())
            .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }
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
    fn markers_round_trip_and_are_stripped() {
        let id = new_id();
        assert!(is_id(&id));
        let text = format!("{}Hello\n\n[openai_responses:v2:function_call:0123456789ABCDEF]: #\n", marker(&id));
        assert_eq!(find_markers(&text), vec![id.clone()]);
        assert_eq!(strip_markers(&text), "Hello");
        assert!(find_markers("[sluice:v1:turn:short]: #").is_empty());
        assert!(find_markers("[sluice:v1:turn:0123456789ABCDEU]: #").is_empty(), "U is not Crockford");
    }

    #[test]
    fn reasoning_blocks_are_removed() {
        let text = "<details type=\"reasoning\" done=\"true\">\n<summary>Thought</summary>\nx\n</details>\nA<think>hmm</think>B";
        assert_eq!(strip_reasoning(text), "\nAB");
    }
}
