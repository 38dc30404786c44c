//! A client that leaves before the answer starts: whatever sluice is waiting for on its behalf
//! (the upstream's first output, a retry, a backoff sleep) ends with it. Before, an abandoned
//! chat kept its upstream request for the idle timeout (15 minutes) and was then retried for
//! nobody, up to three billed requests per abandoned chat.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::fault_leaks::read_request;
use crate::helpers::{TestApp, KEY};
use crate::manifold::{chat, manifold_app_from, system_and, OPENAI_KEY};

#[derive(Clone, Copy)]
enum Upstream {
    /// Reads the request and never answers.
    Silent,
    /// Answers the head and `response.created`, then nothing: the model is "thinking".
    Thinking,
    /// `500` asking for a retry in two seconds.
    RetryLater,
}

struct StandIn {
    url: String,
    requests: Arc<AtomicUsize>,
    /// Notified when sluice closes a connection the stand-in still holds.
    hung_up: Arc<Notify>,
}

async fn stand_in(behaviour: Upstream) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let hung_up = Arc::new(Notify::new());
    let (count, notify) = (Arc::clone(&requests), Arc::clone(&hung_up));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (count, notify) = (Arc::clone(&count), Arc::clone(&notify));
            tokio::spawn(async move {
                if read_request(&mut socket).await.is_none() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Upstream::Silent => {}
                    Upstream::Thinking => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";
                        let created = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\"}}\n\n";
                        let _ = socket.write_all(format!("{head}{created}").as_bytes()).await;
                    }
                    Upstream::RetryLater => {
                        let body = r#"{"error":{"message":"The server had an error","type":"server_error"}}"#;
                        let answer = format!(
                            "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nretry-after-ms: 2000\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = socket.write_all(answer.as_bytes()).await;
                        return;
                    }
                }
                let mut byte = [0u8; 1];
                let _ = socket.read(&mut byte).await;
                notify.notify_one();
            });
        }
    });
    StandIn { url, requests, hung_up }
}

async fn app_for(upstream: &StandIn) -> TestApp {
    let valves = format!(
        "BASE_URL = \"{}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nMAX_RETRIES = 2\nSTREAM_IDLE_TIMEOUT_S = 60\n",
        upstream.url
    );
    manifold_app_from(valves).await
}

/// Asks for an answer and hangs up after `patience`, as a user closing the tab does.
async fn ask_and_leave(app: &TestApp, patience: Duration) {
    let impatient = reqwest::Client::builder().timeout(patience).build().unwrap();
    let sent = impatient
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&chat("gpt-4.1", system_and("hello"), json!({})))
        .send()
        .await;
    assert!(sent.is_err(), "the answer was not supposed to start");
}

#[tokio::test]
async fn a_client_that_leaves_while_the_upstream_is_silent_ends_the_upstream_request() {
    let upstream = stand_in(Upstream::Silent).await;
    let app = app_for(&upstream).await;
    let hung_up = upstream.hung_up.notified();
    ask_and_leave(&app, Duration::from_millis(400)).await;
    tokio::time::timeout(Duration::from_secs(5), hung_up).await.expect("sluice hung up on the upstream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1, "no retry for a client that is gone");
    // It is counted (and logged) as a request its client left: before, it left no trace
    // though its upstream call was made (a red team).
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let left = "sluice_http_requests_total{route=\"/v1/chat/completions\",status=\"499\"} 1";
    assert!(metrics.lines().any(|l| l == left), "{metrics}");
}

#[tokio::test]
async fn a_client_that_leaves_while_the_model_thinks_ends_the_upstream_request() {
    let upstream = stand_in(Upstream::Thinking).await;
    let app = app_for(&upstream).await;
    let hung_up = upstream.hung_up.notified();
    ask_and_leave(&app, Duration::from_millis(400)).await;
    tokio::time::timeout(Duration::from_secs(5), hung_up).await.expect("sluice hung up on the upstream");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_client_that_leaves_during_a_backoff_gets_no_retry() {
    let upstream = stand_in(Upstream::RetryLater).await;
    let app = app_for(&upstream).await;
    ask_and_leave(&app, Duration::from_millis(500)).await;
    // The retry was due two seconds after the first attempt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 1, "a retry went out for a client that had left");
    // A client that stays gets its retries, as before.
    let res =
        app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hello"), json!({"stream": false}))).await;
    assert_eq!(res.status().as_u16(), 502);
    assert_eq!(upstream.requests.load(Ordering::SeqCst), 4);
}
