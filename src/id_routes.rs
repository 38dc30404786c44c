//! The routes under a pipeline's id (`/{id}/filter/inlet`, `/{id}/valves`, ...): which path is
//! which route, the methods each takes and the name the request log and the metrics give it.
//! Told by path segments, not by actix-web's router (a regex per route per request; see
//! src/routes/pipeline_paths.rs, which serves them).

use std::borrow::Cow;

use actix_web::http::Method;
use percent_encoding::percent_decode_str;

/// The `Allow` header of a GET route's 405: HEAD is answered wherever GET is.
pub const GET: &str = "GET, HEAD";

/// A route under a pipeline's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRoute {
    Inlet,
    Outlet,
    Valves,
    ValvesSpec,
    ValvesUpdate,
    Action,
}

impl IdRoute {
    /// Whether it only reads (GET); the others take a body (POST).
    fn reads(self) -> bool {
        matches!(self, IdRoute::Valves | IdRoute::ValvesSpec)
    }

    /// Whether `method` is the route's (HEAD wherever GET is, as HTTP asks of every server).
    pub fn takes(self, method: &Method) -> bool {
        match self.reads() {
            true => method == Method::GET || method == Method::HEAD,
            false => method == Method::POST,
        }
    }

    /// The `Allow` header of its 405.
    pub fn allowed(self) -> &'static str {
        if self.reads() {
            GET
        } else {
            "POST"
        }
    }

    /// The route's name in the request log and the metrics, as actix-web names a pattern.
    pub fn name(self, mount: Mount) -> &'static str {
        let (bare, v1) = match self {
            IdRoute::Inlet => ("/{id}/filter/inlet", "/v1/{id}/filter/inlet"),
            IdRoute::Outlet => ("/{id}/filter/outlet", "/v1/{id}/filter/outlet"),
            IdRoute::Valves => ("/{id}/valves", "/v1/{id}/valves"),
            IdRoute::ValvesSpec => ("/{id}/valves/spec", "/v1/{id}/valves/spec"),
            IdRoute::ValvesUpdate => ("/{id}/valves/update", "/v1/{id}/valves/update"),
            IdRoute::Action => ("/{id}/actions/{name}", "/v1/{id}/actions/{name}"),
        };
        match mount {
            Mount::Bare => bare,
            Mount::V1 => v1,
        }
    }
}

/// Where the route table is mounted: at the root or under `/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    Bare,
    V1,
}

/// The route a whole request path names (as actix-web keeps it: `%2F` still encoded, other
/// escapes decoded), as the request log and the metrics call it: also for a request refused
/// before it reached the route (no key, a CORS preflight).
pub fn name_of(path: &str) -> Option<&'static str> {
    // Everything under `/v1` goes to that mount's table, as actix-web's scope sends it.
    let (mount, rest) = match path.strip_prefix("/v1") {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => (Mount::V1, rest),
        _ => (Mount::Bare, path),
    };
    recognise(rest).map(|found| found.route.name(mount))
}

/// A path recognised: its route, the pipeline's id and an action's name, still percent-encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Recognised<'a> {
    pub route: IdRoute,
    pub id: &'a str,
    pub name: &'a str,
}

/// What `path` (relative to the mount, starting with `/`) asks for, if it is one of the routes.
/// Each part is one non-empty segment, as actix-web's `{id}` is.
pub fn recognise(path: &str) -> Option<Recognised<'_>> {
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
pub fn decoded(segment: &str) -> Cow<'_, str> {
    percent_decode_str(segment).decode_utf8_lossy()
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
    fn a_whole_path_is_named_by_its_mount_and_route() {
        assert_eq!(name_of("/p/filter/inlet"), Some("/{id}/filter/inlet"));
        assert_eq!(name_of("/v1/p/filter/inlet"), Some("/v1/{id}/filter/inlet"));
        assert_eq!(name_of("/v1/p/actions/a"), Some("/v1/{id}/actions/{name}"));
        // `/v1/...` is the `/v1` table's, never an id `v1` in the bare one.
        assert_eq!(name_of("/v1/filter/inlet"), None);
        assert_eq!(name_of("/v1x/filter/inlet"), Some("/{id}/filter/inlet"));
        assert_eq!(name_of("/v1"), None);
        assert_eq!(name_of("/models"), None);
        assert_eq!(name_of("/v1/models"), None);
    }

    /// The same paths through actix-web's router and path extractor, which served these routes
    /// before: each id must come out the same.
    #[actix_web::test]
    async fn ids_come_out_as_actix_webs_path_extractor_gives_them() {
        use actix_web::{test, web, App, HttpRequest, HttpResponse};
        let compare = |req: HttpRequest, id: web::Path<String>| async move {
            let ours = recognise(req.match_info().as_str()).map(|found| decoded(found.id).into_owned());
            match ours.as_deref() == Some(id.as_str()) {
                true => HttpResponse::Ok().finish(),
                false => HttpResponse::Conflict().body(format!("ours {ours:?}, actix-web's {:?}", id.as_str())),
            }
        };
        let app = test::init_service(App::new().service(web::resource("/{id}/valves").to(compare))).await;
        for path in [
            "/plain/valves",
            "/a%2Fb/valves",
            "/a%252F/valves",
            "/a+b%20c/valves",
            "/%C3%A9/valves",
            "/%FF/valves",
            "/%E2%80/valves",
            "/a%/valves",
            "/%zz%2/valves",
            "/%2e%2e/valves",
            "/a;b=c/valves",
            "/%00%0A/valves",
            "/x%2Fy%2F%2F/valves",
        ] {
            let res = test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
            let status = res.status();
            let body = test::read_body(res).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
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
