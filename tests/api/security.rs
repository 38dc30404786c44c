//! Hostile input at the edges: oversized headers, path tricks in pipeline ids, and valves that
//! would point sluice somewhere it should not go.

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{json_of, spawn_app, spawn_app_with, Options, KEY};

/// Sends raw bytes on a fresh connection; the status line of the answer ("" if none).
async fn raw(address: &str, request: &[u8]) -> String {
    let mut socket = tokio::net::TcpStream::connect(address.trim_start_matches("http://")).await.unwrap();
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_string()
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
