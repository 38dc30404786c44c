use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::registry::LiveRegistry;

/// `POST /{id}/actions/{name}`: an operator's action on a pipeline (docs/protocol.md §5.14),
/// such as adding a chat to an OpenPipe dataset. Behind the key like every route.
pub async fn run_action(
    live: web::Data<LiveRegistry>,
    path: web::Path<(String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let registry = live.load();
    let (id, name) = path.into_inner();
    let module = registry.module(&id).ok_or_else(|| ApiError::pipeline_not_found(&id))?;
    let (body, _reservation) = crate::body::json_body(&req, payload).await?.into_parts();
    let answer = module.pipeline.action(&name, body).await.map_err(|e| registry.redact(e))?;
    Ok(HttpResponse::Ok().json(answer))
}
