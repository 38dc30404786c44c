//! The route table, mounted twice: bare and under `/v1` (pipelines-protocol.md §4).

mod chat;
mod filter;
mod health;
mod metrics;
mod models;
mod pipelines;
mod valves;

use actix_web::web::{self, Bytes, ServiceConfig};
use actix_web::{HttpResponse, Resource};
use futures_util::StreamExt;
use serde_json::Value;

use crate::error::ApiError;

pub use health::health;

/// Every route except the health check, relative to the mount point.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(resource("/models").get(models::list_models))
        .service(resource("/metrics").get(metrics::metrics))
        .service(resource("/pipelines").get(pipelines::list_pipelines))
        .service(resource("/pipelines/add").post(pipelines::refuse_python))
        .service(resource("/pipelines/upload").post(pipelines::refuse_python))
        .service(resource("/pipelines/delete").delete(pipelines::refuse_python))
        .service(resource("/pipelines/reload").post(pipelines::reload))
        .service(resource("/chat/completions").post(chat::chat_completions))
        .service(resource("/{id}/valves").get(valves::get_valves))
        .service(resource("/{id}/valves/spec").get(valves::get_valves_spec))
        .service(resource("/{id}/valves/update").post(valves::update_valves))
        .service(resource("/{id}/filter/inlet").post(filter::inlet))
        .service(resource("/{id}/filter/outlet").post(filter::outlet));
}

/// A resource whose wrong methods get a JSON 405 instead of an empty body.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not Found".into()))
}

/// Reads a body up to `limit` bytes; larger ones are refused before they are buffered whole.
pub async fn read_body(mut payload: web::Payload, declared: Option<usize>, limit: usize) -> Result<Bytes, ApiError> {
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::PayloadTooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::MalformedJson(format!("the request body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a JSON body with a message that says where it is broken.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the request body is empty".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// The body of a request as JSON, within the configured size limit.
pub async fn json_body(req: &actix_web::HttpRequest, payload: web::Payload) -> Result<Value, ApiError> {
    let limit = req.app_data::<web::Data<crate::startup::AppState>>().map(|s| s.max_body_bytes).unwrap_or(1 << 20);
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let bytes = read_body(payload, declared, limit).await?;
    parse_json(&bytes)
}
