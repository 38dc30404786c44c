use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::registry::Registry;
use crate::valves::ValvesService;

/// `GET /pipelines` (docs/protocol.md §5.3): modules, not model entries.
pub async fn list_pipelines(registry: web::Data<Registry>) -> HttpResponse {
    let data: Vec<_> = registry
        .modules()
        .iter()
        .map(|m| json!({"id": m.id(), "name": m.id(), "type": m.kind().as_str(), "valves": m.valves.is_some()}))
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}

/// `POST /pipelines/add`, `POST /pipelines/upload`, `DELETE /pipelines/delete`: a compiled
/// server loads no Python, so these answer a clear refusal instead of pretending.
pub async fn refuse_python(registry: web::Data<Registry>) -> Result<HttpResponse, ApiError> {
    let ids: Vec<&str> = registry.modules().iter().map(|m| m.id()).collect();
    Err(ApiError::NotSupported(format!(
        "sluice runs pipelines compiled into its binary and cannot add, upload or delete Python \
         pipelines. Built-in pipelines: {}. Configure them through their valves.",
        if ids.is_empty() { "none".to_string() } else { ids.join(", ") }
    )))
}

/// `POST /pipelines/reload` (§5.7): reads every valves file and the environment again. All
/// valves are checked first; if one is invalid nothing changes and the answer says which and
/// why. With replicas, what changed is shared with the others.
pub async fn reload(valves: web::Data<ValvesService>) -> Result<HttpResponse, ApiError> {
    valves.reload().await?;
    Ok(HttpResponse::Ok().json(json!({"message": "Pipelines reloaded successfully."})))
}
