use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use sluice_sdk::Hook;

use crate::error::ApiError;
use crate::registry::LiveRegistry;

/// Takes `{"body": {...}, "user": {...} | null}` and answers the bare body. Pipes and manifold
/// sub-models answer too: Open WebUI calls every pipeline model's own inlet and outlet.
/// `POST /{id}/filter/inlet` and `/{id}/filter/outlet` (docs/protocol.md §5.11, §5.12).
pub(super) async fn run(
    id: &str,
    req: HttpRequest,
    payload: web::Payload,
    hook: Hook,
) -> Result<HttpResponse, ApiError> {
    let registry = super::shared::<LiveRegistry>(&req)?.load();
    let resolved =
        registry.model_entry_lenient(id).ok_or_else(|| ApiError::NotFound(format!("Filter {id} not found")))?;
    let pipeline = Arc::clone(&resolved.module.pipeline);
    let raw = crate::body::raw_body(&req, payload).await?;
    if pipeline.passes_through(hook) {
        return super::pass_through::answer(raw).await;
    }
    let received = raw.parse().await?;
    let heavy = received.is_heavy();
    let (form, _reservation) = received.into_parts();
    let Value::Object(mut form) = form else {
        return Err(ApiError::Unprocessable("the request must be a JSON object with a \"body\" object".into()));
    };
    let body = match form.remove("body") {
        Some(body @ Value::Object(_)) => {
            if let Some(Value::Array(messages)) = body.get("messages") {
                crate::body::check_messages(messages)?;
            }
            body
        }
        Some(_) => return Err(ApiError::Unprocessable("body: must be a JSON object".into())),
        None => return Err(ApiError::Unprocessable("body: field required".into())),
    };
    let user = match form.remove("user") {
        None | Some(Value::Null) => None,
        Some(user @ Value::Object(_)) => Some(user),
        Some(_) => return Err(ApiError::Unprocessable("user: must be a JSON object or null".into())),
    };
    // The answer is serialised where the hook ran: for a large body, not on this thread.
    let work = async move {
        let result = match hook {
            Hook::Inlet => pipeline.inlet(body, user).await,
            Hook::Outlet => pipeline.outlet(body, user).await,
        };
        result.map(|body| serde_json::to_vec(&body))
    };
    let answer = crate::offload::run(heavy, work).await?.map_err(|e| registry.redact(e))?;
    let bytes = answer.map_err(|e| ApiError::Internal(format!("the answer could not be serialised: {e}")))?;
    Ok(HttpResponse::Ok().content_type("application/json").body(bytes))
}
