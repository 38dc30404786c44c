//! `GET /metrics`: Prometheus text format, behind the API key like every route but `GET /`
//! (Prometheus sends it with `authorization: {credentials: <key>}` in its scrape config).

use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::metrics::QueueFigures;
use crate::startup::AppState;

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let store = std::sync::Arc::clone(&state.store);
    let queues = web::block(move || store.queues()).await.ok().and_then(Result::ok).unwrap_or_default();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let queues: Vec<QueueFigures> = queues
        .into_iter()
        .map(|q| QueueFigures {
            oldest_age_seconds: q.oldest_created_at_ms.map(|t| now_ms.saturating_sub(t) as f64 / 1000.0),
            queue: q.queue,
            queued: q.depth,
            dead: q.dead,
        })
        .collect();
    let pipelines: Vec<(String, Vec<(&'static str, u64)>)> = state
        .registry
        .modules()
        .iter()
        .map(|m| (m.id().to_string(), m.pipeline.counters()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render(&queues, &pipelines)))
}
