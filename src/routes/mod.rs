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
mod pipelines;
mod valves;

use actix_web::web::{self, ServiceConfig};
use actix_web::{HttpResponse, Resource};

use crate::body::BodyConfig;
use crate::error::ApiError;

use health::health;
pub use models::ModelsCache;

/// Every route except the health check, relative to the mount point. `small_body` bounds what
/// the valves editor may send (kilobytes, not the megabytes of a chat).
pub fn configure(cfg: &mut ServiceConfig, small_body: &web::Data<BodyConfig>) {
    cfg.service(resource("/models").get(models::list_models))
        .service(resource("/metrics").get(metrics::metrics))
        .service(resource("/pipelines").get(pipelines::list_pipelines))
        .service(resource("/pipelines/add").post(pipelines::add))
        .service(resource("/pipelines/upload").post(pipelines::upload))
        .service(resource("/pipelines/delete").delete(pipelines::delete))
        .service(resource("/pipelines/reload").post(pipelines::reload))
        .service(resource("/chat/completions").post(chat::chat_completions))
        // Routes with a path parameter are tried in this order, each a regex match: the filter
        // hooks, called around every chat, come first; no path matches two of them.
        .service(resource("/{id}/filter/inlet").post(filter::inlet))
        .service(resource("/{id}/filter/outlet").post(filter::outlet))
        .service(resource("/{id}/valves").get(valves::get_valves))
        .service(resource("/{id}/valves/spec").get(valves::get_valves_spec))
        .service(resource("/{id}/valves/update").app_data(small_body.clone()).post(valves::update_valves))
        .service(resource("/{id}/actions/{name}").app_data(small_body.clone()).post(actions::run_action));
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
