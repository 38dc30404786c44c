use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use sluice_sdk::{PipeEvent, PipeRequest, Pipeline, PipelineKind, ServedCompletion};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use sluice_sdk::clock::unix_ms as unix_now_ms;

use crate::metrics::{Metrics, Stage};
use crate::registry::Registry;
use crate::sse::{self, Envelope, StreamOptions};

/// `stream` as the reference parses it: lax booleans, absent means `true` (§6.1).
fn stream_flag(value: Option<&Value>) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(true),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
            _ => Err(ApiError::Unprocessable(format!("stream: expected a boolean, got {s:?}"))),
        },
        Some(other) => Err(ApiError::Unprocessable(format!("stream: expected a boolean, got {other}"))),
    }
}

/// Checks the few fields the server itself needs; everything else passes through to the pipe.
/// `content: null` and array content are accepted (the reference rejects the former).
fn validate(form: &Map<String, Value>) -> Result<(String, bool), ApiError> {
    let model = match form.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(ApiError::Unprocessable("model: must not be empty".into())),
        Some(_) => return Err(ApiError::Unprocessable("model: must be a string".into())),
        None => return Err(ApiError::Unprocessable("model: field required".into())),
    };
    let messages = match form.get("messages") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::Unprocessable("messages: must be a list".into())),
        None => return Err(ApiError::Unprocessable("messages: field required".into())),
    };
    crate::body::check_messages(messages)?;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(ApiError::Unprocessable(format!("messages[{i}]: must be an object")));
        };
        match message.get("role") {
            Some(Value::String(_)) => {}
            Some(_) => return Err(ApiError::Unprocessable(format!("messages[{i}].role: must be a string"))),
            None => return Err(ApiError::Unprocessable(format!("messages[{i}].role: field required"))),
        }
        match message.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "messages[{i}].content: must be a string, a list of parts or null"
                )))
            }
        }
    }
    if let Some(user) = form.get("user") {
        if !user.is_object() && !user.is_null() && !user.is_string() {
            return Err(ApiError::Unprocessable("user: must be an object".into()));
        }
    }
    Ok((model, stream_flag(form.get("stream"))?))
}

/// `POST /chat/completions` (docs/protocol.md §6): routes to a pipe or manifold sub-model
/// and answers with an SSE stream, or one `chat.completion` when `stream` is false.
pub async fn chat_completions(
    registry: web::Data<Registry>,
    metrics: web::Data<Metrics>,
    streams: web::Data<StreamOptions>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let received = crate::body::json_body(&req, payload).await?;
    let heavy = received.is_heavy();
    let (form, _reservation) = received.into_parts();
    let Value::Object(mut form) = form else {
        return Err(ApiError::Unprocessable("the request body must be a JSON object".into()));
    };
    let (model, stream) = validate(&form)?;
    let resolved = registry
        .model_entry(&model)
        .filter(|r| r.module.kind() != PipelineKind::Filter)
        .ok_or_else(|| ApiError::pipeline_not_found(&model))?;

    // The body as the pipe sees it: `stream` (default applied), `model`, `messages`, then the
    // rest in request order (§6.3).
    let mut body = Map::with_capacity(form.len() + 1);
    body.insert("stream".into(), stream.into());
    for key in ["model", "messages"] {
        if let Some(v) = form.shift_remove(key) {
            body.insert(key.into(), v);
        }
    }
    form.shift_remove("stream");
    body.extend(form);
    let user = body.get("user").filter(|u| u.is_object()).cloned();

    let cancel = CancellationToken::new();
    // Cancels the pipe if the client leaves while it is still starting.
    let starting = cancel.clone().drop_guard();
    let started_at_ms = unix_now_ms();
    // Filters see a non-streamed answer afterwards (background tasks are answered that way);
    // the body is kept only when there is a filter to show it to.
    let observers: Vec<Arc<dyn Pipeline>> = if stream {
        Vec::new()
    } else {
        registry
            .modules()
            .iter()
            .filter(|m| m.kind() == PipelineKind::Filter)
            .map(|m| Arc::clone(&m.pipeline))
            .collect()
    };
    let keep_body = !observers.is_empty();
    let request =
        PipeRequest { model: model.clone(), model_id: resolved.model_id, stream, body, user, cancel: cancel.clone() };
    tracing::debug!(model = %model, stream, "chat completion");
    let pipeline_id = resolved.module.id().to_string();
    let metrics = metrics.into_inner();
    // Until the answer starts, the pipe converts the whole conversation: a large one does that
    // off this thread (crate::offload), and so does the copy kept for the filters.
    let pipeline = Arc::clone(&resolved.module.pipeline);
    let started = crate::offload::run(heavy, async move {
        let observed_body = keep_body.then(|| request.body.clone());
        (pipeline.pipe(request).await, observed_body)
    });
    let (events, observed_body) = started.await?;
    let events = match events {
        Ok(events) => events,
        Err(e) => {
            metrics.pipe_error(&pipeline_id, Stage::BeforeStream, e.kind);
            return Err(registry.redact(e).into());
        }
    };
    // Counts in-stream errors; for a stream, also holds the open-stream gauge until it ends.
    let open = stream.then(|| metrics.stream_opened());
    let redactor = registry.clone();
    let events: sluice_sdk::PipeStream = Box::pin(events.map(move |event| {
        let _open = &open;
        match event {
            PipeEvent::Error(e) => {
                metrics.pipe_error(&pipeline_id, Stage::InStream, e.kind);
                PipeEvent::Error(redactor.redact(e))
            }
            other => other,
        }
    }));
    let envelope = Envelope::new(&model);
    if stream {
        starting.disarm();
        let body = sse::body(events, envelope, streams.get_ref().clone(), cancel);
        Ok(HttpResponse::Ok()
            .content_type("text/event-stream; charset=utf-8")
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(body))
    } else {
        let completion = sse::collect(events, envelope).await?;
        drop(starting);
        if let Some(request) = observed_body {
            let served = ServedCompletion {
                model: model.clone(),
                request,
                response: completion.clone(),
                started_at_ms,
                finished_at_ms: unix_now_ms(),
            };
            // After the answer, off the request path (and off this thread when large).
            tokio::spawn(crate::offload::run(heavy, async move {
                for f in observers {
                    f.observe_completion(&served).await;
                }
            }));
        }
        Ok(HttpResponse::Ok().json(completion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_defaults_to_true_and_parses_laxly() {
        assert!(matches!(stream_flag(None), Ok(true)));
        assert!(matches!(stream_flag(Some(&json!("no"))), Ok(false)));
        assert!(matches!(stream_flag(Some(&json!(0))), Ok(false)));
        assert!(stream_flag(Some(&json!("maybe"))).is_err());
        assert!(stream_flag(Some(&json!([]))).is_err());
    }
}
