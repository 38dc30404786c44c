//! `GET /metrics`: Prometheus text format, behind the API key like every route but `GET /`
//! (Prometheus sends it with `authorization: {credentials: <key>}` in its scrape config).

use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::sse::unix_now_ms;
use crate::startup::AppState;

pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let queues = state.store.queues().await.unwrap_or_default();
    let pipelines: Vec<(String, Vec<(&'static str, u64)>)> = state
        .registry
        .modules()
        .iter()
        .map(|m| (m.id().to_string(), m.pipeline.counters()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let mut text = state.metrics.render(&queues, unix_now_ms(), &pipelines);
    // Tasks on this HTTP worker's runtime: answers' upstream readers, upstream connections,
    // timers. With one worker (`SLUICE_WORKERS=1`) that is all of them: a count that only
    // grows under steady load is a leak.
    let tasks = tokio::runtime::Handle::try_current().map(|h| h.metrics().num_alive_tasks()).unwrap_or(0);
    text.push_str(
        "# HELP sluice_worker_tasks_alive Tasks alive on the HTTP worker that answered this scrape.\n\
         # TYPE sluice_worker_tasks_alive gauge\n",
    );
    text.push_str(&format!("sluice_worker_tasks_alive {tasks}\n"));
    if let Some(h) = state.store.health() {
        text.push_str(&format!(
            "# HELP sluice_store_up Whether the shared store answered its last call.\n\
             # TYPE sluice_store_up gauge\nsluice_store_up {}\n\
             # HELP sluice_store_held_entries Reports held in memory while the shared store is unreachable.\n\
             # TYPE sluice_store_held_entries gauge\nsluice_store_held_entries {}\n\
             # HELP sluice_store_held_oldest_seconds Age of the oldest report held in memory.\n\
             # TYPE sluice_store_held_oldest_seconds gauge\nsluice_store_held_oldest_seconds {:.3}\n\
             # HELP sluice_store_held_dropped_total Reports dropped at the in-memory hold's bounds.\n\
             # TYPE sluice_store_held_dropped_total counter\nsluice_store_held_dropped_total {}\n",
            u8::from(h.up),
            h.held_entries,
            h.held_oldest_secs,
            h.dropped
        ));
    }
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}
