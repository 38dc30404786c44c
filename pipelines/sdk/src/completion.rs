//! A whole answer at once: a pipe that has its answer in one piece (a cached reply, a non-
//! streaming upstream, the reference's "return a dict") hands over a `chat.completion` object
//! and gets the events the server streams or collects, as for any other pipe.

use futures_util::StreamExt;
use serde_json::Value;

use crate::{FinishReason, PipeEvent, PipeStream, PipelineError, ToolCallDelta};

/// The events of a `chat.completion` object (`choices[0].message` and `usage`): reasoning,
/// text, tool calls, annotations, images, usage and the finish reason. An object without a
/// message is an error that names what is missing.
pub fn events(completion: &Value) -> Result<Vec<PipeEvent>, PipelineError> {
    let choice = completion
        .pointer("/choices/0")
        .ok_or_else(|| PipelineError::internal("the pipe's completion has no choices[0]"))?;
    let message = choice
        .get("message")
        .filter(|m| m.is_object())
        .ok_or_else(|| PipelineError::internal("the pipe's completion has no choices[0].message"))?;
    let mut out = Vec::new();
    let text = |key: &str| message.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(reasoning) = text("reasoning_content") {
        out.push(PipeEvent::Reasoning(reasoning.to_string()));
    }
    if let Some(content) = text("content") {
        out.push(PipeEvent::Text(content.to_string()));
    }
    for (i, call) in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let function = call.get("function");
        let arguments = match function.and_then(|f| f.get("arguments")) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        out.push(PipeEvent::ToolCall(ToolCallDelta {
            index: i as u32,
            id: call.get("id").and_then(Value::as_str).map(str::to_owned),
            name: function.and_then(|f| f.get("name")).and_then(Value::as_str).map(str::to_owned),
            arguments,
        }));
    }
    if let Some(list) = message.get("annotations").and_then(Value::as_array).filter(|l| !l.is_empty()) {
        out.push(PipeEvent::Annotations(list.clone()));
    }
    let images: Vec<String> = message
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/image_url/url").or(Some(i)).and_then(Value::as_str).map(str::to_owned))
        .collect();
    if !images.is_empty() {
        out.push(PipeEvent::Images(images));
    }
    let finish = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => Some(FinishReason::Length),
        Some("tool_calls") => Some(FinishReason::ToolCalls),
        Some("content_filter") => Some(FinishReason::ContentFilter),
        Some("stop") => Some(FinishReason::Stop),
        _ => None,
    };
    if let Some(reason) = finish {
        out.push(PipeEvent::Finish(reason));
    }
    if let Some(usage) = completion.get("usage").and_then(Value::as_object) {
        out.push(PipeEvent::Usage(usage.clone()));
    }
    Ok(out)
}

/// [`events`] as the stream `Pipeline::pipe` returns.
pub fn stream(completion: &Value) -> Result<PipeStream, PipelineError> {
    Ok(futures_util::stream::iter(events(completion)?).boxed())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_completion_becomes_its_events() {
        let completion = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "Hi", "reasoning_content": "hmm",
                        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
        let events = events(&completion).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0], PipeEvent::Reasoning("hmm".into()));
        assert_eq!(events[1], PipeEvent::Text("Hi".into()));
        assert!(
            matches!(&events[2], PipeEvent::ToolCall(c) if c.id.as_deref() == Some("call_1") && c.arguments == "{}")
        );
        assert_eq!(events[3], PipeEvent::Finish(FinishReason::ToolCalls));
        assert!(matches!(&events[4], PipeEvent::Usage(u) if u["total_tokens"] == 3));
        assert!(super::events(&json!({"choices": []})).is_err());
        assert!(super::events(&json!("Hi")).is_err());
    }
}
