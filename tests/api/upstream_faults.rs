//! The manifold against a raw-TCP OpenAI stand-in that can stall, cut the stream, and notice
//! when sluice drops the connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::helpers::{spawn_app_with, Options, TestApp};
use crate::manifold::{fixture, payloads, OPENAI_KEY};

#[derive(Clone, Copy)]
enum After {
    /// Keep the connection open and silent until the peer closes it.
    Hold,
    /// Close the connection without a terminal event.
    Cut,
}

struct FaultyUpstream {
    url: String,
    peer_closed: Arc<Notify>,
    closes: Arc<AtomicUsize>,
}

/// Serves the first `events` events of the plain-text transcript, then does `after`.
async fn faulty_upstream(events: usize, after: After) -> FaultyUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let peer_closed = Arc::new(Notify::new());
    let closes = Arc::new(AtomicUsize::new(0));
    let transcript = String::from_utf8(fixture("1_plain_text.sse")).unwrap();
    let head: String = transcript.split_inclusive("\n\n").take(events).collect();
    let (notify, count) = (Arc::clone(&peer_closed), Arc::clone(&closes));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let head = head.clone();
            let (notify, count) = (Arc::clone(&notify), Arc::clone(&count));
            tokio::spawn(async move {
                if crate::fault_leaks::read_request(&mut socket).await.is_none() {
                    return;
                }
                let response = format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\nconnection: close\r\n\r\n{head}");
                if socket.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                match after {
                    After::Cut => {}
                    After::Hold => {
                        let _ = socket.read(&mut [0u8; 1]).await;
                        count.fetch_add(1, Ordering::SeqCst);
                        notify.notify_waiters();
                    }
                }
            });
        }
    });
    FaultyUpstream { url, peer_closed, closes }
}

async fn app_for(upstream: &FaultyUpstream, extra: &str) -> TestApp {
    app_with_keepalive(upstream, extra, 0).await
}

async fn app_with_keepalive(upstream: &FaultyUpstream, extra: &str, keepalive_secs: u64) -> TestApp {
    let valves = format!(
        "BASE_URL = \"{}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nSHOW_USAGE_COST = false\nMAX_RETRIES = 0\n{extra}",
        upstream.url
    );
    spawn_app_with(Options {
        manifold: true,
        keepalive_secs,
        valves_files: vec![("openai_responses.toml", valves)],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn chat() -> serde_json::Value {
    json!({"model": "openai_responses.gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "user": {"id": "u1"}})
}

#[tokio::test]
async fn a_stalled_upstream_ends_the_answer_with_a_timeout_error() {
    let upstream = faulty_upstream(5, After::Hold).await;
    let app = app_for(&upstream, "STREAM_IDLE_TIMEOUT_S = 1\n").await;
    let started = std::time::Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(10), async {
        app.post_json("/chat/completions", &chat()).await.text().await.unwrap()
    })
    .await
    .expect("the answer ends");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (got, _, done) = payloads(&text);
    assert!(done, "{text}");
    assert_eq!(got.first(), Some(&json!({"delta": {"content": "Bon"}})));
    let error = got.last().unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("no event for 1 s"), "{text}");
    assert_eq!(error["error"]["type"], json!("timeout"));
    // The upstream connection was dropped.
    tokio::time::timeout(Duration::from_secs(5), async {
        while upstream.closes.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("sluice closed the upstream connection");
}

#[tokio::test]
async fn a_cut_upstream_stream_is_reported_not_silent() {
    let upstream = faulty_upstream(6, After::Cut).await;
    let app = app_for(&upstream, "").await;
    let text = app.post_json("/chat/completions", &chat()).await.text().await.unwrap();
    let (got, _, done) = payloads(&text);
    assert!(done);
    assert_eq!(got[..2], [json!({"delta": {"content": "Bon"}}), json!({"delta": {"content": "jour"}})]);
    assert_eq!(got.last().unwrap()["error"]["message"], json!("OpenAI: the stream ended unexpectedly"), "{text}");
}

#[tokio::test]
async fn a_client_that_leaves_closes_the_upstream_request() {
    let upstream = faulty_upstream(5, After::Hold).await;
    // A hang-up is noticed at the next write; the keep-alive ping bounds that wait.
    let app = app_with_keepalive(&upstream, "", 1).await;
    let res = app.post_streaming("/chat/completions", &chat()).await;
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("Bon") {
        seen.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
    }
    let closed = upstream.peer_closed.notified();
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), closed).await.expect("the upstream saw sluice hang up");
}

/// An error answer whose body comes a byte at a time, each within the idle timeout: the chat
/// is answered once the idle timeout has passed for the whole body, not held while bytes
/// trickle (a red team saw one held for ten minutes).
#[tokio::test]
async fn an_error_body_that_trickles_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                if crate::fault_leaks::read_request(&mut socket).await.is_none() {
                    return;
                }
                let head = "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n\
                            content-length: 100000\r\n\r\n{\"error\": {\"message\": \"slow";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                while socket.write_all(b".").await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
    });
    let upstream = FaultyUpstream { url, peer_closed: Arc::new(Notify::new()), closes: Arc::new(AtomicUsize::new(0)) };
    let app = app_for(&upstream, "STREAM_IDLE_TIMEOUT_S = 1\n").await;
    let started = std::time::Instant::now();
    let body =
        json!({"model": "openai_responses.gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let answer = tokio::time::timeout(Duration::from_secs(20), app.post_json("/chat/completions", &body))
        .await
        .expect("the chat is answered");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert_eq!(answer.status().as_u16(), 429);
    let text = answer.text().await.unwrap();
    assert!(text.contains("HTTP 429"), "{text}");
}
