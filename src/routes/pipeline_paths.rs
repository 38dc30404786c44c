//! The routes under a pipeline's id (`/{id}/filter/inlet`, `/{id}/valves`, ...), told apart by
//! their path segments. Registered as actix-web resources, each was a regex tried in turn on
//! every request that reached it (an outlet tried the inlet's first), and then a resource, a
//! route and a path extractor: together the largest part of the 2 KB inlet that was sluice's
//! own (docs/performance.md, 2026-12-05). This is the mount's default service: actix-web's
//! router has already tried the fixed paths, which are plain string comparisons.

use std::borrow::Cow;

use actix_web::{http::Method, web, HttpMessage, HttpRequest, HttpResponse};
use percent_encoding::percent_decode_str;
use sluice_sdk::Hook;

use crate::body::BodyConfig;
use crate::error::ApiError;
use crate::telemetry::RouteName;

/// A route under a pipeline's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdRoute {
    Inlet,
    Outlet,
    Valves,
    ValvesSpec,
    ValvesUpdate,
    Action,
}

impl IdRoute {
    fn method(self) -> Method {
        match self {
            IdRoute::Valves | IdRoute::ValvesSpec => Method::GET,
            IdRoute::Inlet | IdRoute::Outlet | IdRoute::ValvesUpdate | IdRoute::Action => Method::POST,
        }
    }

    /// The route's name in the request log and the metrics, as actix-web names a pattern.
    fn name(self, mount: Mount) -> &'static str {
        match (mount, self) {
            (Mount::Bare, IdRoute::Inlet) => "/{id}/filter/inlet",
            (Mount::Bare, IdRoute::Outlet) => "/{id}/filter/outlet",
            (Mount::Bare, IdRoute::Valves) => "/{id}/valves",
            (Mount::Bare, IdRoute::ValvesSpec) => "/{id}/valves/spec",
            (Mount::Bare, IdRoute::ValvesUpdate) => "/{id}/valves/update",
            (Mount::Bare, IdRoute::Action) => "/{id}/actions/{name}",
            (Mount::V1, IdRoute::Inlet) => "/v1/{id}/filter/inlet",
            (Mount::V1, IdRoute::Outlet) => "/v1/{id}/filter/outlet",
            (Mount::V1, IdRoute::Valves) => "/v1/{id}/valves",
            (Mount::V1, IdRoute::ValvesSpec) => "/v1/{id}/valves/spec",
            (Mount::V1, IdRoute::ValvesUpdate) => "/v1/{id}/valves/update",
            (Mount::V1, IdRoute::Action) => "/v1/{id}/actions/{name}",
        }
    }
}

/// Where the route table is mounted: at the root or under `/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    Bare,
    V1,
}

/// A path recognised: its route, the pipeline's id and an action's name, still percent-encoded.
#[derive(Debug, PartialEq, Eq)]
struct Recognised<'a> {
    route: IdRoute,
    id: &'a str,
    name: &'a str,
}

/// What `path` (relative to the mount, starting with `/`) asks for, if it is one of the routes.
/// Each part is one non-empty segment, as actix-web's `{id}` is.
fn recognise(path: &str) -> Option<Recognised<'_>> {
    let mut parts = path.strip_prefix('/')?.split('/');
    let id = parts.next().filter(|id| !id.is_empty())?;
    let (route, name) = match (parts.next()?, parts.next(), parts.next()) {
        ("filter", Some("inlet"), None) => (IdRoute::Inlet, ""),
        ("filter", Some("outlet"), None) => (IdRoute::Outlet, ""),
        ("valves", None, None) => (IdRoute::Valves, ""),
        ("valves", Some("spec"), None) => (IdRoute::ValvesSpec, ""),
        ("valves", Some("update"), None) => (IdRoute::ValvesUpdate, ""),
        ("actions", Some(name), None) if !name.is_empty() => (IdRoute::Action, name),
        _ => return None,
    };
    Some(Recognised { route, id, name })
}

/// A segment as actix-web's path extractor hands it over: percent-decoded, invalid UTF-8
/// replaced. (The path it is cut from keeps `%2F` encoded, so an encoded slash stays in its
/// segment.)
fn decoded(segment: &str) -> Cow<'_, str> {
    percent_decode_str(segment).decode_utf8_lossy()
}

/// The mount's default service: a route under a pipeline's id, or a JSON 404.
pub fn service(mount: Mount, small_body: web::Data<BodyConfig>) -> actix_web::Route {
    web::to(move |req: HttpRequest, payload: web::Payload| {
        let small_body = small_body.clone();
        async move { dispatch(mount, &small_body, req, payload).await }
    })
}

async fn dispatch(
    mount: Mount,
    small_body: &BodyConfig,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let Some(found) = recognise(req.match_info().unprocessed()) else {
        return super::not_found().await;
    };
    let (route, id, name) = (found.route, decoded(found.id).into_owned(), decoded(found.name).into_owned());
    req.extensions_mut().insert(RouteName(route.name(mount)));
    if *req.method() != route.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    match route {
        IdRoute::Inlet => super::filter::run(&id, req, payload, Hook::Inlet).await,
        IdRoute::Outlet => super::filter::run(&id, req, payload, Hook::Outlet).await,
        IdRoute::Valves => super::valves::get_valves(&id, &req),
        IdRoute::ValvesSpec => super::valves::get_valves_spec(&id, &req),
        IdRoute::ValvesUpdate => super::valves::update_valves(&id, req, payload, small_body).await,
        IdRoute::Action => super::actions::run_action(&id, &name, req, payload, small_body).await,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seen(path: &str) -> Option<(IdRoute, &str, &str)> {
        recognise(path).map(|r| (r.route, r.id, r.name))
    }

    #[test]
    fn each_route_is_told_by_its_segments() {
        assert_eq!(seen("/p/filter/inlet"), Some((IdRoute::Inlet, "p", "")));
        assert_eq!(seen("/p/filter/outlet"), Some((IdRoute::Outlet, "p", "")));
        assert_eq!(seen("/p/valves"), Some((IdRoute::Valves, "p", "")));
        assert_eq!(seen("/p/valves/spec"), Some((IdRoute::ValvesSpec, "p", "")));
        assert_eq!(seen("/p/valves/update"), Some((IdRoute::ValvesUpdate, "p", "")));
        assert_eq!(seen("/p/actions/add"), Some((IdRoute::Action, "p", "add")));
        assert_eq!(seen("/a%2Fb/filter/inlet"), Some((IdRoute::Inlet, "a%2Fb", "")));
    }

    #[test]
    fn anything_else_is_not_a_route() {
        for path in [
            "",
            "/",
            "p/filter/inlet",
            "//filter/inlet",
            "/p",
            "/p/",
            "/p/filter",
            "/p/filter/",
            "/p/filter/inlet/",
            "/p/filter/inlet/x",
            "/p/filter/Inlet",
            "/p/valves/",
            "/p/valves/spec/x",
            "/p/actions",
            "/p/actions/",
            "/p/actions/a/b",
            "/p/other",
        ] {
            assert_eq!(seen(path), None, "{path:?}");
        }
    }

    #[test]
    fn segments_are_decoded_as_the_path_extractor_decoded_them() {
        assert_eq!(decoded("a%2Fb"), "a/b");
        assert_eq!(decoded("a%252F"), "a%2F");
        assert_eq!(decoded("a+b%20c"), "a+b c");
        assert_eq!(decoded("%C3%A9"), "é");
        assert_eq!(decoded("%FF"), "\u{FFFD}");
        assert_eq!(decoded("plain"), "plain");
    }
}
