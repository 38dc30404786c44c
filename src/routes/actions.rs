use actix_web::{web, HttpRequest, HttpResponse};

use crate::body::BodyConfig;
use crate::error::ApiError;
use crate::registry::LiveRegistry;

/// `POST /{id}/actions/{name}`: an operator's action on a pipeline (docs/protocol.md §5.14),
/// such as adding a chat to an OpenPipe dataset. Behind the key like every route; its body is
/// bounded by `small_body`.
pub(super) async fn run_action(
    id: &str,
    name: &str,
    req: HttpRequest,
    payload: web::Payload,
    small_body: &BodyConfig,
) -> Result<HttpResponse, ApiError> {
    let registry = super::shared::<LiveRegistry>(&req)?.load();
    let module = registry.module(id).ok_or_else(|| ApiError::pipeline_not_found(id))?;
    let (body, _reservation) = crate::body::json_body_within(&req, payload, small_body).await?.into_parts();
    let answer = module.pipeline.action(name, body).await.map_err(|e| registry.redact(e))?;
    Ok(HttpResponse::Ok().json(answer))
}
