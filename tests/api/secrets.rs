//! Keys stay where they were put: whoever may edit valves cannot send a stored or pinned key to
//! another host, read it back, or make an error quote it; files that hold keys or chat text are
//! readable by sluice's user only.

use std::collections::HashMap;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json_of, spawn_app_with, Options, TestApp};
use crate::manifold::{chat, sse_response, system_and, OPENAI_KEY};
use crate::openpipe::{fast, turn, valves as reporting_valves, OP_KEY};
use crate::openpipe_mock::MockOpenPipe;

/// A key posted with the wrong shape, to see it never comes back.
pub const POSTED_KEY: &str = "sk-live-posted-key-5f4dcc3b5aa765d61d83";
/// An MCP server's token.
pub const MCP_TOKEN: &str = "mcp-token-e99a18c428cb38d5f260853678922e03";

/// An MCP token written as a JSON number.
const NUMERIC_TOKEN: &str = "918273645546372819";

/// This file's secrets join the suite's: no log line or response may hold them.
fn watch_secrets() {
    crate::helpers::register_secret(POSTED_KEY);
    crate::helpers::register_secret(NUMERIC_TOKEN);
    crate::helpers::register_secret(MCP_TOKEN);
}

/// One MCP server whose `Authorization` header holds [`MCP_TOKEN`].
fn mcp_servers() -> Value {
    json!([{"server_label": "docs", "server_url": "https://mcp.example.com/sse",
            "headers": {"Authorization": format!("Bearer {MCP_TOKEN}")}}])
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn manifold_with(upstream: &MockServer, env: HashMap<String, String>, extra: &str) -> TestApp {
    watch_secrets();
    let mut valves = format!("BASE_URL = \"{}/v1\"\nFETCH_MODELS = false\nMAX_RETRIES = 0\n", upstream.uri());
    if !env.contains_key("OPENAI_API_KEY") {
        valves.push_str(&format!("API_KEY = \"{OPENAI_KEY}\"\n"));
    }
    valves.push_str(extra);
    // Every upstream call is answered (an unexpected one is logged by the mock, key and all).
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response("1_plain_text.sse"))
        .mount(upstream)
        .await;
    spawn_app_with(Options {
        manifold: true,
        env,
        valves_files: vec![("openai_responses.toml", valves)],
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A host that records whatever reaches it.
async fn elsewhere() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": []})))
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
    server
}

async fn update(app: &TestApp, id: &str, body: Value) -> (u16, Value) {
    json_of(app.post_json(&format!("/{id}/valves/update"), &body).await).await
}

#[tokio::test]
async fn a_key_from_the_environment_pins_the_url_it_is_sent_to() {
    let upstream = MockServer::start().await;
    let thief = elsewhere().await;
    let env = HashMap::from([("OPENAI_API_KEY".to_string(), OPENAI_KEY.to_string())]);
    let app = manifold_with(&upstream, env, "").await;
    let (status, answer) = update(&app, "openai_responses", json!({"BASE_URL": format!("{}/v1", thief.uri())})).await;
    assert_eq!(status, 409, "{answer}");
    let detail = answer["detail"].as_str().unwrap();
    assert!(detail.contains("OPENAI_API_KEY") && detail.contains("OPENAI_API_BASE_URL"), "{detail}");
    // Nor through the editor's whole form, nor by clearing the key first.
    let mut form = json_of(app.get("/openai_responses/valves").await).await.1;
    form["BASE_URL"] = json!(format!("{}/v1", thief.uri()));
    assert_eq!(update(&app, "openai_responses", form).await.0, 409);
    let (status, _) =
        update(&app, "openai_responses", json!({"API_KEY": "", "BASE_URL": format!("{}/v1", thief.uri())})).await;
    assert_eq!(status, 409, "the pinned key cannot be cleared over REST either");
    let _ = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(thief.received_requests().await.unwrap().is_empty(), "the key travelled to another host");
}

#[tokio::test]
async fn a_stored_key_goes_to_a_new_url_only_when_it_is_given_again() {
    let upstream = MockServer::start().await;
    let thief = elsewhere().await;
    let app = manifold_with(&upstream, HashMap::new(), "").await;
    let moved = format!("{}/v1", thief.uri());
    for attempt in [
        json!({"BASE_URL": moved}),
        // What Open WebUI's editor posts: the whole form, the key as masked by GET /valves.
        {
            let mut form = json_of(app.get("/openai_responses/valves").await).await.1;
            form["BASE_URL"] = json!(moved);
            form
        },
    ] {
        let (status, answer) = update(&app, "openai_responses", attempt).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("give API_KEY again"), "{answer}");
    }
    let _ = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(thief.received_requests().await.unwrap().is_empty(), "the stored key travelled to another host");

    // Who gives the key again may move it; so may who clears it.
    let (status, _) =
        update(&app, "openai_responses", json!({"BASE_URL": moved, "API_KEY": "sk-new-key-for-the-new-host"})).await;
    assert_eq!(status, 200);
    let (status, _) =
        update(&app, "openai_responses", json!({"BASE_URL": format!("{}/v1", upstream.uri()), "API_KEY": ""})).await;
    assert_eq!(status, 200);
}

/// The editor's Default toggle posts `null`: back to the default URL, which moves the key when
/// the URL was elsewhere, and nothing when it is the default already (that was refused too).
#[tokio::test]
async fn a_default_toggle_moves_the_key_only_if_the_url_changes() {
    watch_secrets();
    let app = spawn_app_with(Options {
        manifold: true,
        valves_files: vec![("openai_responses.toml", format!("API_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\n"))],
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, answer) = update(&app, "openai_responses", json!({"BASE_URL": null})).await;
    assert_eq!(status, 200, "already the default: {answer}");
    let elsewhere = json!({"BASE_URL": "https://proxy.example/v1", "API_KEY": "sk-key-for-the-proxy-0000"});
    assert_eq!(update(&app, "openai_responses", elsewhere).await.0, 200);
    let (status, answer) = update(&app, "openai_responses", json!({"BASE_URL": null})).await;
    assert_eq!(status, 422, "back to the default is a move: {answer}");
}

#[tokio::test]
async fn the_openpipe_key_is_bound_to_its_base_url_too() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let thief = elsewhere().await;
    let app = spawn_app_with(Options {
        openpipe: Some(fast()),
        valves_files: vec![("openpipe_reporting.toml", reporting_valves(&mock, OP_KEY, ""))],
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, answer) =
        update(&app, "openpipe_reporting", json!({"OPENPIPE_BASE_URL": format!("{}/api/v1", thief.uri())})).await;
    assert_eq!(status, 422, "{answer}");
    turn(&app, "c-1", "m-1", "hello", "hi").await;
    mock.wait_for_reports(1, 10).await;
    assert!(thief.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn mcp_tokens_are_masked_and_cannot_be_moved_without_being_given_again() {
    let upstream = MockServer::start().await;
    let servers = mcp_servers().to_string();
    let app = manifold_with(&upstream, HashMap::new(), "").await;
    let (status, _) = update(&app, "openai_responses", json!({"REMOTE_MCP_SERVERS_JSON": servers})).await;
    assert_eq!(status, 200);
    let file = app.valves_dir.join("openai_responses.toml");
    assert_eq!(mode(&file), 0o600);

    let (_, shown) = json_of(app.get("/openai_responses/valves").await).await;
    let masked = shown["REMOTE_MCP_SERVERS_JSON"].as_str().unwrap().to_string();
    assert!(masked.contains("https://mcp.example.com/sse") && masked.contains("********"), "{masked}");

    // The editor posts the form back with another change: the masked JSON keeps the token.
    let mut form = shown.clone();
    form["MAX_RETRIES"] = json!("1");
    assert_eq!(update(&app, "openai_responses", form).await.0, 200);
    assert!(app.valves_file("openai_responses").contains(MCP_TOKEN), "the stored token was kept");

    // A changed JSON that still carries the mask is refused: the token would go to a new URL.
    let moved = masked.replace("https://mcp.example.com/sse", "https://elsewhere.example/sse");
    let (status, answer) = update(&app, "openai_responses", json!({"REMOTE_MCP_SERVERS_JSON": moved})).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("give its headers and authorization again"), "{answer}");
    assert!(app.valves_file("openai_responses").contains("https://mcp.example.com/sse"));
}

/// The MCP servers' tokens travel to BASE_URL inside every request (OpenAI calls the servers
/// with them): moving BASE_URL, even with a new API_KEY, must not send them to the new host
/// (found by a red team: the attacker's host received them in clear).
#[tokio::test]
async fn mcp_tokens_do_not_follow_a_new_base_url_unless_given_again() {
    let upstream = MockServer::start().await;
    let thief = elsewhere().await;
    let servers = mcp_servers().to_string();
    let extra = format!("REMOTE_MCP_SERVERS_JSON = {}\n", toml_string(&servers));
    let app = manifold_with(&upstream, HashMap::new(), &extra).await;
    let moved = format!("{}/v1", thief.uri());
    let with_new_key = json!({"BASE_URL": moved, "API_KEY": "sk-attacker-own-key-0000"});
    let mut form = json_of(app.get("/openai_responses/valves").await).await.1;
    form["BASE_URL"] = json!(moved);
    form["API_KEY"] = json!("sk-attacker-own-key-0000");
    for attempt in [with_new_key, form] {
        let (status, answer) = update(&app, "openai_responses", attempt).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["detail"].as_str().unwrap().contains("give REMOTE_MCP_SERVERS_JSON again"), "{answer}");
    }
    // Neither given: one error names both (one each, the reason phrase named only the first).
    let (status, answer) = update(&app, "openai_responses", json!({"BASE_URL": moved})).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["errors"].as_array().unwrap().len(), 1, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("give API_KEY and REMOTE_MCP_SERVERS_JSON again"), "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("not masked"), "{answer}");
    let _ = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(thief.received_requests().await.unwrap().is_empty(), "the stored tokens travelled to another host");

    // Who writes the servers again (tokens and all), or without tokens, may move them.
    let given = json!({"BASE_URL": moved, "API_KEY": "sk-attacker-own-key-0000", "REMOTE_MCP_SERVERS_JSON": servers});
    assert_eq!(update(&app, "openai_responses", given).await.0, 200);
    let back = format!("{}/v1", upstream.uri());
    let (status, answer) = update(&app, "openai_responses", json!({"BASE_URL": back, "API_KEY": ""})).await;
    assert_eq!(status, 422, "the tokens are bound to the new URL now: {answer}");
    let tokenless = json!([{"server_label": "docs", "server_url": "https://mcp.example.com/sse"}]).to_string();
    let cleared = json!({"BASE_URL": back, "API_KEY": "", "REMOTE_MCP_SERVERS_JSON": tokenless});
    assert_eq!(update(&app, "openai_responses", cleared).await.0, 200);
}

/// MCP servers set by the environment: the editor's form posts them back masked, which is
/// their own value (every save from Open WebUI got a 409; found by a reviewer), and they pin
/// BASE_URL while they hold tokens.
#[tokio::test]
async fn mcp_servers_from_the_environment_come_back_masked_from_the_editor() {
    let upstream = MockServer::start().await;
    let servers = mcp_servers().to_string();
    let env = HashMap::from([("SLUICE_VALVES__OPENAI_RESPONSES__REMOTE_MCP_SERVERS_JSON".to_string(), servers)]);
    let app = manifold_with(&upstream, env, "").await;
    let shown = json_of(app.get("/openai_responses/valves").await).await.1;
    let mut form = shown.clone();
    form["MAX_RETRIES"] = json!(3);
    let (status, answer) = update(&app, "openai_responses", form).await;
    assert_eq!(status, 200, "{answer}");
    let mut moved = shown.clone();
    moved["BASE_URL"] = json!("https://elsewhere.example/v1");
    moved["API_KEY"] = json!("sk-a-new-key-for-elsewhere-0000");
    assert_eq!(update(&app, "openai_responses", moved).await.0, 409);
    let mut changed = shown.clone();
    let text = shown["REMOTE_MCP_SERVERS_JSON"].as_str().unwrap();
    changed["REMOTE_MCP_SERVERS_JSON"] = json!(text.replace("mcp.example.com", "elsewhere.example"));
    assert_eq!(update(&app, "openai_responses", changed).await.0, 409);
}

/// An error body that is not JSON is cut to 200 characters for the message: cut after the
/// keys are taken out, or the first characters of a key across the cut went out (red team).
#[tokio::test]
async fn a_key_across_the_cut_of_an_error_body_leaves_nothing_of_itself() {
    for before in [180, 190, 195] {
        let upstream = MockServer::start().await;
        let body = format!("{}{OPENAI_KEY} tail", "P".repeat(before));
        Mock::given(method("POST"))
            .and(path("/v1/responses"))
            .respond_with(ResponseTemplate::new(500).set_body_raw(body, "text/plain"))
            .with_priority(1)
            .mount(&upstream)
            .await;
        let app = manifold_with(&upstream, HashMap::new(), "").await;
        let chat_body = chat("gpt-4.1", system_and("hi"), json!({"stream": false}));
        let (status, answer) = json_of(app.post_json("/v1/chat/completions", &chat_body).await).await;
        assert_eq!(status, 502, "{answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains("PPPP"), "{answer}");
        assert!(!detail.contains(&OPENAI_KEY[..6]), "{before}: a piece of the key: {detail}");
    }
}

#[tokio::test]
async fn a_secret_of_the_wrong_shape_is_never_echoed() {
    let upstream = MockServer::start().await;
    let app = manifold_with(&upstream, HashMap::new(), "").await;
    for body in [
        json!({"API_KEY": [POSTED_KEY]}),
        json!({"API_KEY": {"key": POSTED_KEY}}),
        json!({"API_KEY": format!("{POSTED_KEY}\r\nX-Evil: 1")}),
        json!({"REMOTE_MCP_SERVERS_JSON": {"headers": {"Authorization": POSTED_KEY}}}),
        json!({"REMOTE_MCP_SERVERS_JSON": format!("[{{\"server_label\": \"x\", \"headers\": {{\"a\": \"{POSTED_KEY}\"}}}}]")}),
        // A key pasted into a field that is no secret, as keys get pasted (a red team), or as
        // a valve's name.
        json!({"FETCH_MODELS": format!("{POSTED_KEY}\n")}),
        json!({"FETCH_MODELS": format!("Bearer {POSTED_KEY}")}),
        json!({format!("API_KEY={POSTED_KEY}"): true}),
        // A token written as a number (it was shown in clear by GET /valves).
        json!({"REMOTE_MCP_SERVERS_JSON": format!("[{{\"server_label\": \"x\", \"server_url\": \"https://m.example\", \"headers\": {{\"X-Tok\": {NUMERIC_TOKEN}}}}}]")}),
    ] {
        // The helpers fail the test if the key reaches the body, the reason phrase or the log.
        let (status, answer) = update(&app, "openai_responses", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
    }
}

#[tokio::test]
async fn an_upstream_error_quoting_the_key_reaches_nobody_with_the_key() {
    let upstream = MockServer::start().await;
    let echo = format!("Incorrect API key provided: {OPENAI_KEY}. Authorization: Bearer {OPENAI_KEY}");
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(
            // The key in the code too: the code went out as it was (found by a red team).
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": {"message": echo, "code": format!("invalid_api_key:{OPENAI_KEY}")}})),
        )
        .with_priority(1)
        .mount(&upstream)
        .await;
    let app = manifold_with(&upstream, HashMap::new(), "").await;
    let (status, answer) =
        json_of(app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await).await;
    assert_eq!(status, 502, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("Incorrect API key provided: ********"), "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_api_key:********", "{answer}");
}

#[tokio::test]
async fn a_stream_failure_quoting_an_mcp_token_is_redacted() {
    let upstream = MockServer::start().await;
    let failed = format!(
        "data: {}\n\n",
        json!({"type": "response.failed", "response": {"status": "failed",
               "error": {"code": "mcp_error", "message": format!("MCP server refused Bearer {MCP_TOKEN}")}}})
    );
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(failed, "text/event-stream"))
        .with_priority(1)
        .mount(&upstream)
        .await;
    let servers = mcp_servers();
    let extra = format!("REMOTE_MCP_SERVERS_JSON = {}\n", toml_string(&servers.to_string()));
    let app = manifold_with(&upstream, HashMap::new(), &extra).await;
    let text = app
        .post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({})))
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("MCP server refused ********"), "{text}");
}

fn toml_string(s: &str) -> String {
    toml_edit::Value::from(s).to_string()
}

#[tokio::test]
async fn an_openpipe_answer_quoting_the_key_is_stored_without_it() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let echo = format!("{{\"message\": \"bad request for key {OP_KEY}\", \"code\": \"BAD_REQUEST\"}}");
    mock.with(|s| s.down = Some(400));
    mock.with(|s| s.down_body = Some(echo));
    let app = spawn_app_with(Options {
        openpipe: Some(fast()),
        valves_files: vec![("openpipe_reporting.toml", reporting_valves(&mock, OP_KEY, ""))],
        ..Default::default()
    })
    .await
    .unwrap();
    turn(&app, "c-2", "m-2", "hello", "hi").await;
    let store = sluice::store::SqliteStore::open(&app.data_dir.join(sluice::store::STORE_FILE)).unwrap();
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = sluice_sdk::Outbox::dead_letters(&store, "openpipe_reporting", 10).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = dead.first().and_then(|e| e.last_error.clone()).expect("the refused report is a dead letter");
    assert!(error.contains("bad request for key ********") && !error.contains(OP_KEY), "{error}");
}

#[tokio::test]
async fn a_valves_file_that_receives_a_key_becomes_private() {
    let upstream = MockServer::start().await;
    let app = manifold_with(&upstream, HashMap::from([("OPENAI_API_KEY".into(), OPENAI_KEY.into())]), "").await;
    let reporting = app.valves_dir.join("openpipe_reporting.toml");
    let file = app.valves_dir.join("openai_responses.toml");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // No secret in it: an edit keeps the operator's mode.
    assert_eq!(update(&app, "openai_responses", json!({"MAX_RETRIES": 1})).await.0, 200);
    assert_eq!(mode(&file), 0o644);
    assert!(!reporting.exists());
    // A secret arrives: the file is the key's now.
    let servers = json!([{"server_label": "d", "server_url": "https://m.example/sse", "authorization": MCP_TOKEN}]);
    assert_eq!(update(&app, "openai_responses", json!({"REMOTE_MCP_SERVERS_JSON": servers.to_string()})).await.0, 200);
    assert_eq!(mode(&file), 0o600);
}

#[tokio::test]
async fn the_data_directory_and_the_database_are_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mock = MockOpenPipe::start(OP_KEY).await;
    std::fs::create_dir_all(root.path().join("valves")).unwrap();
    let app = spawn_app_with(Options {
        root: Some(root.path().to_path_buf()),
        openpipe: Some(fast()),
        valves_files: vec![("openpipe_reporting.toml", reporting_valves(&mock, OP_KEY, ""))],
        ..Default::default()
    })
    .await
    .unwrap();
    turn(&app, "c-3", "m-3", "a question with private words", "an answer").await;
    mock.wait_for_reports(1, 10).await;
    assert_eq!(mode(&data), 0o700, "an older, wider data dir is tightened");
    for name in ["sluice.db", "sluice.db-wal", "sluice.db-shm"] {
        let file = data.join(name);
        assert!(file.exists(), "{name}");
        assert_eq!(mode(&file), 0o600, "{name}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_generated_key_is_never_written_to_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log_path = dir.path().join("sluice.log");
    let log = std::fs::File::create(&log_path).unwrap();
    for format in ["text", "json"] {
        let _ = std::fs::remove_file(dir.path().join("data/api_key"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env_clear()
            .env("SLUICE_HOST", "127.0.0.1")
            .env("SLUICE_PORT", port.to_string())
            .env("SLUICE_DATA_DIR", dir.path().join("data"))
            .env("SLUICE_VALVES_DIR", dir.path().join("valves"))
            .env("SLUICE_LOG_FORMAT", format)
            .stderr(log.try_clone().unwrap())
            .stdout(log.try_clone().unwrap())
            .spawn()
            .unwrap();
        let key_file = dir.path().join("data/api_key");
        let mut up = false;
        for _ in 0..200 {
            if reqwest::get(format!("http://127.0.0.1:{port}/")).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(up, "{format}: sluice did not start");
        let key = std::fs::read_to_string(&key_file).unwrap();
        assert_eq!(mode(&key_file), 0o600);
        let text = std::fs::read_to_string(&log_path).unwrap();
        assert!(!text.contains(key.trim()), "{format}: the generated key is in the log:\n{text}");
        assert!(
            text.contains("generated") && text.contains("api_key"),
            "{format}: the log says where the key is:\n{text}"
        );
    }
}

/// A valves file whose key line lost its closing quote: the parser's message quoted that line,
/// and it went to whoever reloaded or edited the valves, and to the log.
#[tokio::test]
async fn a_broken_line_of_a_valves_file_is_placed_not_quoted() {
    let upstream = MockServer::start().await;
    let app = crate::manifold::manifold_app(&upstream, "").await;
    let path = app.valves_dir.join("openai_responses.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let broken = text.replace(&format!("API_KEY = \"{OPENAI_KEY}\""), &format!("API_KEY = \"{OPENAI_KEY}"));
    assert_ne!(broken, text);
    std::fs::write(&path, broken).unwrap();
    let (status, body) = json_of(app.post_json("/pipelines/reload", &json!({})).await).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("line 2, column"), "{body}");
    let (status, edited) = update(&app, "openai_responses", json!({"MAX_RETRIES": 1})).await;
    assert!(status >= 400, "{edited}");
    for answer in [body, edited] {
        assert!(!answer.to_string().contains(OPENAI_KEY), "{answer}");
    }
}
