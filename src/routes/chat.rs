use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use sluice_sdk::{PipeEvent, PipeRequest, Pipeline, PipelineKind};
use tokio_util::sync::CancellationToken;

use super::chat_request::ChatRequest;
use super::observe::Observation;
use crate::error::ApiError;
use sluice_sdk::clock::unix_ms as unix_now_ms;

use crate::metrics::{Metrics, Stage};
use crate::registry::LiveRegistry;
use crate::sse::{self, Envelope, StreamOptions};

/// `POST /chat/completions` (docs/protocol.md §6): routes to a pipe or manifold sub-model
/// and answers with an SSE stream, or one `chat.completion` when `stream` is false.
pub async fn chat_completions(
    live: web::Data<LiveRegistry>,
    metrics: web::Data<Metrics>,
    streams: web::Data<StreamOptions>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let registry = live.load();
    let received = crate::body::json_body(&req, payload).await?;
    let heavy = received.is_heavy();
    let (form, _reservation) = received.into_parts();
    let ChatRequest { model, dialect, stream, include_usage, body, user } = ChatRequest::parse(form, req.headers())?;
    tracing::debug!(model = %model, stream, dialect = ?dialect, "chat completion");
    let resolved = registry
        .model_entry(&model)
        .filter(|r| r.module.kind() != PipelineKind::Filter)
        .ok_or_else(|| ApiError::NotFound(registry.why_not_a_model(&model)))?;

    let cancel = CancellationToken::new();
    // Cancels the pipe if the client leaves while it is still starting.
    let starting = cancel.clone().drop_guard();
    let started_at_ms = unix_now_ms();
    // Filters see the answer afterwards (routes/observe.rs): every non-streamed one, and a
    // streamed one when a filter asks for streams; the body is kept only when there is a
    // filter to show it to.
    let observers: Vec<Arc<dyn Pipeline>> = registry
        .modules()
        .iter()
        .filter(|m| m.kind() == PipelineKind::Filter && (!stream || m.pipeline.observes_streams()))
        .map(|m| Arc::clone(&m.pipeline))
        .collect();
    let keep_body = !observers.is_empty();
    let request = PipeRequest {
        model: model.clone(),
        model_id: resolved.model_id,
        stream,
        dialect,
        body,
        user,
        cancel: cancel.clone(),
    };
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
    let observation =
        observed_body.map(|request| Observation { observers, model: model.clone(), request, started_at_ms, heavy });
    if stream {
        starting.disarm();
        let events = match observation {
            Some(o) => o.record(events, envelope.clone(), dialect),
            None => events,
        };
        let form = sse::Form::of(dialect, include_usage);
        let log = crate::telemetry::AnswerLog::of(&req);
        let body = sse::body(events, envelope, form, streams.get_ref().clone(), cancel, log);
        Ok(HttpResponse::Ok()
            .content_type("text/event-stream; charset=utf-8")
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(body))
    } else {
        let completion = sse::collect(events, envelope, dialect).await?;
        drop(starting);
        if let Some(o) = observation {
            o.show(completion.clone(), false);
        }
        Ok(HttpResponse::Ok().json(completion))
    }
}
