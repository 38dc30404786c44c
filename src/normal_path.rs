//! Paths as the route table writes them: repeated slashes merged and a trailing slash dropped,
//! so `/v1//models/` finds `/v1/models` (hand-typed URLs and base URLs ending in `/` send such
//! paths). actix-web's `NormalizePath` does the same, but it runs a regex replace and allocates
//! for every request; here a path that is already normal, nearly every one, costs one scan.

use std::future::{ready, Ready};

use actix_web::dev::{forward_ready, Service, ServiceRequest, Transform};
use actix_web::http::uri::{PathAndQuery, Uri};

/// The middleware: the key check and the router after it see the path it leaves.
pub struct NormalPath;

impl<S> Transform<S, ServiceRequest> for NormalPath
where
    S: Service<ServiceRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Transform = NormalPathService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(NormalPathService { service }))
    }
}

/// [`NormalPath`] around one service: no future of its own, the inner one is returned as is.
pub struct NormalPathService<S> {
    service: S,
}

impl<S> Service<ServiceRequest> for NormalPathService<S>
where
    S: Service<ServiceRequest>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        if let Some(uri) = normalised(req.uri()) {
            // The router matches on its own copy of the path: both must change.
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
        self.service.call(req)
    }
}

/// `uri` with its path made normal, or `None` when it already is (or could not be rebuilt,
/// which a valid request URI always can).
fn normalised(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if is_normal(path) {
        return None;
    }
    let mut normal = String::with_capacity(path.len() + uri.query().map_or(0, |q| q.len() + 1));
    for c in path.chars() {
        if !(c == '/' && normal.ends_with('/')) {
            normal.push(c);
        }
    }
    while normal.len() > 1 && normal.ends_with('/') {
        normal.pop();
    }
    if let Some(query) = uri.query() {
        normal.push('?');
        normal.push_str(query);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(normal).ok()?);
    Uri::from_parts(parts).ok()
}

/// No `//` anywhere and no trailing `/` but the root's. An empty path (no valid path at all)
/// is left alone: adding one could make the URI invalid.
fn is_normal(path: &str) -> bool {
    path.len() <= 1 || (!path.ends_with('/') && !path.contains("//"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn normal(text: &str) -> String {
        let uri: Uri = text.parse().unwrap();
        normalised(&uri).map_or_else(|| text.to_owned(), |u| u.to_string())
    }

    #[test]
    fn slashes_are_merged_and_trailing_ones_dropped() {
        assert_eq!(normal("/models/"), "/models");
        assert_eq!(normal("//v1///models//"), "/v1/models");
        assert_eq!(normal("/v1/x//filter/inlet"), "/v1/x/filter/inlet");
        assert_eq!(normal("///"), "/");
        assert_eq!(normal("//"), "/");
    }

    #[test]
    fn the_query_is_kept_as_it_came() {
        assert_eq!(normal("/models/?a=1//2&b=/"), "/models?a=1//2&b=/");
        assert_eq!(normal("/models?a=//"), "/models?a=//", "a normal path with slashes in its query");
    }

    #[test]
    fn normal_paths_are_not_rebuilt() {
        for path in ["/", "/models", "/v1/models", "/x/filter/inlet", "/a%2F%2Fb", "*"] {
            let uri: Uri = path.parse().unwrap();
            assert!(normalised(&uri).is_none(), "{path}");
        }
    }

    #[test]
    fn an_absolute_form_keeps_its_authority() {
        assert_eq!(normal("http://h:1//v1/models/"), "http://h:1/v1/models");
    }
}
