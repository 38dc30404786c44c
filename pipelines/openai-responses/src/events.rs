//! The Responses API's stream events, by their `type` (docs/manifold.md §5): named once here,
//! so the converter and the retry logic match an enum, and an event type this code does not
//! know is [`EventKind::Other`], skipped rather than fatal.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    OutputItemAdded,
    OutputItemDone,
    ReasoningSummaryPartAdded,
    /// A delta of the reasoning summary or of raw reasoning text.
    ReasoningDelta,
    ReasoningSummaryDone,
    /// A delta of the answer's text, or of a refusal.
    TextDelta,
    AnnotationAdded,
    ArgumentsDelta,
    ArgumentsDone,
    PartialImage,
    Completed,
    Incomplete,
    Failed,
    Error,
    /// Any other type: progress of hosted tools, part boundaries, new events.
    Other,
}

impl EventKind {
    pub fn of(event: &Value) -> EventKind {
        match event.get("type").and_then(Value::as_str).unwrap_or_default() {
            "response.created" => EventKind::Created,
            "response.output_item.added" => EventKind::OutputItemAdded,
            "response.output_item.done" => EventKind::OutputItemDone,
            "response.reasoning_summary_part.added" => EventKind::ReasoningSummaryPartAdded,
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => EventKind::ReasoningDelta,
            "response.reasoning_summary_text.done" => EventKind::ReasoningSummaryDone,
            "response.output_text.delta" | "response.refusal.delta" => EventKind::TextDelta,
            "response.output_text.annotation.added" => EventKind::AnnotationAdded,
            "response.function_call_arguments.delta" => EventKind::ArgumentsDelta,
            "response.function_call_arguments.done" => EventKind::ArgumentsDone,
            "response.image_generation_call.partial_image" => EventKind::PartialImage,
            "response.completed" => EventKind::Completed,
            "response.incomplete" => EventKind::Incomplete,
            "response.failed" => EventKind::Failed,
            "error" => EventKind::Error,
            _ => EventKind::Other,
        }
    }

    /// The last event of a response.
    pub fn is_terminal(self) -> bool {
        matches!(self, EventKind::Completed | EventKind::Incomplete | EventKind::Failed | EventKind::Error)
    }
}

/// The error a `response.failed` or `error` event carries: its code and message. `error`
/// comes in two shapes, flat (documented) and nested under `error` (seen in the wild).
pub fn failure(event: &Value) -> Option<(Option<&str>, Option<&str>)> {
    fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
        v.get(key).and_then(Value::as_str)
    }
    match EventKind::of(event) {
        EventKind::Failed => {
            let err = event.get("response").and_then(|r| r.get("error")).unwrap_or(&Value::Null);
            Some((str_of(err, "code"), str_of(err, "message")))
        }
        EventKind::Error => {
            let nested = event.get("error").unwrap_or(&Value::Null);
            let code = str_of(event, "code").or_else(|| str_of(nested, "code"));
            Some((code, str_of(event, "message").or_else(|| str_of(nested, "message"))))
        }
        _ => None,
    }
}

/// A failure worth trying again before anything was shown: the upstream's own error or load.
pub fn is_retryable(event: &Value) -> bool {
    matches!(failure(event), Some((Some("server_error" | "rate_limit_exceeded" | "too_many_requests"), _)))
}
