//! Serves the routes under a pipeline's id (src/id_routes.rs tells which path is which) as
//! the mount's default service: actix-web's router has already tried the fixed paths, which are
//! plain string comparisons. As actix-web resources, each was a regex tried in turn on every
//! request that reached it (an outlet tried the inlet's first), then a resource, a route and a
//! path extractor: together the largest part of the 2 KB inlet that was sluice's own
//! (docs/performance.md, 2026-12-05).

use actix_web::{web, HttpRequest, HttpResponse};
use sluice_sdk::Hook;

use crate::body::BodyConfig;
use crate::error::ApiError;
use crate::id_routes::{decoded, recognise, IdRoute};

/// Longer ids and action names name nothing (an added pipeline's id has at most 64 bytes, a
/// manifold's model 128 more, an Open WebUI connection prefix a few); they are refused
/// without being echoed whole into the answer (the request log cuts every value it writes).
const MAX_ID_BYTES: usize = 256;

/// The mount's default service: a route under a pipeline's id, or a JSON 404.
pub fn service(small_body: web::Data<BodyConfig>) -> actix_web::Route {
    web::to(move |req: HttpRequest, payload: web::Payload| {
        let small_body = small_body.clone();
        async move { dispatch(&small_body, req, payload).await }
    })
}

async fn dispatch(small_body: &BodyConfig, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
    let Some(found) = recognise(req.match_info().unprocessed()) else {
        return super::not_found().await;
    };
    let route = found.route;
    if !route.takes(req.method()) {
        return Err(ApiError::MethodNotAllowed(route.allowed()));
    }
    let (id, name) = (decoded(found.id), decoded(found.name));
    if id.len() > MAX_ID_BYTES {
        return Err(ApiError::NotFound(format!("Pipeline {} not found: {}", cut(&id), too_long("an id"))));
    }
    if name.len() > MAX_ID_BYTES {
        return Err(ApiError::NotFound(format!("{id} has no action {}: {}", cut(&name), too_long("an action's name"))));
    }
    let (id, name) = (id.into_owned(), name.into_owned());
    match route {
        IdRoute::Inlet => super::filter::run(&id, req, payload, Hook::Inlet).await,
        IdRoute::Outlet => super::filter::run(&id, req, payload, Hook::Outlet).await,
        IdRoute::Valves => super::valves::get_valves(&id, &req),
        IdRoute::ValvesSpec => super::valves::get_valves_spec(&id, &req),
        IdRoute::ValvesUpdate => super::valves::update_valves(&id, req, payload, small_body).await,
        IdRoute::Action => super::actions::run_action(&id, &name, req, payload, small_body).await,
    }
}

/// The start of a text too long to echo.
fn cut(text: &str) -> String {
    format!("{}...", text.chars().take(64).collect::<String>())
}

fn too_long(what: &str) -> String {
    format!("{what} has at most {MAX_ID_BYTES} bytes")
}
