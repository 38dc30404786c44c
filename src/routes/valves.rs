use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::valves::{ValvesEntry, ValvesService};

fn entry<'a>(valves: &'a ValvesService, id: &str) -> Result<&'a ValvesEntry, ApiError> {
    let module = valves.module(id)?;
    module.valves.as_ref().ok_or_else(|| ApiError::NotFound(format!("Valves for {id} not found")))
}

/// `GET /{id}/valves`: current values, secrets masked (docs/protocol.md §5.8).
pub async fn get_valves(valves: web::Data<ValvesService>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(&valves, &id)?.masked()))
}

/// `GET /{id}/valves/spec`: the schema in the shape Open WebUI's editor renders (§5.9).
pub async fn get_valves_spec(
    valves: web::Data<ValvesService>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(entry(&valves, &id)?.spec()))
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
