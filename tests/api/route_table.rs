//! The routes under a pipeline's id are told apart by their path segments, not by actix-web's
//! router (src/routes/pipeline_paths.rs). From the outside they must answer as the router's
//! did: at both mounts, a JSON 405 for a wrong method, a JSON 404 for a near miss, the id
//! percent-decoded, the small body limit on the valves editor and actions, the key checked,
//! and the request log and metrics naming each route by its pattern.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{error_of, json_of, spawn_app, KEY};

fn inlet_form() -> serde_json::Value {
    json!({"body": {"model": "scripted_pipe", "messages": [{"role": "user", "content": "hi"}]}, "user": null})
}

async fn call(app: &crate::helpers::TestApp, method: Method, path: &str) -> reqwest::Response {
    let req = app.client.request(method.clone(), app.url(path)).bearer_auth(KEY);
    let req = if method == Method::POST { req.json(&inlet_form()) } else { req };
    req.send().await.unwrap()
}

#[tokio::test]
async fn each_route_under_an_id_answers_at_both_mounts_by_its_method() {
    let app = spawn_app().await;
    for mount in ["", "/v1"] {
        let routes = [
            (Method::POST, "/scripted_filter/filter/inlet", 200),
            (Method::POST, "/scripted_filter/filter/outlet", 200),
            (Method::GET, "/scripted_pipe/valves", 200),
            (Method::GET, "/scripted_pipe/valves/spec", 200),
            // The pipeline answers: it has no actions (the route's own 404 says "Not Found").
            (Method::POST, "/scripted_pipe/actions/anything", 404),
        ];
        for (method, path, status) in routes {
            let path = format!("{mount}{path}");
            let res = call(&app, method.clone(), &path).await;
            assert_eq!(res.status().as_u16(), status, "{method} {path}");
            let (_, body) = json_of(res).await;
            assert_ne!(body["detail"], "Not Found", "{method} {path}: {body}");
            // Every other method is the JSON 405 the router gave, with the `Allow` header HTTP
            // asks for (which the router did not give).
            let allow = if method == Method::GET { "GET, HEAD" } else { "POST" };
            for wrong in [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
                if wrong == method {
                    continue;
                }
                let res = call(&app, wrong.clone(), &path).await;
                assert_eq!(res.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{wrong} {path}");
                let answer = error_of(res).await;
                assert_eq!(answer, (405, json!({"detail": "Method Not Allowed"})), "{wrong} {path}");
            }
            // HEAD wherever GET is: the GET's head, no body.
            if method == Method::GET {
                let head = call(&app, Method::HEAD, &path).await;
                assert_eq!(head.status(), 200, "HEAD {path}");
                assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
            }
        }
        let update = format!("{mount}/scripted_pipe/valves/update");
        let (status, _) = json_of(app.post_json(&update, &json!({})).await).await;
        assert_eq!(status, 200, "{update}");
        assert_eq!(error_of(app.get(&update).await).await.0, 405, "{update}");
    }
}

#[tokio::test]
async fn near_misses_are_a_json_404_and_the_key_is_still_asked_for() {
    let app = spawn_app().await;
    for path in [
        "/scripted_filter/filter",
        "/scripted_filter/filter/inlet/more",
        "/scripted_filter/filter/Inlet",
        "/scripted_filter/valves/spec/more",
        "/scripted_filter/actions",
        "/scripted_filter/actions/a/b",
        "/scripted_filter/other",
        "/v1/filter/inlet",
        "/v1/v1/scripted_filter/filter",
    ] {
        let answer = error_of(call(&app, Method::POST, path).await).await;
        assert_eq!(answer, (404, json!({"detail": "Not Found"})), "{path}");
    }
    for path in ["/scripted_filter/filter/inlet", "/v1/scripted_filter/filter/inlet", "/x/valves"] {
        let res = app.client.post(app.url(path)).json(&inlet_form()).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 403, "{path} without the key");
    }
}

#[tokio::test]
async fn a_fixed_route_takes_head_where_it_takes_get_and_says_what_it_takes() {
    let app = spawn_app().await;
    for path in ["/models", "/v1/pipelines", "/metrics", "/"] {
        let get = call(&app, Method::GET, path).await;
        let length = get.headers().get("content-length").cloned();
        assert_eq!(get.status(), 200, "{path}");
        let head = call(&app, Method::HEAD, path).await;
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.headers().get("content-type"), get.headers().get("content-type"), "HEAD {path}");
        assert!(length.is_some(), "{path}");
        // (The metrics grow by the GET that was just counted.)
        if path != "/metrics" {
            assert_eq!(head.headers().get("content-length"), length.as_ref(), "HEAD {path}");
        }
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
        let res = call(&app, Method::DELETE, path).await;
        assert_eq!(
            (res.status().as_u16(), res.headers().get("allow").cloned()),
            (405, Some("GET, HEAD".parse().unwrap()))
        );
    }
    for (method, path, allow) in [
        (Method::GET, "/v1/chat/completions", "POST"),
        (Method::GET, "/pipelines/add", "POST"),
        (Method::POST, "/pipelines/delete", "DELETE"),
    ] {
        let res = call(&app, method.clone(), path).await;
        assert_eq!(res.headers().get("allow").map(|v| v.to_str().unwrap()), Some(allow), "{method} {path}");
        assert_eq!(error_of(res).await, (405, json!({"detail": "Method Not Allowed"})), "{method} {path}");
    }
}

/// An id or action name longer than any is refused without being echoed whole into the answer.
#[tokio::test]
async fn a_very_long_id_or_action_name_is_not_echoed_whole() {
    let app = spawn_app().await;
    let long = "a".repeat(60_000);
    for (method, path, says) in [
        (Method::GET, format!("/{long}/valves"), "an id has at most 256 bytes"),
        (Method::POST, format!("/v1/scripted_pipe/actions/{long}"), "scripted_pipe has no action aaa"),
    ] {
        let (status, body) = error_of(call(&app, method, &path).await).await;
        assert_eq!(status, 404);
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.len() < 300, "{} bytes", detail.len());
        assert!(detail.contains(says), "{detail}");
    }
}

#[tokio::test]
async fn an_encoded_id_arrives_decoded() {
    let app = spawn_app().await;
    for (path, id) in [
        ("/scripted%5Ffilter/filter/inlet", None),
        ("/v1/scripted%5ffilter/filter/inlet", None),
        ("/no%20such%2Fpipe%C3%A9/filter/inlet", Some("no such/pipeé")),
        ("/a%25b/filter/outlet", Some("a%b")),
        ("/a+b/valves", Some("a+b")),
    ] {
        let res = call(&app, if path.ends_with("valves") { Method::GET } else { Method::POST }, path).await;
        match id {
            None => assert_eq!(res.status(), 200, "{path}"),
            Some(id) => {
                let (status, body) = error_of(res).await;
                assert_eq!(status, 404, "{path}");
                let detail = body["detail"].as_str().unwrap();
                assert!(detail.contains(id), "{path}: {detail}");
            }
        }
    }
}

#[tokio::test]
async fn the_valves_editor_and_actions_take_a_small_body_where_a_filter_takes_a_large_one() {
    let app = spawn_app().await;
    let big = "x".repeat(1536 * 1024);
    for path in ["/scripted_pipe/valves/update", "/v1/scripted_pipe/valves/update", "/scripted_pipe/actions/a"] {
        let (status, body) = error_of(app.post_json(path, &json!({ "DESCRIBED": big })).await).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("1048576 bytes"), "{path}: {body}");
    }
    let form =
        json!({"body": {"model": "scripted_pipe", "messages": [{"role": "user", "content": big}]}, "user": null});
    assert_eq!(app.post_json("/v1/scripted_filter/filter/inlet", &form).await.status(), 200);
}

#[tokio::test]
async fn metrics_name_each_route_by_its_pattern() {
    let app = spawn_app().await;
    assert_eq!(call(&app, Method::POST, "/scripted_filter/filter/inlet").await.status(), 200);
    assert_eq!(call(&app, Method::POST, "/v1/scripted_filter/filter/outlet").await.status(), 200);
    // Escapes other than %2F are decoded before routing, and before naming.
    assert_eq!(call(&app, Method::POST, "/scripted_filter/%66ilter/inlet").await.status(), 200);
    assert_eq!(call(&app, Method::GET, "/v1/scripted_pipe/valves").await.status(), 200);
    assert_eq!(call(&app, Method::GET, "/scripted_pipe/valves/update").await.status(), 405);
    assert_eq!(call(&app, Method::POST, "/nothing/at/all/here").await.status(), 404);
    // Refused before the route was reached: still named by it.
    let anonymous = app.client.post(app.url("/v1/scripted_filter/filter/inlet")).json(&inlet_form()).send().await;
    assert_eq!(anonymous.unwrap().status(), 403);
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "sluice_http_requests_total{route=\"/{id}/filter/inlet\",status=\"200\"} 2",
        "sluice_http_requests_total{route=\"/v1/{id}/filter/outlet\",status=\"200\"} 1",
        "sluice_http_requests_total{route=\"/v1/{id}/valves\",status=\"200\"} 1",
        "sluice_http_requests_total{route=\"/{id}/valves/update\",status=\"405\"} 1",
        "sluice_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
        "sluice_http_requests_total{route=\"/v1/{id}/filter/inlet\",status=\"403\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

/// A request whose client leaves before its answer is named without actix-web's route
/// (`routes::fixed_route`): the names must be the ones actix-web gives the same paths.
#[tokio::test]
async fn every_fixed_path_is_named_as_actix_web_names_it() {
    let app = spawn_app().await;
    let paths = sluice::routes::FIXED;
    // A GET reaches each (a 405 for the others), so each is counted under its name.
    for path in paths {
        assert_eq!(sluice::routes::fixed_route(path), Some(path), "{path}");
        call(&app, Method::GET, path).await;
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    for path in paths {
        let named = format!("sluice_http_requests_total{{route=\"{path}\",");
        assert!(text.lines().any(|l| l.starts_with(&named)), "{path} is named otherwise:\n{text}");
    }
    assert_eq!(sluice::routes::fixed_route("/v1/models/x"), None);
}
