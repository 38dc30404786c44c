//! The manifold's connections to OpenAI, counted where they arrive: kept alive from one chat to
//! the next, and across valves edits that do not change how connections are made (each new
//! connection to OpenAI is a TLS handshake before the answer's first token).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::helpers::{http_chunk, json_of, TestApp};
use crate::manifold::{chat, fixture, manifold_app_from, system_and, OPENAI_KEY};

/// How the stand-in frames its answer.
#[derive(Clone, Copy)]
enum Framing {
    Length,
    /// Chunked, the end of the body in the same write as the last event.
    Chunked,
    /// Chunked, the end of the body written on its own a moment after the last event, as
    /// HTTP/1.1 servers that flush each event do (uvicorn behind LiteLLM, for one).
    ChunkedEndApart,
}

struct StandIn {
    url: String,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Answers written to their last byte.
    written: Arc<AtomicUsize>,
}

impl StandIn {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Until `n` answers were written whole, and a moment for sluice to read their end (a
    /// margin for a loaded CI machine: too short, and the test fails, never passes, wrongly).
    async fn wait_written(&self, n: usize) {
        for _ in 0..1000 {
            if self.written.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A Responses API stand-in that answers every request with the plain-text transcript on a
/// kept-alive connection, framed as asked, and counts the connections it accepted.
async fn counting_upstream(framing: Framing) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let transcript = fixture("1_plain_text.sse");
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n";
    let mut answer = Vec::new();
    let mut end = Vec::new();
    if let Framing::Length = framing {
        answer.extend_from_slice(format!("{head}content-length: {}\r\n\r\n", transcript.len()).as_bytes());
        answer.extend_from_slice(&transcript);
    } else {
        answer.extend_from_slice(format!("{head}transfer-encoding: chunked\r\n\r\n").as_bytes());
        for event in transcript.split_inclusive(|&b| b == b'\n') {
            http_chunk(&mut answer, event);
        }
        end.extend_from_slice(b"0\r\n\r\n");
    }
    if let Framing::Chunked = framing {
        answer.append(&mut end);
    }
    let (parts, count, done) = (Arc::new([answer, end]), Arc::clone(&accepted), Arc::clone(&written));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (parts, done) = (Arc::clone(&parts), Arc::clone(&done));
            tokio::spawn(async move {
                while crate::fault_leaks::read_request(&mut socket).await.is_some() {
                    for (i, part) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        if socket.write_all(part).await.is_err() {
                            return;
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    StandIn { url, accepted, written }
}

/// The test app has one HTTP worker, so every chat rides that worker's client and pool (each
/// worker has its own): the counts below assume it.
async fn app_for(url: &str) -> TestApp {
    let valves = format!(
        "BASE_URL = \"{url}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nMODEL_ID = [\"gpt-4.1\"]\n"
    );
    manifold_app_from(valves).await
}

async fn answered(app: &TestApp) {
    let res = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("data: [DONE]"));
}

#[tokio::test]
async fn valves_edits_keep_the_connections_to_openai_unless_they_change_how_they_are_made() {
    let upstream = counting_upstream(Framing::Length).await;
    let app = app_for(&upstream.url).await;
    answered(&app).await;
    answered(&app).await;
    assert_eq!(upstream.accepted(), 1, "the second chat rides the first one's connection");

    // An edit of what each request carries (the key, the models): the connection stays.
    let edit = json!({"API_KEY": "sk-test-rotated-key-0123456789", "MODEL_ID": ["gpt-4.1", "o4-mini"]});
    let (status, _) = json_of(app.post_json("/openai_responses/valves/update", &edit).await).await;
    assert_eq!(status, 200);
    answered(&app).await;
    assert_eq!(upstream.accepted(), 1, "a valves edit dropped the pooled connection");

    // An edit of how connections are made: new clients, so a new connection.
    let (status, _) =
        json_of(app.post_json("/openai_responses/valves/update", &json!({"REQUEST_TIMEOUT_CONNECT_S": 7})).await).await;
    assert_eq!(status, 200);
    answered(&app).await;
    assert_eq!(upstream.accepted(), 2, "new clients were made for the new connect timeout");
}

#[tokio::test]
async fn chats_reuse_the_connection_however_the_answer_is_framed() {
    for (framing, name) in [(Framing::Chunked, "chunked"), (Framing::ChunkedEndApart, "chunked, its end written apart")]
    {
        let upstream = counting_upstream(framing).await;
        let app = app_for(&upstream.url).await;
        for n in 1..=3 {
            answered(&app).await;
            // A user's next message comes later than the end of the last answer's body.
            upstream.wait_written(n).await;
        }
        assert_eq!(upstream.accepted(), 1, "{name}: each chat opened a connection of its own");
    }
}

/// A stand-in whose body goes on after the answer's last event, a comment every 50 ms, and
/// which notes when sluice closes the connection.
async fn endless_upstream() -> (String, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let closed = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&closed);
    let transcript = fixture("1_plain_text.sse");
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else { return };
        crate::fault_leaks::read_request(&mut socket).await.unwrap();
        let mut answer =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        http_chunk(&mut answer, &transcript);
        let mut more = Vec::new();
        http_chunk(&mut more, b": more\n\n");
        let mut write = socket.write_all(&answer).await;
        while write.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            write = socket.write_all(&more).await;
        }
        notify.notify_one();
    });
    (url, closed)
}

#[tokio::test]
async fn a_body_that_goes_on_after_the_answer_is_not_read_for_ever() {
    let (url, closed) = endless_upstream().await;
    let app = app_for(&url).await;
    answered(&app).await;
    let waited = tokio::time::timeout(Duration::from_secs(15), closed.notified()).await;
    assert!(waited.is_ok(), "sluice still held the connection 15 s after the answer");
}
