use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Options};

fn slow() -> serde_json::Value {
    json!({"model": "scripted_pipe", "stream": true, "messages": [{"role": "user", "content": "slow"}]})
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_pipe() {
    let app = spawn_app_with(Options { keepalive_secs: 1, ..Default::default() }).await.unwrap();
    let res = app.post_streaming("/chat/completions", &slow()).await;
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("tick0"));
    let cancelled = app.probe.cancelled.notified();
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), cancelled).await.expect("the pipe saw the client leave");
    assert_eq!(app.probe.cancellations.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn silent_pipes_get_keepalive_comments() {
    let app = spawn_app_with(Options { keepalive_secs: 1, ..Default::default() }).await.unwrap();
    let body = json!({"model": "scripted_pipe", "stream": true, "messages": [{"role": "user", "content": "pause"}]});
    let text = app.post_json("/chat/completions", &body).await.text().await.unwrap();
    assert!(text.starts_with(": ping\n\n: ping\n\ndata: "), "{text}");
    assert!(text.contains("late") && text.ends_with("data: [DONE]\n\n"), "{text}");
}

#[tokio::test]
async fn shutdown_lets_streams_run_for_the_grace_period_then_ends_them_with_an_error() {
    let app = spawn_app_with(Options { grace_secs: Some(1), ..Default::default() }).await.unwrap();
    let res = app.post_streaming("/chat/completions", &slow()).await;
    let mut body = res.bytes_stream();
    let mut text = String::from_utf8_lossy(&body.next().await.unwrap().unwrap()).into_owned();
    app.shutdown.draining.cancel();
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        text
    })
    .await
    .expect("the stream ended after the grace period");
    assert!(rest.contains("tick1"), "streams keep going while draining: {rest}");
    assert!(rest.contains("sluice is shutting down"), "{rest}");
    assert!(rest.ends_with("data: [DONE]\n\n"), "{rest}");
    // New connections are refused once draining.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(app.client.get(app.url("/")).send().await.is_err());
}

#[tokio::test]
async fn many_streams_at_once_all_complete() {
    let app = spawn_app().await;
    let body = json!({"model": "scripted_pipe", "stream": true, "messages": [{"role": "user", "content": "hello"}]});
    let requests = (0..50).map(|_| async { app.post_json("/chat/completions", &body).await.text().await.unwrap() });
    for text in futures_util::future::join_all(requests).await {
        assert!(text.contains("Hello") && text.ends_with("data: [DONE]\n\n"));
    }
}
