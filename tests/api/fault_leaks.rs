//! The real binary against an OpenAI stand-in that fails in every way a network and a server
//! can: no answer at all, a stall mid-stream, a connection reset, 429 storms, 5xx, malformed
//! events, an event larger than any sane one. Each must reach the user as a specific error
//! within the configured timeouts; afterwards sluice must hold no more descriptors, upstream
//! connections, open streams or memory than before.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::binary::Binary;
use crate::manifold::{fixture, payloads, OPENAI_KEY};

/// Reads one HTTP/1.1 request (headers, then the body by Content-Length); its body.
pub async fn read_request(socket: &mut TcpStream) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = socket.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        request.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&request);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if request.len() >= end + 4 + len {
                return Some(text[end + 4..].to_string());
            }
        }
    }
}

fn sse_head() -> &'static str {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\nconnection: close\r\n\r\n"
}

async fn serve(mut socket: TcpStream) {
    let Some(body) = read_request(&mut socket).await else { return };
    let fault = ["slow", "stall", "pings", "reset", "storm", "five", "garbage", "giant", "drip", "fine"]
        .into_iter()
        .find(|f| body.contains(&format!("fault:{f}")))
        .unwrap_or("fine");
    let transcript = String::from_utf8(fixture("1_plain_text.sse")).unwrap();
    let first_events: String = transcript.split_inclusive("\n\n").take(5).collect();
    let mut hold = [0u8; 1];
    match fault {
        "slow" => {
            // Accepts the request, never answers: until the peer hangs up.
            let _ = socket.read(&mut hold).await;
        }
        "stall" => {
            let _ = socket.write_all(format!("{}{first_events}", sse_head()).as_bytes()).await;
            let _ = socket.read(&mut hold).await;
        }
        "pings" => {
            // Bytes but no event: SSE comments every 200 ms, for up to 20 s.
            let _ = socket.write_all(format!("{}{first_events}", sse_head()).as_bytes()).await;
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if socket.write_all(b": ping\n\n").await.is_err() {
                    return;
                }
            }
        }
        "reset" => {
            let _ = socket.write_all(format!("{}{first_events}", sse_head()).as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // SO_LINGER 0: close sends RST instead of FIN.
            let _ = socket.set_zero_linger();
        }
        "storm" => {
            let body = r#"{"error":{"message":"Rate limit reached for gpt-4.1","type":"requests","code":"rate_limit_exceeded"}}"#;
            let _ = socket.write_all(format!("HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after-ms: 20\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
        }
        "five" => {
            let body = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}"#;
            let _ = socket.write_all(format!("HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).as_bytes()).await;
        }
        "garbage" => {
            let junk: String = (0..10).map(|i| format!("data: {{not json {i}\n\n")).collect();
            let _ = socket.write_all(format!("{}{first_events}{junk}", sse_head()).as_bytes()).await;
            let _ = socket.read(&mut hold).await;
        }
        "giant" => {
            let _ = socket
                .write_all(format!("{}{first_events}data: {{\"type\":\"x\",\"d\":\"", sse_head()).as_bytes())
                .await;
            let block = vec![b'a'; 1 << 20];
            for _ in 0..80 {
                if socket.write_all(&block).await.is_err() {
                    return;
                }
            }
        }
        "drip" => {
            // The whole answer, an event every 50 ms (about a second in all).
            let _ = socket.write_all(sse_head().as_bytes()).await;
            for event in transcript.split_inclusive("\n\n") {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if socket.write_all(event.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        _ => {
            let _ = socket.write_all(format!("{}{transcript}", sse_head()).as_bytes()).await;
        }
    }
}

/// The stand-in and the number of connections it has open right now.
async fn faulty_openai() -> (String, Arc<AtomicI64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let open = Arc::new(AtomicI64::new(0));
    let counter = Arc::clone(&open);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                serve(socket).await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, open)
}

fn openai_valves(dir: &std::path::Path, url: &str, idle_secs: u64) {
    std::fs::create_dir_all(dir.join("valves")).unwrap();
    std::fs::write(
        dir.join("valves/openai_responses.toml"),
        format!("BASE_URL = \"{url}/v1\"\nFETCH_MODELS = false\nSTREAM_IDLE_TIMEOUT_S = {idle_secs}\nMAX_RETRIES = 2\nSHOW_USAGE_COST = false\n"),
    )
    .unwrap();
}

async fn ask(server: &Binary, fault: &str, stream: bool) -> (u16, String, Duration) {
    let started = Instant::now();
    let body = json!({"model": "openai_responses.gpt-4.1", "stream": stream,
        "messages": [{"role": "user", "content": format!("fault:{fault}")}], "user": {"id": "u1"}});
    let res = server.post("/chat/completions", body).await;
    let status = res.status().as_u16();
    let text = tokio::time::timeout(Duration::from_secs(20), res.text()).await.expect("the answer ends").unwrap();
    (status, text, started.elapsed())
}

/// The error a streamed answer ended with.
fn stream_error(text: &str) -> Value {
    let (got, _, done) = payloads(text);
    assert!(done, "no [DONE]: {text}");
    got.last().and_then(|c| c.get("error")).cloned().unwrap_or_else(|| panic!("no error event: {text}"))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test]
async fn every_upstream_fault_is_a_specific_error_and_leaks_nothing() {
    let (url, upstream_open) = faulty_openai().await;
    let dir = tempfile::tempdir().unwrap();
    openai_valves(dir.path(), &url, 1);
    // One HTTP worker, so the task gauge of /metrics counts every task of the server.
    let server =
        Binary::start(dir.path(), &[("OPENAI_API_KEY", OPENAI_KEY.to_string()), ("SLUICE_WORKERS", "1".into())]).await;

    // Warm up (HTTP client, store, thread pools), then take the baseline.
    for _ in 0..3 {
        let (status, text, _) = ask(&server, "fine", true).await;
        assert_eq!(status, 200, "{text}");
        assert!(payloads(&text).2);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fds_before, rss_before) = (server.open_fds(), server.memory_kb("VmRSS"));
    let tasks_before = metric(&server.get("/metrics").await.text().await.unwrap(), "sluice_worker_tasks_alive");

    for round in 0..2 {
        // No answer at all: the idle bound covers the wait for the status line; retried twice.
        let (status, text, took) = ask(&server, "slow", true).await;
        assert_eq!(status, 504, "{text}");
        assert!(text.contains("OpenAI did not answer within 1 s") && !text.contains("127.0.0.1"), "{text}");
        assert!(took < Duration::from_secs(8), "{took:?}");

        let (status, text, took) = ask(&server, "stall", true).await;
        assert_eq!(status, 200);
        let error = stream_error(&text);
        assert!(error["message"].as_str().unwrap().contains("no event for 1 s"), "{text}");
        assert!(took < Duration::from_secs(4), "{took:?}");

        // Comments are bytes, not events: they held the answer open for as long as they came
        // (found by a red team).
        let (status, text, took) = ask(&server, "pings", true).await;
        assert_eq!(status, 200);
        assert!(stream_error(&text)["message"].as_str().unwrap().contains("no event for 1 s"), "{text}");
        assert!(took < Duration::from_secs(8), "{took:?}");

        let (_, text, _) = ask(&server, "reset", true).await;
        let message = stream_error(&text)["message"].as_str().unwrap().to_string();
        assert!(message.contains("connection broke") || message.contains("ended unexpectedly"), "{message}");

        let (_, text, _) = ask(&server, "garbage", true).await;
        assert_eq!(stream_error(&text)["message"], json!("OpenAI: the event stream is malformed"), "{text}");

        // 80 MB of one event: on a loaded machine it takes sluice more than the idle second to
        // read up to the size limit, and the idle bound counts from the last event. Room for it
        // here, then the one second again.
        let idle = |secs: u64| server.post("/openai_responses/valves/update", json!({"STREAM_IDLE_TIMEOUT_S": secs}));
        assert_eq!(idle(30).await.status(), 200);
        let (_, text, _) = ask(&server, "giant", true).await;
        assert_eq!(stream_error(&text)["message"], json!("OpenAI: an event exceeded the size limit"), "{text}");
        assert_eq!(idle(1).await.status(), 200);

        let (status, text, _) = ask(&server, "five", false).await;
        assert_eq!(status, 502, "{text}");
        assert!(text.contains("The server had an error"), "{text}");

        // A storm of 429s: each retried twice after the asked 20 ms, then the user gets the 429.
        let storm = (0..20).map(|_| ask(&server, "storm", round == 0));
        for (status, text, took) in futures_util::future::join_all(storm).await {
            assert_eq!(status, 429, "{text}");
            assert!(text.contains("Rate limit reached"), "{text}");
            assert!(took < Duration::from_secs(5), "{took:?}");
        }

        // Fifty streams stalled at once, then all abandoned by their clients.
        let stalled = (0..50).map(|_| {
            let client = reqwest::Client::new();
            let url = format!("{}/chat/completions", server.base);
            async move {
                let body = json!({"model": "openai_responses.gpt-4.1", "stream": true, "messages": [{"role": "user", "content": "fault:stall"}]});
                client.post(url).bearer_auth(crate::helpers::KEY).json(&body).send().await.unwrap()
            }
        });
        let held = futures_util::future::join_all(stalled).await;
        // While they are open the gauges see them (so the checks below can fail).
        let metrics = server.get("/metrics").await.text().await.unwrap();
        assert_eq!(metric(&metrics, "sluice_open_streams"), 50.0);
        assert!(metric(&metrics, "sluice_worker_tasks_alive") >= tasks_before + 50.0, "{metrics}");
        drop(held);
    }

    // Everything above has ended: the descriptors, upstream connections and streams are back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut fds, mut open, mut streams, mut tasks);
    loop {
        fds = server.open_fds();
        open = upstream_open.load(Ordering::SeqCst);
        let metrics = server.get("/metrics").await.text().await.unwrap();
        streams = metric(&metrics, "sluice_open_streams");
        tasks = metric(&metrics, "sluice_worker_tasks_alive");
        if (fds <= fds_before + 2 && open == 0 && streams == 0.0 && tasks <= tasks_before) || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fds <= fds_before + 2, "descriptors: {fds_before} before, {fds} after");
    assert_eq!(open, 0, "upstream connections still open");
    assert_eq!(streams, 0.0, "streams still counted open");
    assert!(tasks <= tasks_before, "tasks: {tasks_before} before, {tasks} after");
    let rss_after = server.memory_kb("VmRSS");
    // Two 64 MB events were buffered and refused; what stays is allocator slack, not the events.
    assert!(rss_after < rss_before + 24 * 1024, "RSS {rss_before} kB before, {rss_after} kB after");
    let (status, text, _) = ask(&server, "fine", true).await;
    assert_eq!(status, 200, "{text}");
    let log = server.kill();
    assert!(!log.contains(OPENAI_KEY), "the OpenAI key reached the log");
}

/// SIGTERM with answers in flight and reports queued: a short answer finishes, a long one ends
/// with an error line when the grace period is over, the process exits cleanly, and the queued
/// reports are still there for the next start, which sends each once.
#[tokio::test]
async fn sigterm_drains_streams_and_keeps_queued_reports() {
    const SECRET: &str = "opk-kill-test-0a1b2c3d4e5f";
    let (url, upstream_open) = faulty_openai().await;
    let openpipe = crate::openpipe_mock::MockOpenPipe::start(SECRET).await;
    openpipe.with(|s| s.down = Some(503));
    let dir = tempfile::tempdir().unwrap();
    openai_valves(dir.path(), &url, 30);
    let env = [
        ("OPENAI_API_KEY", OPENAI_KEY.to_string()),
        ("OPENPIPE_API_KEY", SECRET.to_string()),
        ("OPENPIPE_BASE_URL", openpipe.base_url()),
        ("SLUICE_SHUTDOWN_GRACE_SECS", "2".to_string()),
    ];
    let mut server = Binary::start(dir.path(), &env).await;
    for i in 0..3 {
        let user = json!({"id": "u-1", "email": "a@example.com", "name": "A", "role": "user"});
        let outlet = json!({"user": user, "body": {"model": "m", "chat_id": "c", "id": format!("m-{i}"), "messages": [
            {"id": format!("q-{i}"), "role": "user", "content": "q"}, {"id": format!("m-{i}"), "role": "assistant", "content": "a"}]}});
        assert_eq!(server.post("/openpipe_reporting/filter/outlet", outlet).await.status(), 200);
    }
    let short = tokio::spawn({
        let base = server.base.clone();
        async move { stream_text(&base, "fault:drip").await }
    });
    let long = tokio::spawn({
        let base = server.base.clone();
        async move { stream_text(&base, "fault:stall").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = Instant::now();
    server.terminate();

    let short = short.await.unwrap();
    let (got, _, done) = payloads(&short);
    assert!(done && got.iter().all(|c| c.get("error").is_none()), "the short answer was cut: {short}");
    assert!(short.contains("Bonjour") || got.len() > 3, "{short}");
    let long = long.await.unwrap();
    let error = stream_error(&long);
    assert!(error["message"].as_str().unwrap().contains("shutting down"), "{long}");
    let ended = stopped.elapsed();
    assert!(
        ended >= Duration::from_millis(1500) && ended < Duration::from_secs(5),
        "long stream ended after {ended:?}"
    );
    let code = server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "exit after SIGTERM\n{}", server.log());
    assert_eq!(upstream_open.load(Ordering::SeqCst), 0, "an upstream request outlived the process");
    assert!(openpipe.reports().is_empty());
    crate::helpers::assert_no_secret_in(&server.log());

    openpipe.with(|s| s.down = None);
    let again = Binary::start(dir.path(), &env).await;
    openpipe.wait_for_reports(3, 20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(openpipe.reports().len(), 3, "each queued report exactly once\n{}", again.kill());
}

/// A second SIGTERM does not wait for the grace period: the open answer ends with its error
/// line at once and the process exits.
#[tokio::test]
async fn a_second_signal_ends_open_answers_at_once() {
    let (url, _) = faulty_openai().await;
    let dir = tempfile::tempdir().unwrap();
    openai_valves(dir.path(), &url, 30);
    let env = [("OPENAI_API_KEY", OPENAI_KEY.to_string()), ("SLUICE_SHUTDOWN_GRACE_SECS", "60".to_string())];
    let mut server = Binary::start(dir.path(), &env).await;
    let long = tokio::spawn({
        let base = server.base.clone();
        async move { stream_text(&base, "fault:stall").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    server.terminate();
    let long = long.await.unwrap();
    assert!(stream_error(&long)["message"].as_str().unwrap().contains("shutting down"), "{long}");
    let code = server.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", server.log());
    assert!(second.elapsed() < Duration::from_secs(5), "{:?} after the second signal", second.elapsed());
}

/// A streamed answer's whole text.
async fn stream_text(base: &str, content: &str) -> String {
    let body = json!({"model": "openai_responses.gpt-4.1", "stream": true,
        "messages": [{"role": "user", "content": content}], "user": {"id": "u1"}});
    let res = reqwest::Client::new()
        .post(format!("{base}/chat/completions"))
        .bearer_auth(crate::helpers::KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), res.text()).await.expect("the stream ends").unwrap()
}
