//! The route table, mounted twice: bare and under `/v1` (docs/protocol.md §4).

mod actions;
mod chat;
mod chat_request;
mod filter;
mod health;
mod metrics;
mod models;
mod observe;
mod pass_through;
mod pipeline_paths;
mod pipelines;
mod valves;

use actix_web::web::{self, ServiceConfig};
use actix_web::{FromRequest, Handler, HttpRequest, HttpResponse, Resource, Responder};

use crate::error::ApiError;

use health::health;
pub use models::ModelsCache;
pub use pipeline_paths::service as under_ids;

use crate::id_routes::GET;

/// The routes at fixed paths, relative to the mount point; the routes under a pipeline's id
/// are the mount's default service ([`under_ids`]). Each is named in [`FIXED`] too.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(get("/models", models::list_models))
        .service(get("/metrics", metrics::metrics))
        .service(get("/pipelines", pipelines::list_pipelines))
        .service(resource("/pipelines/add", "POST").post(pipelines::add))
        .service(resource("/pipelines/upload", "POST").post(pipelines::upload))
        .service(resource("/pipelines/delete", "DELETE").delete(pipelines::delete))
        .service(resource("/pipelines/reload", "POST").post(pipelines::reload))
        .service(resource("/chat/completions", "POST").post(chat::chat_completions));
}

/// The name of the fixed route at `path` (of [`configure`] on both mounts, and the health
/// checks) as actix-web names it, for a request whose client left before its route could say
/// it. A route added to `configure` is added here too (`tests/api/route_table.rs` checks these
/// names against actix-web's).
pub fn fixed_route(path: &str) -> Option<&'static str> {
    FIXED.into_iter().find(|name| *name == path)
}

/// The paths [`fixed_route`] names.
pub const FIXED: [&str; 18] = [
    "/",
    "/v1",
    "/models",
    "/v1/models",
    "/metrics",
    "/v1/metrics",
    "/pipelines",
    "/v1/pipelines",
    "/pipelines/add",
    "/v1/pipelines/add",
    "/pipelines/upload",
    "/v1/pipelines/upload",
    "/pipelines/delete",
    "/v1/pipelines/delete",
    "/pipelines/reload",
    "/v1/pipelines/reload",
    "/chat/completions",
    "/v1/chat/completions",
];

/// The health check at `path` (GET and HEAD, no key), its wrong methods a JSON 405 like every
/// other route's (they got an empty one).
pub fn health_check(path: &str) -> Resource {
    get(path, health)
}

/// A GET route, and HEAD with it (HTTP asks every server for HEAD wherever GET is).
fn get<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    resource(path, GET).get(handler.clone()).head(handler)
}

/// A resource whose wrong methods get a JSON 405 naming the `allowed` ones, instead of an empty
/// body.
fn resource(path: &str, allowed: &'static str) -> Resource {
    web::resource(path)
        .default_service(web::to(move || async move { Err::<HttpResponse, _>(ApiError::MethodNotAllowed(allowed)) }))
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not Found".into()))
}

/// What the server shares with every request (`app_data`), for routes called without
/// actix-web's extractors.
fn shared<T: ?Sized + 'static>(req: &HttpRequest) -> Result<&web::Data<T>, ApiError> {
    req.app_data::<web::Data<T>>()
        .ok_or_else(|| ApiError::Internal(format!("{} is not configured", std::any::type_name::<T>())))
}
