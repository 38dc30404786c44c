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

const PLAIN: &str = "1_plain_text.sse";
/// A `response.failed` with a `server_error`, which sluice retries while it may.
const FAILED: &str = "5a_failed.sse";

/// How the stand-in frames its answer.
#[derive(Clone, Copy)]
enum Framing {
    Length,
    /// Chunked, the end of the body in the same write as the last event.
    Chunked,
    /// Chunked, the end of the body written on its own a moment after the last event, as
    /// HTTP/1.1 servers that flush each event do (uvicorn behind LiteLLM, for one).
    ChunkedEndApart,
    /// As `ChunkedEndApart`, a 256 KiB comment before the end.
    ChunkedLongTail,
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

/// A Responses API stand-in that answers requests with `transcripts` in turn (the last one
/// again once they are spent) on kept-alive connections, framed as asked, and counts the
/// connections it accepted.
async fn counting_upstream(framing: Framing, transcripts: &[&str]) -> StandIn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicUsize::new(0));
    let answers: Arc<Vec<[Vec<u8>; 2]>> = Arc::new(transcripts.iter().map(|name| framed(framing, name)).collect());
    let (count, done) = (Arc::clone(&accepted), Arc::clone(&written));
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let (answers, done) = (Arc::clone(&answers), Arc::clone(&done));
            tokio::spawn(async move {
                while crate::fault_leaks::read_request(&mut socket).await.is_some() {
                    let turn = done.load(Ordering::SeqCst).min(answers.len() - 1);
                    for (i, part) in answers[turn].iter().filter(|p| !p.is_empty()).enumerate() {
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

/// The transcript `name` as one answer: what is written first, and the body's end when it
/// is written apart (else empty).
fn framed(framing: Framing, name: &str) -> [Vec<u8>; 2] {
    let transcript = fixture(name);
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
        if let Framing::ChunkedLongTail = framing {
            let comment = format!(": {}\n\n", "x".repeat(256 * 1024));
            http_chunk(&mut end, comment.as_bytes());
        }
        end.extend_from_slice(b"0\r\n\r\n");
    }
    if let Framing::Chunked = framing {
        answer.append(&mut end);
    }
    [answer, end]
}

/// The test app has one HTTP worker, so every chat rides that worker's client and pool (each
/// worker has its own): the counts below assume it.
async fn app_for(url: &str, retries: u32) -> TestApp {
    let valves = format!(
        "BASE_URL = \"{url}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nMODEL_ID = [\"gpt-4.1\"]\nMAX_RETRIES = {retries}\n"
    );
    manifold_app_from(valves).await
}

/// One streamed chat's body, its status checked.
async fn chatted(app: &TestApp) -> String {
    let res = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap()
}

async fn answered(app: &TestApp) {
    let body = chatted(app).await;
    assert!(body.contains("data: [DONE]") && !body.contains("\"error\""), "not an answer: {body}");
}

#[tokio::test]
async fn valves_edits_keep_the_connections_to_openai_unless_they_change_how_they_are_made() {
    let upstream = counting_upstream(Framing::Length, &[PLAIN]).await;
    let app = app_for(&upstream.url, 2).await;
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
        let upstream = counting_upstream(framing, &[PLAIN]).await;
        let app = app_for(&upstream.url, 2).await;
        for n in 1..=3 {
            answered(&app).await;
            // A user's next message comes later than the end of the last answer's body.
            upstream.wait_written(n).await;
        }
        assert_eq!(upstream.accepted(), 1, "{name}: each chat opened a connection of its own");
    }
}

#[tokio::test]
async fn a_failed_answer_leaves_its_connection_to_the_next_chat() {
    let upstream = counting_upstream(Framing::ChunkedEndApart, &[FAILED, PLAIN]).await;
    let app = app_for(&upstream.url, 0).await;
    let body = chatted(&app).await;
    assert!(body.contains("The model failed to generate a response."), "not the failure: {body}");
    upstream.wait_written(1).await;
    answered(&app).await;
    assert_eq!(upstream.accepted(), 1, "the failed answer's connection was closed");
}

#[tokio::test]
async fn a_retried_failure_is_retried_on_the_same_connection() {
    let upstream = counting_upstream(Framing::ChunkedEndApart, &[FAILED, PLAIN]).await;
    let app = app_for(&upstream.url, 1).await;
    // The retry waits at least 375 ms, the failed body's end comes 20 ms after its last event.
    // An answer, so the failure was retried.
    answered(&app).await;
    assert_eq!(upstream.accepted(), 1, "the retry opened a connection of its own");
}

#[tokio::test]
async fn what_follows_an_answer_is_read_only_so_far() {
    let upstream = counting_upstream(Framing::ChunkedLongTail, &[PLAIN]).await;
    let app = app_for(&upstream.url, 0).await;
    answered(&app).await;
    // Time to read far more than the bound: read whole, the tail would leave the connection
    // in the pool (as the short end of the test above does).
    tokio::time::sleep(Duration::from_secs(1)).await;
    answered(&app).await;
    assert_eq!(upstream.accepted(), 2, "256 KiB after the answer were read to the body's end");
}

/// A stand-in whose body goes on after the answer's last event, a comment every 50 ms, and
/// which notes when sluice closes the connection.
async fn endless_upstream() -> (String, Arc<tokio::sync::Notify>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let closed = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&closed);
    let transcript = fixture(PLAIN);
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
    let app = app_for(&url, 2).await;
    answered(&app).await;
    let waited = tokio::time::timeout(Duration::from_secs(15), closed.notified()).await;
    assert!(waited.is_ok(), "sluice still held the connection 15 s after the answer");
}
