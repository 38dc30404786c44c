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
use actix_web::{HttpRequest, HttpResponse, Resource};

use crate::error::ApiError;

use health::health;
pub use models::ModelsCache;
pub use pipeline_paths::{service as under_ids, Mount};

/// The routes at fixed paths, relative to the mount point; the routes under a pipeline's id
/// are the mount's default service ([`under_ids`]).
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(resource("/models").get(models::list_models))
        .service(resource("/metrics").get(metrics::metrics))
        .service(resource("/pipelines").get(pipelines::list_pipelines))
        .service(resource("/pipelines/add").post(pipelines::add))
        .service(resource("/pipelines/upload").post(pipelines::upload))
        .service(resource("/pipelines/delete").delete(pipelines::delete))
        .service(resource("/pipelines/reload").post(pipelines::reload))
        .service(resource("/chat/completions").post(chat::chat_completions));
}

/// The health check at `path` (GET and HEAD, no key), its wrong methods a JSON 405 like every
/// other route's (they got an empty one).
pub fn health_check(path: &str) -> Resource {
    resource(path).get(health).head(health)
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

/// What the server shares with every request (`app_data`), for routes called without
/// actix-web's extractors.
fn shared<T: ?Sized + 'static>(req: &HttpRequest) -> Result<&web::Data<T>, ApiError> {
    req.app_data::<web::Data<T>>()
        .ok_or_else(|| ApiError::Internal(format!("{} is not configured", std::any::type_name::<T>())))
}
