//! What kind of turn a report is (`interaction_type`, docs/reporting.md §6.1), and which valve
//! decides whether turns of that kind are reported (§6.2).

use serde_json::{Map, Value};

use crate::blocks::Answer;

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

/// A turn's `interaction_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    ChatMessage,
    FunctionCalling,
    /// A background task, by Open WebUI's name for it (`title_generation`, ...).
    Task(String),
    /// Classification is switched off (`INCLUDE_INTERACTION_CLASSIFICATION = false`).
    Unknown,
}

/// Which valve allows a type (§6.2); `Always` means always reported.
pub enum Gate {
    Chat,
    Tools,
    Tasks,
    Always,
}

impl Interaction {
    /// The rules of §6.1: a task by its name, else tool use, else a chat message.
    pub fn classify(enabled: bool, task: Option<&str>, request: &Map<String, Value>, answer: &Answer) -> Self {
        if !enabled {
            return Interaction::Unknown;
        }
        if let Some(task) = task.filter(|t| !t.is_empty()) {
            return Interaction::Task(task.to_string());
        }
        if crate::request::tool_use_detected(request, answer) {
            Interaction::FunctionCalling
        } else {
            Interaction::ChatMessage
        }
    }

    /// As the metadata says it.
    pub fn as_str(&self) -> &str {
        match self {
            Interaction::ChatMessage => "chat_message",
            Interaction::FunctionCalling => "function_calling",
            Interaction::Task(name) => name,
            Interaction::Unknown => "unknown",
        }
    }

    pub fn gate(&self) -> Gate {
        match self {
            Interaction::ChatMessage => Gate::Chat,
            Interaction::FunctionCalling => Gate::Tools,
            Interaction::Task(name) if SYSTEM_TASKS.contains(&name.as_str()) => Gate::Tasks,
            Interaction::Task(_) | Interaction::Unknown => Gate::Always,
        }
    }

    /// A turn of the chat itself (regenerations are tracked only for these).
    pub fn is_chat(&self) -> bool {
        matches!(self, Interaction::ChatMessage | Interaction::FunctionCalling)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::blocks::ToolCall;
    use serde_json::json;

    #[test]
    fn classification_follows_the_rules_in_order() {
        let plain = json!({"messages": [{"role": "user", "content": "hi"}]});
        let plain = plain.as_object().unwrap();
        let none = Answer { texts: vec!["x".into()], calls: vec![] };
        assert_eq!(Interaction::classify(true, None, plain, &none).as_str(), "chat_message");
        assert_eq!(Interaction::classify(true, Some(""), plain, &none).as_str(), "chat_message");
        assert_eq!(Interaction::classify(true, Some("title_generation"), plain, &none).as_str(), "title_generation");
        assert_eq!(Interaction::classify(false, Some("title_generation"), plain, &none).as_str(), "unknown");
        let tools = json!({"tools": [{"type": "function", "function": {"name": "f"}}], "messages": []});
        assert_eq!(Interaction::classify(true, None, tools.as_object().unwrap(), &none).as_str(), "function_calling");
        let history = json!({"messages": [{"role": "tool", "tool_call_id": "c", "content": "r"}]});
        assert_eq!(Interaction::classify(true, None, history.as_object().unwrap(), &none).as_str(), "function_calling");
        let parts = json!({"messages": [{"role": "user", "content": [{"type": "tool_use", "name": "g"}]}]});
        assert_eq!(Interaction::classify(true, None, parts.as_object().unwrap(), &none).as_str(), "function_calling");
        let call = ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into(), result: None };
        let answered = Answer { texts: vec![String::new(), String::new()], calls: vec![call] };
        assert_eq!(Interaction::classify(true, None, plain, &answered).as_str(), "function_calling");
        assert!(matches!(Interaction::Task("emoji_generation".into()).gate(), Gate::Tasks));
        assert!(matches!(Interaction::Task("memory_extraction".into()).gate(), Gate::Always));
    }
}
