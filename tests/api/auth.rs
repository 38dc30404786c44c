use serde_json::json;

use crate::helpers::{error_of, json_of, spawn_app, KEY};

/// Every route of both mounts, with a method that exists.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/models"),
    ("GET", "/pipelines"),
    ("POST", "/pipelines/add"),
    ("POST", "/pipelines/upload"),
    ("DELETE", "/pipelines/delete"),
    ("POST", "/pipelines/reload"),
    ("POST", "/chat/completions"),
    ("GET", "/scripted_pipe/valves"),
    ("GET", "/scripted_pipe/valves/spec"),
    ("POST", "/scripted_pipe/valves/update"),
    ("POST", "/scripted_filter/filter/inlet"),
    ("POST", "/scripted_filter/filter/outlet"),
    ("GET", "/does/not/exist"),
    ("GET", "/metrics"),
];

#[tokio::test]
async fn health_check_needs_no_key_on_both_paths() {
    let app = spawn_app().await;
    for path in ["/", "/v1", "/v1/"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(json_of(res).await, (200, json!({"status": true})), "{path}");
    }
}

#[tokio::test]
async fn every_other_route_refuses_a_missing_or_wrong_key_as_the_reference_does() {
    let app = spawn_app().await;
    let cases: &[(Option<&str>, u16, &str)] = &[
        (None, 403, "Not authenticated"),
        (Some("Bearer"), 403, "Not authenticated"),
        (Some("Basic dXNlcjpwYXNz"), 403, "Invalid authentication credentials"),
        (Some("Bearer wrong-key"), 401, "Invalid API key"),
        (Some("Bearer test-key-123456789"), 401, "Invalid API key"),
    ];
    for prefix in ["", "/v1"] {
        for (method, path) in ROUTES {
            for (header, status, detail) in cases {
                let mut req = app.client.request(method.parse().unwrap(), app.url(&format!("{prefix}{path}")));
                if let Some(h) = header {
                    req = req.header("authorization", *h);
                }
                let res = req.json(&json!({})).send().await.unwrap();
                let (got_status, body) = error_of(res).await;
                assert_eq!(
                    (got_status, &body),
                    (*status, &json!({"detail": detail})),
                    "{method} {prefix}{path} {header:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/models")).header("authorization", format!("bearer {KEY}")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
}

async fn preflight(app: &crate::helpers::TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url("/v1/chat/completions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn browsers_get_no_cors_access_unless_an_origin_is_configured() {
    let app = spawn_app().await;
    let res = preflight(&app, "http://localhost:3000").await;
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{:?}", res.headers());
    let res = app
        .client
        .get(app.url("/models"))
        .bearer_auth(KEY)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_configured_origin_gets_cors_access_and_no_other_does() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Options {
        cors_allowed_origins: vec!["http://localhost:3000".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let res = preflight(&app, "http://localhost:3000").await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers().get("access-control-allow-origin").unwrap(), "http://localhost:3000");
    let allowed = res.headers().get("access-control-allow-headers").unwrap().to_str().unwrap().to_ascii_lowercase();
    assert!(allowed.contains("authorization") && !allowed.contains('*'), "{allowed}");
    let res = preflight(&app, "https://evil.example").await;
    assert!(res.headers().get("access-control-allow-origin").is_none(), "{:?}", res.headers());
}

#[tokio::test]
async fn extra_slashes_find_the_route_and_still_need_the_key() {
    let app = spawn_app().await;
    for path in ["//models", "/v1//models/", "//v1///models//", "/models/?x=//"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(error_of(res).await, (403, json!({"detail": "Not authenticated"})), "{path}");
        let res = app.client.get(app.url(path)).bearer_auth(KEY).send().await.unwrap();
        let (status, body) = json_of(res).await;
        assert_eq!((status, &body["object"]), (200, &json!("list")), "{path}");
    }
    for path in ["//", "/v1//", "//v1"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(json_of(res).await, (200, json!({"status": true})), "{path}");
    }
}
