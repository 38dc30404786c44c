use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::components::{fetch, python, Added, ComponentError, Components, Sources};
use crate::error::ApiError;
use crate::registry::LiveRegistry;
use crate::valves::ValvesService;

/// `GET /pipelines` (docs/protocol.md §5.3): modules, not model entries.
pub async fn list_pipelines(live: web::Data<LiveRegistry>) -> HttpResponse {
    let registry = live.load();
    let data: Vec<_> = registry
        .modules()
        .iter()
        .map(|m| json!({"id": m.id(), "name": m.id(), "type": m.kind().as_str(), "valves": m.valves.is_some()}))
        .collect();
    HttpResponse::Ok().json(json!({"data": data}))
}

impl From<ComponentError> for ApiError {
    fn from(e: ComponentError) -> Self {
        match e {
            ComponentError::BuiltIn(_) | ComponentError::HoldsSecrets { .. } | ComponentError::Changed(_) => {
                ApiError::Conflict(e.to_string())
            }
            ComponentError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ComponentError::Load(sluice_wasm::LoadError::Busy(_)) => ApiError::Busy(e.to_string()),
            ComponentError::Load(_) | ComponentError::Valves(_) => ApiError::BadRequest(e.to_string()),
            ComponentError::Store(_)
            | ComponentError::Start { .. }
            | ComponentError::IdChanged { .. }
            | ComponentError::Damaged(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<fetch::FetchError> for ApiError {
    fn from(e: fetch::FetchError) -> Self {
        match e {
            fetch::FetchError::Ca { .. } => ApiError::Internal(e.to_string()),
            other => ApiError::BadRequest(format!("the pipeline could not be downloaded: {other}")),
        }
    }
}

impl From<python::BuildError> for ApiError {
    fn from(e: python::BuildError) -> Self {
        match e {
            python::BuildError::Io(_) | python::BuildError::Timeout => ApiError::Internal(e.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

fn wasm_off() -> ApiError {
    ApiError::NotSupported(
        "WebAssembly pipelines are switched off on this server (wasm_pipelines = false); built-in pipelines \
         are configured through their valves"
            .into(),
    )
}

/// A place among the additions in progress, held until the addition ends (also in the task
/// that finishes it when the caller has gone: [`to_the_end`]), or a refusal to come back later.
fn admitted(sources: &Sources) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    Arc::clone(&sources.intake).try_acquire_owned().map_err(|_| {
        ApiError::Busy(format!(
            "{} pipelines are being added already; try again in a moment",
            crate::components::INTAKE
        ))
    })
}

fn answer(added: Added, from: &str) -> HttpResponse {
    let verb = if added.replaced { "replaced" } else { "added" };
    HttpResponse::Ok().json(json!({
        "status": true,
        "detail": format!("Pipeline {} {verb} from {from}", added.id),
        "id": added.id,
        "name": added.name,
        "type": added.kind,
    }))
}

/// The pipeline id a `.py` file names (the Python reference's rule: the file name without
/// `.py`), checked, or `None` when the name is no Python file.
fn python_id(file_name: &str) -> Result<Option<String>, ApiError> {
    let Some(stem) = file_name.strip_suffix(".py") else { return Ok(None) };
    if stem.is_empty()
        || stem.len() > 64
        || !stem.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(ApiError::BadRequest(format!(
            "{file_name:?}: the file name becomes the pipeline id and may use only lower-case letters, digits and '_'"
        )));
    }
    Ok(Some(stem.to_string()))
}

/// The component of `bytes`: as they are, or built from Python when `name` is a `.py` file.
async fn component(
    components: &Components,
    sources: &Sources,
    name: &str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, ApiError> {
    match python_id(name)? {
        // Refused before a build that would be refused after it.
        Some(id) if components.is_builtin(&id) => Err(ComponentError::BuiltIn(id).into()),
        Some(id) => Ok(python::build(&sources.componentize_py, &sources.builds, &id, &bytes).await?),
        None if bytes.starts_with(b"\0asm") => Ok(bytes),
        None => Err(ApiError::BadRequest(format!(
            "{name:?} is neither a WebAssembly component (.wasm) nor a Python pipeline (.py)"
        ))),
    }
}

/// `POST /pipelines/add {"url"}`: a component (or a `.py` pipeline, built here) from an https
/// URL, what Open WebUI's "add from URL" sends.
pub async fn add(
    components: Option<web::Data<Components>>,
    sources: Option<web::Data<Sources>>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (Some(components), Some(sources)) = (components, sources) else { return Err(wasm_off()) };
    let admitted = admitted(&sources)?;
    let (body, _reservation) = crate::body::json_body(&req, payload).await?.into_parts();
    let url = match body.get("url") {
        Some(Value::String(url)) if !url.trim().is_empty() => fetch::raw_github(url.trim()),
        Some(_) => return Err(ApiError::Unprocessable("url: must be a non-empty string".into())),
        None => return Err(ApiError::Unprocessable("url: field required".into())),
    };
    let shown = url.split(['?', '#']).next().unwrap_or("").to_string();
    let name = shown.rsplit('/').next().unwrap_or("").to_string();
    let max = if name.ends_with(".py") { python::MAX_SOURCE } else { components.runtime().limits().component_bytes };
    let bytes = sources.fetcher.get(&url, max).await?;
    let bytes = component(&components, &sources, &name, bytes).await?;
    Ok(answer(add_to_the_end(components, admitted, bytes, shown.clone()).await?, &shown))
}

/// [`Components::add`] run [`to_the_end`], holding its place among the additions until then.
async fn add_to_the_end(
    components: web::Data<Components>,
    admitted: tokio::sync::OwnedSemaphorePermit,
    bytes: Vec<u8>,
    source: String,
) -> Result<Added, ApiError> {
    let components = components.into_inner();
    to_the_end(async move {
        let _admitted = admitted;
        components.add(bytes, source).await
    })
    .await
}

/// Runs a change of the added pipelines to its end even when the caller goes away: stopped
/// halfway (the index changed, the records and keys not yet deleted), a removal left them
/// behind with nothing to retry it (found by a red team).
async fn to_the_end<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, ComponentError>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(change).await {
        Ok(result) => Ok(result?),
        Err(e) => Err(ApiError::Internal(format!("the change stopped: {}", sluice_sdk::join_failure(&e)))),
    }
}

/// `POST /pipelines/upload`: multipart field `file`, as Open WebUI and curl `-F file=@x` send it.
pub async fn upload(
    components: Option<web::Data<Components>>,
    sources: Option<web::Data<Sources>>,
    mut form: actix_multipart::Multipart,
) -> Result<HttpResponse, ApiError> {
    let (Some(components), Some(sources)) = (components, sources) else { return Err(wasm_off()) };
    let admitted = admitted(&sources)?;
    let max = components.runtime().limits().component_bytes;
    while let Some(field) = form.next().await {
        let mut field =
            field.map_err(|e| ApiError::BadRequest(format!("the upload is no valid multipart form: {e}")))?;
        if field.name() != Some("file") {
            while let Some(chunk) = field.next().await {
                chunk.map_err(|e| ApiError::BadRequest(format!("the upload broke off: {e}")))?;
            }
            continue;
        }
        let raw_name = field.content_disposition().and_then(|d| d.get_filename()).unwrap_or("").to_string();
        // Only the last path segment: a client's "../x.py" names no place on this server.
        let name = raw_name.rsplit(['/', '\\']).next().unwrap_or("").to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("the upload broke off: {e}")))?;
            if bytes.len() + chunk.len() > max {
                return Err(ApiError::PayloadTooLarge(max));
            }
            bytes.extend_from_slice(&chunk);
        }
        let bytes = component(&components, &sources, &name, bytes).await?;
        return Ok(answer(add_to_the_end(components, admitted, bytes, name.clone()).await?, &name));
    }
    Err(ApiError::Unprocessable("file: field required (a multipart form with the component in `file`)".into()))
}

/// `DELETE /pipelines/delete {"id"}`: removes an added WebAssembly pipeline.
pub async fn delete(
    components: Option<web::Data<Components>>,
    live: web::Data<LiveRegistry>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (body, _reservation) = crate::body::json_body(&req, payload).await?.into_parts();
    let id = match body.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(_) => return Err(ApiError::Unprocessable("id: must be a non-empty string".into())),
        None => return Err(ApiError::Unprocessable("id: field required".into())),
    };
    let Some(components) = components else {
        return Err(match live.load().module(&id) {
            Some(_) => ComponentError::BuiltIn(id).into(),
            None => wasm_off(),
        });
    };
    let (removed, which) = (components.into_inner(), id.clone());
    to_the_end(async move { removed.remove(&which).await }).await?;
    Ok(HttpResponse::Ok().json(json!({"status": true, "detail": format!("Pipeline {id} deleted successfully")})))
}

/// `POST /pipelines/reload` (§5.7): reads every valves file and the environment again. All
/// valves are checked first; if one is invalid nothing changes and the answer says which and
/// why. With replicas, what changed is shared with the others.
pub async fn reload(valves: web::Data<ValvesService>) -> Result<HttpResponse, ApiError> {
    valves.reload().await?;
    Ok(HttpResponse::Ok().json(json!({"message": "Pipelines reloaded successfully."})))
}
