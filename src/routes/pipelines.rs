use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::startup::AppState;

/// `GET /pipelines` (pipelines-protocol.md §5.3): modules, not model entries.
pub async fn list_pipelines(state: web::Data<AppState>) -> HttpResponse {
    let data: Vec<_> = state
        .registry
        .modules()
        .iter()
        .map(|m| json!({"id": m.id(), "name": m.id(), "type": m.kind().as_str(), "valves": m.valves.is_some()}))
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}

/// `POST /pipelines/add`, `POST /pipelines/upload`, `DELETE /pipelines/delete`: a compiled
/// server loads no Python, so these answer a clear refusal instead of pretending.
pub async fn refuse_python(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let ids: Vec<&str> = state.registry.modules().iter().map(|m| m.id()).collect();
    Err(ApiError::NotSupported(format!(
        "sluice runs pipelines compiled into its binary and cannot add, upload or delete Python \
         pipelines. Built-in pipelines: {}. Configure them through their valves.",
        if ids.is_empty() { "none".to_string() } else { ids.join(", ") }
    )))
}

/// `POST /pipelines/reload`: reads every valves file and the environment again. All valves are
/// checked first; if one is invalid nothing changes and the answer says which and why.
pub async fn reload(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let _writing = state.valves_lock.lock().await;
    let worker = state.clone();
    let changed = web::block(move || -> Result<Vec<String>, ApiError> {
        let loaded =
            worker.registry.load_valves(&worker.valves_env).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
        let mut ids = Vec::new();
        for (entry, loaded) in loaded {
            entry.install(loaded);
            ids.push(entry.path().display().to_string());
        }
        Ok(ids)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload failed: {e}")))??;
    for module in state.registry.modules().iter().filter(|m| m.valves.is_some()) {
        if let Err(e) = module.pipeline.on_valves_updated().await {
            tracing::error!(pipeline = module.id(), error = %e, "pipeline failed to apply reloaded valves");
            return Err(ApiError::Internal(format!("valves reloaded, but {} failed to apply them: {e}", module.id())));
        }
    }
    tracing::info!(files = changed.len(), "valves reloaded");
    Ok(HttpResponse::Ok().json(json!({"message": "Pipelines reloaded successfully."})))
}
