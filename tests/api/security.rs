//! Hostile input at the edges: oversized headers, path tricks in pipeline ids, and valves that
//! would point sluice somewhere it should not go.

use serde_json::json;

use crate::helpers::{json_of, raw_exchange, spawn_app, spawn_app_with, Options, KEY};

/// Sends raw bytes on a fresh connection; the status line of the answer ("" if none).
async fn raw(address: &str, request: &[u8]) -> String {
    raw_exchange(address, request, 1).await.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn oversized_or_too_many_headers_are_refused_and_the_server_stays_up() {
    let app = spawn_app().await;
    let big = format!(
        "GET /models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nx-big: {}\r\n\r\n",
        "a".repeat(128 * 1024)
    );
    let status = raw(&app.address, big.as_bytes()).await;
    assert!(status.starts_with("HTTP/1.1 431") || status.starts_with("HTTP/1.1 400") || status.is_empty(), "{status}");
    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let status = raw(
        &app.address,
        format!("GET /models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 431") || status.starts_with("HTTP/1.1 400") || status.is_empty(), "{status}");
    // A request line that never ends is cut off, not buffered forever.
    let endless = format!("GET /{} HTTP/1.1\r\n", "a".repeat(256 * 1024));
    let status = raw(&app.address, endless.as_bytes()).await;
    assert!(!status.starts_with("HTTP/1.1 2"), "{status}");
    assert_eq!(app.get("/models").await.status(), 200);
}

#[tokio::test]
async fn pipeline_ids_never_become_paths() {
    let app = spawn_app().await;
    let before: Vec<_> = std::fs::read_dir(&app.valves_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    for id in
        ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "..", "scripted_pipe%2F..%2F..%2Fx", "%2Ftmp%2Fx", "scripted_pipe%00"]
    {
        for (method, path) in [
            ("GET", "/{}/valves"),
            ("GET", "/{}/valves/spec"),
            ("POST", "/{}/valves/update"),
            ("POST", "/{}/filter/inlet"),
        ] {
            let url = app.url(&path.replace("{}", id));
            let req =
                if method == "GET" { app.client.get(url) } else { app.client.post(url).json(&json!({"priority": 1})) };
            let res = req.bearer_auth(KEY).send().await.unwrap();
            let status = res.status().as_u16();
            assert!(status == 404 || status == 400, "{method} {id}: {status}");
        }
    }
    let after: Vec<_> = std::fs::read_dir(&app.valves_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "a file appeared in the valves directory");
    assert!(!app.valves_dir.parent().unwrap().join("x.toml").exists());
}

#[tokio::test]
async fn valves_that_are_urls_are_validated_before_they_are_written() {
    let app = spawn_app_with(Options {
        manifold: true,
        openpipe: Some(sluice_openpipe_reporting::Tuning::default()),
        valves_files: vec![("openai_responses.toml", "FETCH_MODELS = false\n".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    let (manifold_before, reporting_before) =
        (app.valves_file("openai_responses"), app.valves_file("openpipe_reporting"));
    for (id, body, field) in [
        ("openai_responses", json!({"BASE_URL": "https://user:hunter2@api.openai.com/v1"}), "credentials"),
        ("openai_responses", json!({"BASE_URL": "file:///etc/passwd"}), "http(s)"),
        ("openai_responses", json!({"BASE_URL": "https://api.openai.com/v1?key=x"}), "query"),
        (
            "openai_responses",
            json!({"REMOTE_MCP_SERVERS_JSON": "[{\"server_label\": \"x\", \"server_url\": \"file:///etc/shadow\"}]"}),
            "server_url",
        ),
        ("openpipe_reporting", json!({"OPENPIPE_BASE_URL": "http://k:s@127.0.0.1/api/v1"}), "credentials"),
        ("openpipe_reporting", json!({"OPENPIPE_BASE_URL": "gopher://127.0.0.1/"}), "http(s)"),
    ] {
        let (status, answer) = json_of(app.post_json(&format!("/{id}/valves/update"), &body).await).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(field), "{answer}");
        assert!(!answer.to_string().contains("hunter2"), "the refused value is echoed: {answer}");
    }
    assert_eq!(app.valves_file("openai_responses"), manifold_before);
    assert_eq!(app.valves_file("openpipe_reporting"), reporting_before);
}

#[tokio::test]
async fn valves_that_become_headers_refuse_line_breaks() {
    let app = spawn_app_with(Options {
        manifold: true,
        valves_files: vec![("openai_responses.toml", "FETCH_MODELS = false\n".into())],
        ..Default::default()
    })
    .await
    .unwrap();
    for (field, value) in [
        ("ORGANIZATION", "org-1\r\nX-Injected: 1"),
        ("PROJECT", "proj\u{0}1"),
        ("API_KEY", "sk-abc\ndef"),
        ("ORGANIZATION", " org-1"),
    ] {
        let (status, answer) =
            json_of(app.post_json("/openai_responses/valves/update", &json!({ field: value })).await).await;
        assert_eq!(status, 422, "{field}: {answer}");
        assert!(answer["detail"].as_str().unwrap().starts_with(&format!("Invalid valves: {field}")), "{answer}");
    }
}

#[tokio::test]
async fn the_health_check_answers_head_without_a_key_and_nothing_else_does() {
    let app = spawn_app().await;
    for path in ["/", "/v1"] {
        let res = app.client.head(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "HEAD {path}");
    }
    assert_eq!(app.client.head(app.url("/models")).send().await.unwrap().status(), 403);
}

#[tokio::test]
async fn null_for_a_field_set_by_the_environment_names_the_variable() {
    let env =
        std::collections::HashMap::from([("SLUICE_VALVES__SCRIPTED_FILTER__PRIORITY".to_string(), "3".to_string())]);
    let app = spawn_app_with(Options { env, ..Default::default() }).await.unwrap();
    let (status, answer) =
        json_of(app.post_json("/scripted_filter/valves/update", &json!({"priority": null})).await).await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("SLUICE_VALVES__SCRIPTED_FILTER__PRIORITY"), "{answer}");
}

#[tokio::test]
async fn numbers_pass_through_filters_exactly() {
    let app = spawn_app().await;
    let body = r#"{"body": {"model": "m", "messages": [], "n": 123456789012345678901234567890, "neg": -98765432109876543210, "f": 1.0000000000000002, "e": 1e-7}, "user": null}"#;
    let text = app.post_raw("/bare_filter/filter/inlet", body).await.text().await.unwrap();
    for exact in ["123456789012345678901234567890", "-98765432109876543210", "1.0000000000000002"] {
        assert!(text.contains(exact), "{exact} changed: {text}");
    }
}

#[tokio::test]
async fn compressed_bodies_are_refused_as_unsupported() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/bare_filter/filter/inlet"))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(res).await;
    assert_eq!(status, 415, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("must not be compressed"), "{answer}");
    // A second header, or a list in one, is read too (the first alone let `br` through).
    for codings in [&["identity", "br"][..], &["identity, gzip"], &["Identity", ""]] {
        let mut request = app.client.post(app.url("/bare_filter/filter/inlet")).bearer_auth(KEY);
        for coding in codings {
            request = request.header("content-encoding", *coding);
        }
        let res = request.header("content-type", "application/json").body(r#"{"body": {}}"#).send().await.unwrap();
        let expected = if codings[0] == "Identity" { 200 } else { 415 };
        assert_eq!(res.status().as_u16(), expected, "{codings:?}");
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let app = spawn_app().await;
    for second in [KEY, "wrong"] {
        let status = raw(
            &app.address,
            format!("GET /models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\nauthorization: Bearer {second}\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert!(status.starts_with("HTTP/1.1 400"), "{status}");
    }
}

#[tokio::test]
async fn the_compose_files_never_sign_open_webui_sessions_with_the_sluice_key() {
    for file in ["docker-compose.yml", "docker-compose.replicas.yml"] {
        let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let line = text.lines().find(|l| l.trim_start().starts_with("WEBUI_SECRET_KEY:")).unwrap_or_default();
        assert!(line.contains("${WEBUI_SECRET_KEY:?"), "{file}: {line}");
        assert!(!line.contains("SLUICE_API_KEY"), "{file}: {line}");
    }
}
