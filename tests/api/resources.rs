//! Work per request is bounded: a hostile body is refused before it costs memory, a body that
//! trickles in is cut off, and what sluice keeps on disk for a turn has a size. (That the
//! health check stays fast while large requests are served is `tests/load`, which runs alone.)

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use crate::binary::Binary;
use crate::helpers::{json_of, spawn_app_with, Options, KEY};
use crate::manifold::{sse_response, OPENAI_KEY};
use crate::openpipe::{fast, valves as reporting_valves, OP_KEY};
use crate::openpipe_mock::MockOpenPipe;

async fn upstream() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response("1_plain_text.sse"))
        .mount(&server)
        .await;
    server
}

async fn binary(dir: &std::path::Path, openai: &MockServer, openpipe: &MockOpenPipe) -> Binary {
    std::fs::create_dir_all(dir.join("valves")).unwrap();
    std::fs::write(
        dir.join("valves/openai_responses.toml"),
        format!("BASE_URL = \"{}/v1\"\nFETCH_MODELS = false\nMAX_RETRIES = 0\n", openai.uri()),
    )
    .unwrap();
    std::fs::write(dir.join("valves/openpipe_reporting.toml"), reporting_valves(openpipe, OP_KEY, "")).unwrap();
    // Info level: this test is about time and memory, not about what trace logging costs.
    Binary::start(dir, &[("OPENAI_API_KEY", OPENAI_KEY.to_string()), ("SLUICE_LOG_LEVEL", "info".into())]).await
}

async fn post_text(server: &Binary, path: &str, body: String) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", server.base))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    json_of(res).await
}

#[tokio::test]
async fn hostile_bodies_are_refused_before_they_cost_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (openai, openpipe) = (upstream().await, MockOpenPipe::start(OP_KEY).await);
    let server = binary(dir.path(), &openai, &openpipe).await;

    // 500,000 one-letter messages (16 MB): 13.8 s and 1.7 GB before.
    let tiny = vec![r#"{"role":"user","content":"a"}"#; 500_000].join(",");
    let chat = format!(r#"{{"model":"openai_responses.gpt-4.1","stream":false,"messages":[{tiny}]}}"#);
    let (status, answer) = post_text(&server, "/v1/chat/completions", chat).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("JSON values"), "{answer}");

    // 8 million empty objects in an inlet (24 MB): 626 MB before.
    let empties = vec!["{}"; 8_000_000].join(",");
    let inlet = format!(r#"{{"body":{{"model":"m","messages":[],"x":[{empties}]}},"user":null}}"#);
    let (status, _) = post_text(&server, "/openpipe_reporting/filter/inlet", inlet).await;
    assert_eq!(status, 413);

    // Within the value limit, too many messages or parts are still refused by count.
    let many = vec![r#"{"role":"user","content":"a"}"#; 10_001].join(",");
    let (status, answer) = post_text(
        &server,
        "/v1/chat/completions",
        format!(r#"{{"model":"openai_responses.gpt-4.1","messages":[{many}]}}"#),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("10001 messages"), "{answer}");
    let parts = vec![r#"{"type":"text","text":"a"}"#; 1001].join(",");
    let body = format!(r#"{{"body":{{"messages":[{{"role":"user","content":[{parts}]}}]}},"user":null}}"#);
    let (status, answer) = post_text(&server, "/openai_responses.gpt-4.1/filter/inlet", body).await;
    assert_eq!(status, 413, "{answer}");

    // Valves: the editor's route takes a megabyte; a list takes a thousand items.
    let (status, _) = post_text(
        &server,
        "/openai_responses/valves/update",
        json!({"ORGANIZATION": "x".repeat(10 << 20)}).to_string(),
    )
    .await;
    assert_eq!(status, 413);
    let models: Vec<String> = (0..1001).map(|i| format!("m{i}")).collect();
    let (status, answer) =
        post_text(&server, "/openai_responses/valves/update", json!({"MODEL_ID": models}).to_string()).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer["detail"].as_str().unwrap().contains("1001 items"), "{answer}");

    // What the Responses API cannot take is dropped with one summary line, not a line a part.
    let mut parts = vec![json!({"type": "text", "text": "hello"})];
    parts.extend((0..900).map(|i| json!({"type": format!("mystery_{i}")})));
    let chat =
        json!({"model": "openai_responses.gpt-4.1", "stream": false, "messages": [{"role": "user", "content": parts}]});
    let (status, answer) = post_text(&server, "/v1/chat/completions", chat.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let summary = "dropped what the Responses API does not take";
    let log = server.log_showing(summary).await;
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(summary)).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("parts=900") && lines[0].contains("mystery_0"), "{}", lines[0]);

    let peak = server.memory_kb("VmHWM");
    assert!(peak < 200 * 1024, "peak resident memory {peak} kB");
    assert_eq!(reqwest::get(&server.base).await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off() {
    let app = spawn_app_with(Options { body_timeout_secs: Some(2), ..Default::default() }).await.unwrap();
    let mut socket = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let head = format!(
        "POST /bare_filter/filter/inlet HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // A byte every 300 ms, forever.
    let (mut read_half, mut write_half) = socket.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            if write_half.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut read_half, &mut answer),
    )
    .await;
    trickle.abort();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 2 s"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn a_capture_never_holds_more_than_its_report_could_carry() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = spawn_app_with(Options {
        openpipe: Some(fast()),
        valves_files: vec![("openpipe_reporting.toml", reporting_valves(&mock, OP_KEY, "MAX_REPORT_BYTES = 50000"))],
        ..Default::default()
    })
    .await
    .unwrap();
    // A 6 MB image in the question.
    let image = format!("data:image/png;base64,{}", "A".repeat(6 << 20));
    let question = json!([{"role": "user", "content": [{"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": image}}]}]);
    let inlet = crate::openpipe::inlet_body("c-img", "m-img", question.clone());
    let res = app
        .post_json("/openpipe_reporting/filter/inlet", &json!({"user": crate::openpipe::user(), "body": inlet}))
        .await;
    assert_eq!(res.status(), 200);
    let db = app.data_dir.join(sluice::store::STORE_FILE);
    let stored: i64 = rusqlite_size(&db);
    assert!(stored < 100_000, "the capture holds {stored} bytes");
    let mut history = question.as_array().unwrap().clone();
    history[0]["id"] = json!("m-img-q");
    let outlet = crate::openpipe::outlet_body("c-img", "m-img", Value::Array(history), "a cat");
    let res = app
        .post_json("/openpipe_reporting/filter/outlet", &json!({"user": crate::openpipe::user(), "body": outlet}))
        .await;
    assert_eq!(res.status(), 200);
    let report = mock.wait_for_reports(1, 10).await.remove(0);
    assert_eq!(report["tags"]["capture"], "inlet_outlet", "{}", report["tags"]);
    assert_eq!(report["tags"]["images_omitted"], "1", "{}", report["tags"]);
}

/// Bytes of the values of the captures the store holds.
fn rusqlite_size(db: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(length(CAST(value AS BLOB))), 0) FROM kv WHERE namespace = 'openpipe_reporting.capture'",
        [],
        |row| row.get(0),
    )
    .unwrap()
}
