use actix_web::{web, HttpRequest, HttpResponse};

use serde_json::Value;

use crate::body::BodyConfig;
use crate::error::ApiError;
use crate::valves::{ValvesEntry, ValvesService};

/// What `read` makes of the valves of the module behind `id`.
fn entry(valves: &ValvesService, id: &str, read: impl FnOnce(&ValvesEntry) -> Value) -> Result<Value, ApiError> {
    let module = valves.module(id)?;
    module.valves.as_ref().map(read).ok_or_else(|| ApiError::NotFound(format!("Valves for {id} not found")))
}

/// `GET /{id}/valves`: current values, secrets masked (docs/protocol.md §5.8).
pub(super) fn get_valves(id: &str, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(super::shared::<ValvesService>(req)?, id, ValvesEntry::masked)?))
}

/// `GET /{id}/valves/spec`: the schema in the shape Open WebUI's editor renders (§5.9).
pub(super) fn get_valves_spec(id: &str, req: &HttpRequest) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(super::shared::<ValvesService>(req)?, id, ValvesEntry::spec)?))
}

/// `POST /{id}/valves/update` (§5.10): applied by the [`ValvesService`]; the body is bounded
/// by `small_body`.
pub(super) async fn update_valves(
    id: &str,
    req: HttpRequest,
    payload: web::Payload,
    small_body: &BodyConfig,
) -> Result<HttpResponse, ApiError> {
    let valves = super::shared::<ValvesService>(&req)?.clone();
    valves.module(id)?;
    let (body, _reservation) = crate::body::json_body_within(&req, payload, small_body).await?.into_parts();
    Ok(HttpResponse::Ok().json(valves.update(id, body).await?))
}
