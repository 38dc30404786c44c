//! `GET /metrics`: Prometheus text format, behind the API key like every route but `GET /`
//! (Prometheus sends it with `authorization: {credentials: <key>}` in its scrape config).

use actix_web::{web, HttpResponse};

use sluice_sdk::clock::unix_ms;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::registry::LiveRegistry;
use crate::store::StoreAdmin;

pub async fn metrics(
    live: web::Data<LiveRegistry>,
    metrics: web::Data<Metrics>,
    store: web::Data<dyn StoreAdmin>,
) -> Result<HttpResponse, ApiError> {
    let registry = live.load();
    let queues = store.queues().await.unwrap_or_default();
    let pipelines: Vec<(String, Vec<(&'static str, u64)>)> = registry
        .modules()
        .iter()
        .map(|m| (m.id().to_string(), m.pipeline.counters()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let mut text = metrics.render(&queues, unix_ms(), &pipelines);
    // Tasks on this HTTP worker's runtime: answers' upstream readers, upstream connections,
    // timers. With one worker (`SLUICE_WORKERS=1`) that is all of them: a count that only
    // grows under steady load is a leak.
    let tasks = tokio::runtime::Handle::try_current().map(|h| h.metrics().num_alive_tasks()).unwrap_or(0);
    crate::metrics::render_runtime(&mut text, tasks, store.health());
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
