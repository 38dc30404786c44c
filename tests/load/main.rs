//! What a large request costs the others, measured with nothing else running: cargo runs test
//! binaries one after the other, and this one holds a single test. The real binary serves two
//! 18 MB requests at a time (a chat the manifold converts and sends on, an inlet the reporting
//! filter captures) while a probe asks `GET /` every 10 ms, and prints what the probes took.
//! The failure it guards against is a blocked HTTP thread: before the work moved off those
//! threads the worst probe took about a second, so a probe over 500 ms fails. That bound is
//! not a speed target: on two cores shared with other work the worst probe has reached
//! 190 ms, and the figures printed are the measurement.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "load-test-key-0123456789";

/// One upstream answer of the Responses API: a short text.
fn responses_stream() -> String {
    let events = [
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
        json!({"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "Fine."}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "id": "msg_1",
               "role": "assistant", "content": [{"type": "output_text", "text": "Fine."}]}}),
        json!({"type": "response.completed", "response": {"id": "resp_1", "status": "completed",
               "output": [], "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2}}}),
    ];
    events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect()
}

/// A conversation of `n` messages of about `size` characters, then a question.
fn conversation(n: usize, size: usize) -> Value {
    let text = "lorem ipsum ".repeat(size / 12);
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("{i} {text}")}))
        .chain(std::iter::once(json!({"role": "user", "content": "and now?"})))
        .collect();
    Value::Array(messages)
}

struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn post(client: &reqwest::Client, url: String, body: String) -> (u16, String) {
    let res =
        client.post(url).bearer_auth(KEY).header("content-type", "application/json").body(body).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_stays_fast_while_large_requests_are_served() {
    let openai = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(responses_stream(), "text/event-stream"))
        .mount(&openai)
        .await;
    let openpipe = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})))
        .mount(&openpipe)
        .await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    std::fs::write(
        dir.path().join("valves/openai_responses.toml"),
        format!("BASE_URL = \"{}/v1\"\nFETCH_MODELS = false\nMAX_RETRIES = 0\n", openai.uri()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("valves/openpipe_reporting.toml"),
        format!("OPENPIPE_BASE_URL = \"{}/api/v1\"\n", openpipe.uri()),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .env_clear()
            .env("SLUICE_HOST", "127.0.0.1")
            .env("SLUICE_PORT", port.to_string())
            .env("SLUICE_DATA_DIR", dir.path().join("data"))
            .env("SLUICE_VALVES_DIR", dir.path().join("valves"))
            .env("SLUICE_API_KEY", KEY)
            .env("SLUICE_WORKERS", "2")
            .env("OPENAI_API_KEY", "sk-load-test")
            .env("OPENPIPE_API_KEY", "opk-load-test")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..400 {
        if client.get(&base).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "sluice did not start");

    let messages = conversation(9_000, 2_000);
    let chat = json!({"model": "openai_responses.gpt-4.1", "stream": false, "messages": messages}).to_string();
    let inlet = json!({"body": {"model": "openai_responses.gpt-4.1", "messages": messages,
        "metadata": {"chat_id": "c-big", "message_id": "m-big", "session_id": "s"}}, "user": {"id": "u"}})
    .to_string();
    drop(messages);

    // GET / every 10 ms for as long as the large requests take.
    let done = Arc::new(AtomicBool::new(false));
    let probe = {
        let (done, base) = (Arc::clone(&done), base.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let started = Instant::now();
                let res = client.get(&base).send().await.unwrap();
                assert_eq!(res.status(), 200);
                latencies.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies
        })
    };
    for _ in 0..2 {
        let (a, b) = tokio::join!(
            post(&client, format!("{base}/v1/chat/completions"), chat.clone()),
            post(&client, format!("{base}/openpipe_reporting/filter/inlet"), inlet.clone())
        );
        assert_eq!(a.0, 200, "{}", a.1);
        assert_eq!(b.0, 200, "{}", &b.1[..b.1.len().min(300)]);
    }
    done.store(true, Ordering::SeqCst);
    let mut latencies = probe.await.unwrap();
    latencies.sort();
    let worst = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "health checks during large requests: {} probes, median {:?}, worst {worst:?}",
        latencies.len(),
        latencies[latencies.len() / 2]
    );
    assert!(latencies.len() >= 5, "the large requests finished before the probe could measure");
    assert!(
        worst < Duration::from_millis(500),
        "GET / took {worst:?} while large requests were served: a blocked HTTP thread"
    );
}
