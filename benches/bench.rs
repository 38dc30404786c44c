//! `sluice-bench`: starts sluice in a child process with an in-process scripted pipe, drives
//! it over loopback and prints one machine-readable line per figure. Run on demand:
//! `cargo run --release --bin sluice-bench` (figures in docs/performance.md). Not a test:
//! nothing here asserts a speed. The served sluice logs warnings only; `BENCH_LOG_LEVEL=info`
//! measures the default, a line per request (send its stderr to a pipe, as a container's is);
//! `BENCH_LOG_FORMAT=json` logs JSON lines instead of text.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice::config::Settings;
use sluice::startup::Application;
use sluice::valves::ValvesEnv;
use sluice_sdk::{async_trait, PipeEvent, PipeRequest, PipeStream, Pipeline, PipelineError, PipelineKind};

const KEY: &str = "bench-key";

/// Streams `n` short text chunks as fast as the consumer takes them.
struct BenchPipe;

#[async_trait]
impl Pipeline for BenchPipe {
    fn id(&self) -> &str {
        "bench_pipe"
    }
    fn name(&self) -> &str {
        "Bench Pipe"
    }
    fn kind(&self) -> PipelineKind {
        PipelineKind::Pipe
    }
    // Its hooks change nothing, as the reporting filter's do when it is switched off.
    fn passes_through(&self, _hook: sluice_sdk::Hook) -> bool {
        true
    }
    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        let n = request.body.get("chunks").and_then(Value::as_u64).unwrap_or(200);
        match request.body.get("interval_ms").and_then(Value::as_u64) {
            // A long answer: one chunk per interval, like a model that thinks between tokens.
            Some(ms) => Ok(futures_util::stream::unfold(0, move |i| async move {
                if i == n {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some((PipeEvent::text(format!("token {i} ")), i + 1))
            })
            .boxed()),
            None => Ok(futures_util::stream::iter((0..n).map(|i| PipeEvent::text(format!("token {i} ")))).boxed()),
        }
    }
}

mod actix_floor;
mod many_answers;
mod raw_http;
mod request_log;
mod wasm;
mod wrk;

use raw_http::{start_canned_server, start_floor, start_mock_upstream, MOCK_DELTAS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve();
    } else if args.get(1).map(String::as_str) == Some("floor") {
        floor(&args[2]);
    } else if args.get(1).map(String::as_str) == Some("actix-floor") {
        actix_floor::serve(&args[2], args.get(3).map(String::as_str) == Some("logged"));
    } else if args.get(1).map(String::as_str) == Some("upstream") {
        upstream();
    } else if args.get(1).map(String::as_str) == Some("relay") {
        relay(&args[2]);
    } else if args.get(1).map(String::as_str) == Some("log-child") {
        request_log::child(&args[2], &args[3]);
    } else {
        drive();
    }
}

#[actix_web::main]
async fn serve() {
    // Warnings only unless asked: BENCH_LOG_LEVEL=info measures the default, a line per request.
    let log_level = std::env::var("BENCH_LOG_LEVEL").unwrap_or_else(|_| "warn".into());
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        valves_dir: dir.path().join("valves"),
        data_dir: dir.path().join("data"),
        api_key: Some(sluice_sdk::Secret::new(KEY)),
        log_level: log_level.clone(),
        store_url: std::env::var("SLUICE_STORE_URL").ok().map(sluice_sdk::Secret::new),
        workers: std::env::var("BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(0),
        log_format: match std::env::var("BENCH_LOG_FORMAT").as_deref() {
            Ok("json") => sluice::config::LogFormat::Json,
            _ => sluice::config::LogFormat::Text,
        },
        ..Settings::default()
    };
    let _log = sluice::telemetry::init(&log_level, settings.log_format);
    let app = {
        let pipelines: Vec<Arc<dyn Pipeline>> = vec![
            Arc::new(BenchPipe),
            Arc::new(sluice_openai_responses::OpenAIResponses::new()),
            Arc::new(sluice_openpipe_reporting::OpenPipeReporting::new()),
        ];
        Application::build(settings, pipelines, ValvesEnv::Process).await.unwrap()
    };
    println!("PORT {}", app.port());
    // The driver holds our stdin; when it goes away (done, killed), so do we.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    app.run_until_stopped().await.unwrap();
}

/// The floor in a process of its own, like sluice, so both pay the same cross-process costs.
#[tokio::main]
async fn floor(models_file: &str) {
    serve_as_child(&start_floor(std::fs::read(models_file).unwrap()).await).await;
}

/// The Responses API stand-in in a process of its own: a direct call to it then crosses a
/// process boundary as a call through sluice does, so "added" is sluice's own share.
#[tokio::main]
async fn upstream() {
    serve_as_child(&start_mock_upstream().await).await;
}

/// The floor of a paced answer ([`raw_http::start_relay`]) in a process of its own.
#[tokio::main]
async fn relay(upstream: &str) {
    serve_as_child(&raw_http::start_relay(upstream.to_string()).await).await;
}

/// Tells the driver the port ([`start_child`] reads it), then serves until the driver closes
/// our stdin.
async fn serve_as_child(url: &str) {
    println!("PORT {}", url.rsplit(':').next().unwrap());
    let _ = tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink())).await;
}

/// Starts `sluice-bench <args>` and reads the `PORT n` line it prints first.
fn start_child(args: &[&str], env: &[(&str, String)]) -> (std::process::Child, u16) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    (child, port)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn drive() {
    let started = Instant::now();
    let (mut upstream_child, upstream_port) = start_child(&["upstream"], &[]);
    let mock_url = format!("http://127.0.0.1:{upstream_port}");
    let ok = r#"{"status":"ok"}"#;
    let (openpipe_url, reports_served) = start_canned_server(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ok}",
        ok.len()
    ))
    .await;
    // BENCH_STORE_URL=postgres://...: sluice keeps its state there instead of the embedded file.
    let store: Vec<(&str, String)> =
        std::env::var("BENCH_STORE_URL").map(|u| vec![("SLUICE_STORE_URL", u)]).unwrap_or_default();
    println!("bench=store kind={}", if store.is_empty() { "sqlite" } else { "postgres" });
    let mut env = store;
    env.extend([
        ("SLUICE_VALVES__OPENAI_RESPONSES__BASE_URL", format!("{mock_url}/v1")),
        ("SLUICE_VALVES__OPENAI_RESPONSES__API_KEY", "sk-bench".into()),
        ("SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS", "false".into()),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__OPENPIPE_API_KEY", "opk-bench".into()),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__OPENPIPE_BASE_URL", format!("{openpipe_url}/api/v1")),
    ]);
    let (mut child, port) = start_child(&["serve"], &env);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    println!("bench=cold_start ms={:.1}", started.elapsed().as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    println!("bench=rss_idle kb={}", rss_kb(child.id()));

    let inlet = |messages: usize, size: usize| {
        let list: Vec<Value> = (0..messages)
            .map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": "x".repeat(size)}))
            .collect();
        Arc::new(serde_json::to_vec(&json!({"body": {"model": "bench_pipe", "stream": true, "messages": list, "metadata": {"chat_id": "c", "message_id": "m"}}, "user": {"id": "u", "email": "e", "name": "n", "role": "user"}})).unwrap())
    };
    let small = inlet(8, 200);
    let large = inlet(200, 950);
    println!("bench=payload name=inlet_2kb bytes={}", small.len());
    println!("bench=payload name=inlet_200kb bytes={}", large.len());

    let models = client.get(format!("{base}/v1/models")).bearer_auth(KEY).send().await.unwrap().bytes().await.unwrap();
    let models_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(models_file.path(), &models).unwrap();
    let (mut floor_child, floor_port) = start_child(&["floor", models_file.path().to_str().unwrap()], &[]);
    let floor = format!("http://127.0.0.1:{floor_port}");
    // `sluice-bench requests streams manifold openpipe long`: only those groups (default: all).
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wants = |group: &str| only.is_empty() || only.iter().any(|o| o == group);
    for (name, path, body) in [
        ("models", "/v1/models", None),
        ("inlet_2kb", "/bench_pipe/filter/inlet", Some(small.clone())),
        ("inlet_200kb", "/bench_pipe/filter/inlet", Some(large.clone())),
    ] {
        for conns in [1usize, 32].into_iter().filter(|_| wants("requests")) {
            let ours = run(&client, &format!("{base}{path}"), body.clone(), name, conns).await;
            let least = run(&client, &format!("{floor}{path}"), body.clone(), &format!("floor_{name}"), conns).await;
            println!(
                "bench=vs_floor name={name} conns={conns} sluice_rps={ours:.0} floor_rps={least:.0} floor_over_sluice={:.2}",
                least / ours
            );
        }
    }
    if wants("wrk") {
        // The stack's own floors: actix-web alone, and with tracing's request span and line.
        let models_path = models_file.path().to_str().unwrap();
        let (actix, actix_port) = start_child(&["actix-floor", models_path], &[]);
        let (logged, logged_port) = start_child(&["actix-floor", models_path, "logged"], &[]);
        let actix_url = format!("http://127.0.0.1:{actix_port}");
        let logged_url = format!("http://127.0.0.1:{logged_port}");
        let servers = [
            ("sluice", base.as_str(), child.id()),
            ("floor", floor.as_str(), floor_child.id()),
            ("actix", actix_url.as_str(), actix.id()),
            ("actix_logged", logged_url.as_str(), logged.id()),
        ];
        wrk::group(&servers, KEY, &small, &large);
        for mut c in [actix, logged] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if wants("log") {
        request_log::group();
    }
    for conns in [1usize, 16].into_iter().filter(|_| wants("streams")) {
        stream(&client, &base, conns).await;
    }
    // The raw relay (raw_http::start_relay): the floor of a streamed answer through a proxy.
    let (mut relay_child, relay_port) = start_child(&["relay", &mock_url], &[]);
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    for conns in [1usize, 16].into_iter().filter(|_| wants("manifold")) {
        manifold(&client, (&base, &relay_url, &mock_url), conns).await;
    }
    for conns in [1usize, 16].into_iter().filter(|_| wants("openpipe")) {
        openpipe(&client, &base, &reports_served, conns).await;
    }
    let _ = floor_child.kill();
    let _ = floor_child.wait();
    println!("bench=rss_after_load kb={}", rss_kb(child.id()));
    for n in [1_000usize, 10_000].into_iter().filter(|_| wants("long")) {
        many_answers::long_streams(port, child.id(), n).await;
    }
    println!("bench=rss_after_long_streams kb={}", rss_kb(child.id()));
    if wants("wasm") {
        wasm::group().await;
    }
    // BENCH_PACED=1000,5000: other numbers of concurrent paced answers.
    let paced: Vec<usize> = std::env::var("BENCH_PACED")
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![200, 1_000]);
    for n in paced.into_iter().filter(|_| wants("paced")) {
        many_answers::paced_manifold((port, child.id()), (relay_port, relay_child.id()), n).await;
    }
    let _ = relay_child.kill();
    let _ = relay_child.wait();
    let _ = upstream_child.kill();
    let _ = upstream_child.wait();
    let _ = child.kill();
    let _ = child.wait();
}

const WINDOW: Duration = Duration::from_secs(3);

/// `conns` clients, each running `op(client, iteration)` back to back for [`WINDOW`]; every
/// op times itself (so set-up it does first is not counted). The durations, sorted.
async fn timed_load<F, Fut>(conns: usize, op: F) -> Vec<Duration>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let deadline = Instant::now() + WINDOW;
    let tasks = (0..conns).map(|c| {
        let op = op.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                latencies.push(op(c, i).await);
                i += 1;
            }
            latencies
        })
    });
    let mut all: Vec<Duration> =
        futures_util::future::join_all(tasks).await.into_iter().flat_map(Result::unwrap).collect();
    all.sort();
    all
}

/// Requests per second of `url` under `conns` back-to-back clients; prints the line.
async fn run(client: &reqwest::Client, url: &str, body: Option<Arc<Vec<u8>>>, name: &str, conns: usize) -> f64 {
    let (client, url) = (client.clone(), url.to_string());
    let all = timed_load(conns, move |_, _| {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let t = Instant::now();
            let req = match &body {
                Some(b) => client.post(&url).header("content-type", "application/json").body(b.as_ref().clone()),
                None => client.get(&url),
            };
            let res = req.bearer_auth(KEY).send().await.unwrap();
            assert!(res.status().is_success());
            res.bytes().await.unwrap();
            t.elapsed()
        }
    })
    .await;
    let rps = all.len() as f64 / WINDOW.as_secs_f64();
    println!(
        "bench={name} conns={conns} requests={} rps={rps:.0} p50_ms={:.3} p99_ms={:.3}",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    rps
}

async fn stream(client: &reqwest::Client, base: &str, conns: usize) {
    let url = format!("{base}/v1/chat/completions");
    let body = serde_json::to_vec(
        &json!({"model": "bench_pipe", "stream": true, "chunks": 200, "messages": [{"role": "user", "content": "go"}]}),
    )
    .unwrap();
    let (ttfb, total, chunks) = timed_streams(client, &url, body, conns).await;
    println!(
        "bench=stream_200_chunks conns={conns} streams={} ttfb_p50_ms={:.3} ttfb_p99_ms={:.3} total_p50_ms={:.3} total_p99_ms={:.3} chunks_per_s={:.0}",
        total.len(),
        percentile(&ttfb, 0.5),
        percentile(&ttfb, 0.99),
        percentile(&total, 0.5),
        percentile(&total, 0.99),
        chunks as f64 / WINDOW.as_secs_f64()
    );
}

/// Reporting filter: an inlet + outlet pair per turn (each one durable write), then how long
/// the worker takes to deliver everything the load queued.
async fn openpipe(client: &reqwest::Client, base: &str, served: &std::sync::atomic::AtomicUsize, conns: usize) {
    use std::sync::atomic::Ordering;
    let before = served.load(Ordering::Relaxed);
    let (client, base) = (client.clone(), base.to_string());
    let all = timed_load(conns, move |c, i| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let user = json!({"id": "u", "email": "e", "name": "n", "role": "user"});
            let (chat, message) = (format!("c-{conns}-{c}"), format!("m-{conns}-{c}-{i}"));
            let question = json!([{"role": "user", "content": "x".repeat(500)}]);
            let inlet = json!({"user": user, "body": {"model": "m", "stream": true, "messages": question,
                "metadata": {"chat_id": chat, "message_id": message, "session_id": "s"}}});
            let outlet = json!({"user": user, "body": {"model": "m", "chat_id": chat, "id": message, "messages": [
                {"id": format!("{message}-q"), "role": "user", "content": "x".repeat(500)},
                {"id": message, "role": "assistant", "content": "y".repeat(1000),
                 "usage": {"prompt_tokens": 100, "completion_tokens": 200, "total_tokens": 300}}]}});
            let t = Instant::now();
            for (hook, body) in [("inlet", &inlet), ("outlet", &outlet)] {
                let res = client
                    .post(format!("{base}/openpipe_reporting/filter/{hook}"))
                    .bearer_auth(KEY)
                    .json(body)
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success());
                res.bytes().await.unwrap();
            }
            t.elapsed()
        }
    })
    .await;
    let load_end = Instant::now();
    let delivered_during_load = served.load(Ordering::Relaxed) - before;
    while served.load(Ordering::Relaxed) - before < all.len() && load_end.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = load_end.elapsed();
    println!(
        "bench=openpipe_turn conns={conns} turns={} turns_per_s={:.0} pair_p50_ms={:.3} pair_p99_ms={:.3} delivered_during_load={} drain_ms={:.0} delivered={}",
        all.len(),
        all.len() as f64 / WINDOW.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        delivered_during_load,
        drain.as_secs_f64() * 1000.0,
        served.load(Ordering::Relaxed) - before,
    );
}

/// Time to first byte and total time, direct to the mock, through the raw relay (what any
/// proxy adds) and through the manifold. `added` is over direct; `over_relay` is sluice's own.
async fn manifold(client: &reqwest::Client, (base, relay, mock): (&str, &str, &str), conns: usize) {
    let direct_body = serde_json::to_vec(&json!({"model": "gpt-4.1", "stream": true, "input": "go"})).unwrap();
    let via_body = serde_json::to_vec(&json!({"model": "openai_responses.gpt-4.1", "messages": [{"role": "user", "content": "go"}], "user": {"id": "bench"}})).unwrap();
    let direct = timed_streams(client, &format!("{mock}/v1/responses"), direct_body, conns).await;
    let floor = timed_streams(client, &format!("{relay}/v1/chat/completions"), via_body.clone(), conns).await;
    let via = timed_streams(client, &format!("{base}/v1/chat/completions"), via_body, conns).await;
    let p = |v: &[Duration], q: f64| percentile(v, q);
    println!(
        "bench=manifold_200_deltas conns={conns} direct_ttfb_p50_ms={:.3} direct_ttfb_p99_ms={:.3} relay_ttfb_p50_ms={:.3} relay_ttfb_p99_ms={:.3} via_ttfb_p50_ms={:.3} via_ttfb_p90_ms={:.3} via_ttfb_p99_ms={:.3} added_ttfb_p50_ms={:.3} added_ttfb_p99_ms={:.3} over_relay_ttfb_p50_ms={:.3} over_relay_ttfb_p99_ms={:.3} direct_total_p50_ms={:.3} relay_total_p50_ms={:.3} via_total_p50_ms={:.3} via_total_p99_ms={:.3} added_total_p50_ms={:.3} added_us_per_delta_p50={:.2} streams={}",
        p(&direct.0, 0.5), p(&direct.0, 0.99), p(&floor.0, 0.5), p(&floor.0, 0.99),
        p(&via.0, 0.5), p(&via.0, 0.9), p(&via.0, 0.99),
        p(&via.0, 0.5) - p(&direct.0, 0.5), p(&via.0, 0.99) - p(&direct.0, 0.99),
        p(&via.0, 0.5) - p(&floor.0, 0.5), p(&via.0, 0.99) - p(&floor.0, 0.99),
        p(&direct.1, 0.5), p(&floor.1, 0.5), p(&via.1, 0.5), p(&via.1, 0.99), p(&via.1, 0.5) - p(&direct.1, 0.5),
        (p(&via.1, 0.5) - p(&direct.1, 0.5)) * 1000.0 / MOCK_DELTAS as f64,
        via.1.len(),
    );
}

/// `conns` clients streaming answers back to back for [`WINDOW`]: time to first byte and
/// total time of each (sorted), and how many `data:` lines arrived in all.
async fn timed_streams(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    conns: usize,
) -> (Vec<Duration>, Vec<Duration>, u64) {
    let deadline = Instant::now() + WINDOW;
    let tasks = (0..conns).map(|_| {
        let (client, url, body) = (client.clone(), url.to_string(), body.clone());
        tokio::spawn(async move {
            let (mut ttfb, mut total, mut chunks) = (Vec::new(), Vec::new(), 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .bearer_auth(KEY)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                let mut s = res.bytes_stream();
                let mut first = true;
                let mut text = Vec::new();
                while let Some(part) = s.next().await {
                    if first {
                        ttfb.push(t.elapsed());
                        first = false;
                    }
                    text.extend_from_slice(&part.unwrap());
                }
                total.push(t.elapsed());
                chunks += text.windows(6).filter(|w| w == b"data: ").count() as u64;
            }
            (ttfb, total, chunks)
        })
    });
    let (mut ttfb, mut total, mut chunks) = (Vec::new(), Vec::new(), 0);
    for r in futures_util::future::join_all(tasks).await {
        let (a, b, c) = r.unwrap();
        ttfb.extend(a);
        total.extend(b);
        chunks += c;
    }
    ttfb.sort();
    total.sort();
    (ttfb, total, chunks)
}
