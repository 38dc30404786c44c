//! A whole answer as one `chat.completion` object, for `stream: false`.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Map, Value};
use sluice_sdk::{Dialect, FinishReason, PipeEvent, PipeStream, PipelineError};

use super::Envelope;

/// The most text a non-streamed answer gathers (content, reasoning, tool arguments, images):
/// far beyond any real answer; a red team's upstream sent 1.5 GB, which was held whole (4.6 GB
/// at its peak) before a byte went out.
pub const MAX_COLLECTED_BYTES: usize = 64 << 20;

/// Collects a whole answer into one `chat.completion` object (`stream: false`). Statuses,
/// sources and notifications have no place in it and are dropped.
/// `dialect`: other clients get `content: null` for an answer of tool calls only, as OpenAI
/// sends it; Open WebUI keeps the reference's `""`.
pub async fn collect(mut events: PipeStream, envelope: Envelope, dialect: Dialect) -> Result<Value, PipelineError> {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut calls: BTreeMap<u32, (Option<String>, Option<String>, String)> = BTreeMap::new();
    let mut annotations = Vec::new();
    let mut images = Vec::new();
    let mut usage = None;
    let mut finish = None;
    let mut held = 0usize;
    while let Some(event) = events.next().await {
        held += match &event {
            PipeEvent::Text(t) | PipeEvent::Reasoning(t) => t.len(),
            PipeEvent::ToolCall(c) => c.arguments.len(),
            PipeEvent::Images(urls) => urls.iter().map(String::len).sum(),
            _ => 0,
        };
        if held > MAX_COLLECTED_BYTES {
            return Err(PipelineError::upstream(format!(
                "{} answered more than {} MiB; ask for it with \"stream\": true",
                envelope.model,
                MAX_COLLECTED_BYTES >> 20
            )));
        }
        match event {
            PipeEvent::Text(t) => content.push_str(&t),
            PipeEvent::Reasoning(t) => reasoning.push_str(&t),
            PipeEvent::ToolCall(c) => {
                let entry = calls.entry(c.index).or_default();
                if c.id.is_some() {
                    entry.0 = c.id;
                }
                if c.name.is_some() {
                    entry.1 = c.name;
                }
                entry.2.push_str(&c.arguments);
            }
            PipeEvent::Annotations(list) => annotations.extend(list),
            PipeEvent::Images(urls) => images.extend(urls),
            PipeEvent::Usage(u) => usage = Some(u),
            PipeEvent::Finish(f) => finish = Some(f),
            PipeEvent::Error(e) => return Err(e),
            PipeEvent::Status(_) | PipeEvent::Source(_) | PipeEvent::Notification { .. } => {}
        }
    }
    if content.is_empty() && calls.is_empty() && images.is_empty() {
        // Open WebUI never marks a reply without content or tool calls as finished
        // (docs/open-webui-client.md §4.5): say what happened instead.
        if reasoning.is_empty() {
            return Err(PipelineError::upstream(format!("{} returned an empty answer", envelope.model)));
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), "assistant".into());
    let content = match dialect {
        Dialect::OpenAi if content.is_empty() && !calls.is_empty() => Value::Null,
        _ => content.into(),
    };
    message.insert("content".into(), content);
    if !reasoning.is_empty() {
        message.insert("reasoning_content".into(), reasoning.into());
    }
    if !calls.is_empty() {
        let list: Vec<Value> = calls
            .into_iter()
            .map(|(index, (id, name, arguments))| {
                serde_json::json!({
                    "id": id.unwrap_or_else(|| format!("call_{index}")),
                    "type": "function",
                    "function": {"name": name.unwrap_or_default(), "arguments": arguments},
                })
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(list));
    }
    if !annotations.is_empty() {
        message.insert("annotations".into(), Value::Array(annotations));
    }
    if !images.is_empty() {
        let list =
            images.into_iter().map(|u| serde_json::json!({"type": "image_url", "image_url": {"url": u}})).collect();
        message.insert("images".into(), Value::Array(list));
    }
    let tool_calls = message.contains_key("tool_calls");
    let finish = finish.unwrap_or(if tool_calls { FinishReason::ToolCalls } else { FinishReason::Stop });
    let mut completion = serde_json::json!({
        "id": envelope.id,
        "object": "chat.completion",
        "created": envelope.created,
        "model": envelope.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish.as_str()}],
    });
    if let (Some(usage), Value::Object(map)) = (usage, &mut completion) {
        map.insert("usage".into(), Value::Object(usage));
    }
    Ok(completion)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_non_streamed_answer_is_gathered_up_to_a_bound() {
        fn mib() -> PipeEvent {
            PipeEvent::text("x".repeat(1 << 20))
        }
        let within = futures_util::stream::iter((0..MAX_COLLECTED_BYTES >> 20).map(|_| mib())).boxed();
        let answer = collect(within, Envelope::new("m"), Dialect::OpenAi).await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"].as_str().unwrap().len(), MAX_COLLECTED_BYTES);
        let endless = futures_util::stream::iter(std::iter::repeat_with(mib)).boxed();
        let error = collect(endless, Envelope::new("m"), Dialect::OpenAi).await.unwrap_err();
        assert_eq!(error.message, "m answered more than 64 MiB; ask for it with \"stream\": true");
    }
}
