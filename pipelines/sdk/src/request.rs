//! What a pipe receives for one `/chat/completions` call.

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Who is asking, as far as the answer's form goes: Open WebUI, which reads its own event lines
/// and sends the stream flag and a `user` object, or any other OpenAI client (the official
/// SDKs, LiteLLM, LangChain), which expects OpenAI's chat completions to the letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenWebUi,
    OpenAi,
}

/// One chat request routed to a pipe (docs/protocol.md §6.3).
#[derive(Debug, Clone)]
pub struct PipeRequest {
    /// The model id as requested, e.g. `openai_responses.gpt-5`.
    pub model: String,
    /// The id the pipe serves: the part after the first `.` for a manifold, else `model`.
    pub model_id: String,
    /// Whether the caller wants a stream; the server has applied the default (`true` for Open
    /// WebUI, `false` for other clients, as OpenAI's API has it).
    pub stream: bool,
    /// Open WebUI or another OpenAI client: a pipe refuses what it cannot honour for the
    /// latter rather than dropping it (Open WebUI sends its admin's model settings as they are).
    pub dialect: Dialect,
    /// The whole request: `stream`, `model`, `messages`, then every other key in request order.
    pub body: Map<String, Value>,
    /// Open WebUI's `user` object (`id`, `email`, `name`, `role`) when it sent one.
    pub user: Option<Value>,
    /// Cancelled when the client goes away or the server stops waiting for the answer.
    pub cancel: CancellationToken,
}

/// A `stream: false` chat completion the server answered with one of its pipes, shown to the
/// filters afterwards (Open WebUI never sends an outlet for its background tasks, so this is
/// the only way a filter sees their answers).
#[derive(Debug, Clone)]
pub struct ServedCompletion {
    /// The model id as requested.
    pub model: String,
    /// The request body as the pipe received it (with `user` when Open WebUI sent one).
    pub request: Map<String, Value>,
    /// The `chat.completion` object sent back.
    pub response: Value,
    /// Unix milliseconds when the request arrived and when the answer was complete.
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// The answer went out as a stream (and was collected for the observers).
    pub streamed: bool,
}

impl PipeRequest {
    /// `messages` of the body (always an array: the server checked it).
    pub fn messages(&self) -> &[Value] {
        self.body.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The content of the last `user` message as the reference passes it: a string as is, the
    /// first text part of array content, the array itself when it has no text part.
    pub fn user_message(&self) -> Option<Value> {
        let last = self.messages().iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
        match last.get("content")? {
            Value::Array(parts) => Some(
                parts
                    .iter()
                    .find(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                    .and_then(|p| p.get("text").cloned())
                    .unwrap_or_else(|| Value::Array(parts.clone())),
            ),
            other => Some(other.clone()),
        }
    }
}
