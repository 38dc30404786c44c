use actix_web::{web, HttpRequest, HttpResponse};

use serde_json::Value;

use crate::error::ApiError;
use crate::valves::{ValvesEntry, ValvesService};

/// What `read` makes of the valves of the module behind `id`.
fn entry(valves: &ValvesService, id: &str, read: impl FnOnce(&ValvesEntry) -> Value) -> Result<Value, ApiError> {
    let module = valves.module(id)?;
    module.valves.as_ref().map(read).ok_or_else(|| ApiError::NotFound(format!("Valves for {id} not found")))
}

/// `GET /{id}/valves`: current values, secrets masked (docs/protocol.md §5.8).
pub async fn get_valves(valves: web::Data<ValvesService>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(&valves, &id, ValvesEntry::masked)?))
}

/// `GET /{id}/valves/spec`: the schema in the shape Open WebUI's editor renders (§5.9).
pub async fn get_valves_spec(
    valves: web::Data<ValvesService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(&valves, &id, ValvesEntry::spec)?))
}

/// `POST /{id}/valves/update` (§5.10): applied by the [`ValvesService`].
pub async fn update_valves(
    valves: web::Data<ValvesService>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    valves.module(&id)?;
    let (body, _reservation) = crate::body::json_body(&req, payload).await?.into_parts();
    Ok(HttpResponse::Ok().json(valves.update(&id, body).await?))
}
