use actix_web::{web, HttpRequest, HttpResponse};

use crate::error::ApiError;
use crate::registry::Module;
use crate::startup::AppState;
use crate::valves::{UpdateError, ValvesEntry};

fn valves_of<'a>(state: &'a AppState, id: &str) -> Result<(&'a Module, &'a ValvesEntry), ApiError> {
    let module = state.registry.module_lenient(id).ok_or_else(|| ApiError::pipeline_not_found(id))?;
    let entry = module.valves.as_ref().ok_or_else(|| ApiError::NotFound(format!("Valves for {id} not found")))?;
    Ok((module, entry))
}

/// `GET /{id}/valves`: current values, secrets masked (pipelines-protocol.md §5.8).
pub async fn get_valves(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, entry) = valves_of(&state, &id)?;
    Ok(HttpResponse::Ok().json(entry.masked()))
}

/// `GET /{id}/valves/spec`: the schema in the shape Open WebUI's editor renders (§5.9).
pub async fn get_valves_spec(state: web::Data<AppState>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let (_, entry) = valves_of(&state, &id)?;
    Ok(HttpResponse::Ok().json(entry.spec()))
}

/// `POST /{id}/valves/update`: merge, coerce, validate, write atomically, swap, call the hook.
pub async fn update_valves(
    state: web::Data<AppState>,
    id: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    valves_of(&state, &id)?;
    let (body, _reservation) = crate::body::json_body(&req, payload).await?.into_parts();
    let _writing = state.valves_lock.lock().await;
    let worker = state.clone();
    let key = id.clone();
    let updated = web::block(move || {
        let (_, entry) = valves_of(&worker, &key)?;
        entry.update(body).map_err(|e| match e {
            UpdateError::Invalid(errors) => ApiError::InvalidValves(errors),
            UpdateError::Pinned(errors) => ApiError::PinnedValves(errors),
            UpdateError::Io(message) => ApiError::Internal(message),
        })
    })
    .await
    .map_err(|e| ApiError::Internal(format!("valves update failed: {e}")))??;
    let (module, entry) = valves_of(&state, &id)?;
    tracing::info!(pipeline = module.id(), path = %entry.path().display(), "valves updated");
    if state.store.shares_valves() {
        // Several replicas: the others apply it within a second (crate::valves_sync).
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        match state.store.publish_valves(module.id(), &text).await {
            Ok(Some(version)) => {
                if let Ok(mut v) = state.valves_versions.lock() {
                    v.insert(module.id().to_string(), version);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(pipeline = module.id(), error = %e, "valves update not shared with the other replicas");
                return Err(ApiError::Internal(format!(
                    "the valves were saved on this replica but could not be shared with the others: {e}"
                )));
            }
        }
    }
    if let Err(e) = module.pipeline.on_valves_updated().await {
        tracing::error!(pipeline = module.id(), error = %e, "pipeline failed to apply new valves");
        return Err(ApiError::Internal(format!(
            "the valves were saved, but {} failed to apply them: {e}",
            module.id()
        )));
    }
    Ok(HttpResponse::Ok().json(updated))
}
