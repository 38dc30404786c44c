//! The one vocabulary between a pipe and the wire. The server's SSE encoder alone turns these
//! into `chat.completion.chunk` lines, Open WebUI `{"event": ...}` lines, or one
//! `chat.completion` object when the caller asked for `stream: false`.

use futures_util::stream::BoxStream;
use serde_json::{Map, Value};

use crate::PipelineError;

/// What a pipe returns: events until it is done. Dropping it cancels the pipe.
pub type PipeStream = BoxStream<'static, PipeEvent>;

/// One piece of a pipe's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PipeEvent {
    /// Visible answer text (`delta.content`).
    Text(String),
    /// Reasoning shown in Open WebUI's collapsible block (`delta.reasoning_content`).
    Reasoning(String),
    /// A fragment of a function call, accumulated by the client by `index`.
    ToolCall(ToolCallDelta),
    /// `url_citation` annotations (`delta.annotations`), saved by Open WebUI as citations.
    Annotations(Vec<Value>),
    /// Images as data URIs or URLs (`delta.images`), stored and shown by Open WebUI.
    Images(Vec<String>),
    /// A status line above the answer (Open WebUI `status` event).
    Status(Status),
    /// A citation/source card (Open WebUI `source` event data: `source`, `document`, `metadata`).
    Source(Value),
    /// A toast: `level` is `info`, `success`, `warning` or `error`.
    Notification { level: String, content: String },
    /// Token usage in chat-completions names (`prompt_tokens`, ...). Sent once, after the finish.
    Usage(Map<String, Value>),
    /// Why the answer ended. Without it the stream ends with `stop`.
    Finish(FinishReason),
    /// The answer failed; nothing after it is read.
    Error(PipelineError),
}

impl PipeEvent {
    pub fn text(s: impl Into<String>) -> Self {
        PipeEvent::Text(s.into())
    }

    pub fn status(description: impl Into<String>, done: bool) -> Self {
        PipeEvent::Status(Status::new(description, done))
    }
}

/// A fragment of one tool call. `id` and `name` come with the first fragment of an index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// An Open WebUI status line (docs/open-webui-client.md §4.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub description: String,
    pub done: bool,
    pub hidden: bool,
    /// Extra keys such as `action`, `urls`, `queries`, `count`.
    pub extra: Map<String, Value>,
}

impl Status {
    pub fn new(description: impl Into<String>, done: bool) -> Self {
        Self { description: description.into(), done, hidden: false, extra: Map::new() }
    }
}

/// `finish_reason` of the finish chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}
