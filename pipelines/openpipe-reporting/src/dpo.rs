//! Regeneration detection and DPO pairs (docs/reporting.md §10–§11). Siblings are answers
//! to the same parent message; a regeneration opens a pending pair; continuing the chat from one
//! sibling confirms it as chosen and the differing others as rejected.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_sdk::digest::sha256_hex;

use crate::valves::DpoSplit;

pub const SIBLINGS_NS: &str = "openpipe_reporting.siblings";
pub const PENDING_NS: &str = "openpipe_reporting.pending";
/// Siblings kept per parent message.
const MAX_SIBLINGS: usize = 8;
/// Rejected candidates submitted per confirmed pair.
const MAX_REJECTED: usize = 4;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Sibling {
    pub message_id: String,
    /// Normalized answer text (§10.2).
    pub text: String,
    /// The final answer text as sent (`<think>` removed), for a dataset entry.
    pub final_text: String,
    pub has_tool_calls: bool,
    pub model: String,
    /// Messages of the final step's request, for a dataset entry.
    pub request_messages: Vec<Value>,
    pub user_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiblingList {
    pub siblings: Vec<Sibling>,
    /// A regeneration happened and no continuation has chosen between the siblings yet.
    pub pending: bool,
}

/// Parent keys with an open pair, per chat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PendingList {
    pub parents: Vec<String>,
}

/// Temporary chats reuse the id `local`, so the session tells them apart (§10.1).
pub fn chat_key(chat_id: &str, session_id: Option<&str>) -> String {
    if chat_id == "local" || chat_id.starts_with("local:") || chat_id.starts_with("temporary") {
        format!("{chat_id}|{}", session_id.unwrap_or_default())
    } else {
        chat_id.to_string()
    }
}

/// The message the answer replies to: `parentId`, the preceding user message's id, or a hash
/// of the history (§10.2).
pub fn parent_key(messages: &[Value]) -> Option<String> {
    let (last, before) = messages.split_last()?;
    if let Some(p) = last.get("parentId").and_then(Value::as_str).filter(|p| !p.is_empty()) {
        return Some(p.to_string());
    }
    if let Some(prev) = before.last() {
        if prev.get("role").and_then(Value::as_str) == Some("user") {
            if let Some(id) = prev.get("id").and_then(Value::as_str).filter(|i| !i.is_empty()) {
                return Some(id.to_string());
            }
        }
    }
    let canonical: Vec<Value> = before
        .iter()
        .map(|m| {
            json!([m.get("role").cloned().unwrap_or(Value::Null), m.get("content").cloned().unwrap_or(Value::Null)])
        })
        .collect();
    Some(format!("h:{}", sha256_hex(Value::Array(canonical).to_string().as_bytes())))
}

/// Removes `<think>…</think>` blocks.
pub fn strip_think(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// Step texts joined, reasoning removed, whitespace collapsed.
pub fn normalize(texts: &[String]) -> String {
    strip_think(&texts.join(" ")).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What adding an answer to its sibling list found.
#[derive(Debug, Default, PartialEq)]
pub struct Regeneration {
    pub regenerated_from: String,
    /// 1 for the first regeneration.
    pub index: usize,
}

impl SiblingList {
    /// Adds (or, for a revision, replaces) an answer; says whether it regenerated an earlier one.
    pub fn add(&mut self, sibling: Sibling) -> Option<Regeneration> {
        if let Some(existing) = self.siblings.iter_mut().find(|s| s.message_id == sibling.message_id) {
            *existing = sibling;
            return None;
        }
        let previous = self.siblings.last().map(|s| s.message_id.clone());
        self.siblings.push(sibling);
        if self.siblings.len() > MAX_SIBLINGS {
            self.siblings.remove(0);
        }
        let from = previous?;
        self.pending = true;
        Some(Regeneration { regenerated_from: from, index: self.siblings.len() - 1 })
    }

    /// The sibling the conversation continued from, if `history_ids` holds one.
    pub fn chosen<'a>(&'a self, history_ids: &[&str]) -> Option<&'a Sibling> {
        self.siblings.iter().find(|s| history_ids.contains(&s.message_id.as_str()))
    }

    /// Siblings that lost to `chosen`: non-empty and different text.
    pub fn rejected(&self, chosen: &Sibling) -> Vec<&Sibling> {
        self.siblings
            .iter()
            .filter(|s| s.message_id != chosen.message_id && !s.text.is_empty() && s.text != chosen.text)
            .take(MAX_REJECTED)
            .collect()
    }
}

/// Dataset entries for a confirmed pair (§11.2); none when a side used tools (v1).
pub fn entries(chat_id: &str, parent: &str, chosen: &Sibling, rejected: &[&Sibling], split: DpoSplit) -> Vec<Value> {
    if chosen.has_tool_calls {
        return Vec::new();
    }
    rejected
        .iter()
        .filter(|r| !r.has_tool_calls)
        .map(|r| {
            let mut messages = chosen.request_messages.clone();
            messages.push(json!({"role": "assistant", "content": chosen.final_text}));
            let mut metadata = serde_json::Map::new();
            for (k, v) in [
                ("source", Some("open-webui")),
                ("kind", Some("dpo_regeneration")),
                ("chat_id", Some(chat_id)),
                ("parent_message_id", Some(parent)),
                ("chosen_message_id", Some(chosen.message_id.as_str())),
                ("rejected_message_id", Some(r.message_id.as_str())),
                ("chosen_model", Some(chosen.model.as_str())),
                ("rejected_model", Some(r.model.as_str())),
                ("user_id", chosen.user_id.as_deref()),
            ] {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    metadata.insert(k.into(), Value::String(v.into()));
                }
            }
            let mut entry = json!({
                "messages": messages,
                "rejected_message": {"role": "assistant", "content": r.final_text},
            });
            if let Some(obj) = entry.as_object_mut() {
                match split {
                    DpoSplit::TRAIN => obj.insert("split".into(), json!("TRAIN")),
                    DpoSplit::TEST => obj.insert("split".into(), json!("TEST")),
                    DpoSplit::AUTO => None,
                };
                obj.insert("metadata".into(), Value::Object(metadata));
            }
            entry
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sib(id: &str, text: &str) -> Sibling {
        Sibling {
            message_id: id.into(),
            text: text.into(),
            final_text: text.into(),
            has_tool_calls: false,
            model: "m".into(),
            request_messages: vec![json!({"role": "user", "content": "q"})],
            user_id: Some("u".into()),
        }
    }

    #[test]
    fn parent_is_parent_id_then_user_id_then_history_hash() {
        let with_parent =
            [json!({"id": "u1", "role": "user"}), json!({"id": "a", "role": "assistant", "parentId": "p"})];
        assert_eq!(parent_key(&with_parent).unwrap(), "p");
        let plain = [json!({"id": "u1", "role": "user"}), json!({"id": "a", "role": "assistant"})];
        assert_eq!(parent_key(&plain).unwrap(), "u1");
        let no_ids = [json!({"role": "user", "content": "hi"}), json!({"role": "assistant"})];
        assert!(parent_key(&no_ids).unwrap().starts_with("h:"));
    }

    #[test]
    fn regeneration_then_confirmation() {
        let mut list = SiblingList::default();
        assert_eq!(list.add(sib("a1", "Launceston.")), None);
        assert_eq!(list.add(sib("a1", "Launceston!")), None, "a revision is not a regeneration");
        assert_eq!(list.add(sib("a2", "Hobart.")), Some(Regeneration { regenerated_from: "a1".into(), index: 1 }));
        assert!(list.pending);
        let chosen = list.chosen(&["u1", "a2", "u2"]).unwrap();
        assert_eq!(chosen.message_id, "a2");
        let rejected = list.rejected(chosen);
        assert_eq!(rejected.len(), 1);
        let e = entries("c", "u1", chosen, &rejected, DpoSplit::TRAIN);
        assert_eq!(e[0]["rejected_message"], json!({"role": "assistant", "content": "Launceston!"}));
        assert_eq!(e[0]["messages"][1], json!({"role": "assistant", "content": "Hobart."}));
        assert_eq!(e[0]["split"], "TRAIN");
        assert!(entries("c", "u1", chosen, &rejected, DpoSplit::AUTO)[0].get("split").is_none());
    }

    #[test]
    fn text_normalization() {
        assert_eq!(normalize(&["<think>x</think>  Hello\n world".into(), "again".into()]), "Hello world again");
        assert_eq!(chat_key("local:abc", Some("s")), "local:abc|s");
        assert_eq!(chat_key("c-1", Some("s")), "c-1");
    }
}
