//! `sluice-bench`: starts sluice in a child process with an in-process scripted pipe, drives
//! it over loopback and prints one machine-readable line per figure. Run on demand:
//! `cargo run --release --bin sluice-bench` (figures in docs/performance.md). Not a test:
//! nothing here asserts a speed.
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
    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        let n = request.body.get("chunks").and_then(Value::as_u64).unwrap_or(200);
        Ok(futures_util::stream::iter((0..n).map(|i| PipeEvent::text(format!("token {i} ")))).boxed())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve();
    } else {
        drive();
    }
}

#[actix_web::main]
async fn serve() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        valves_dir: dir.path().join("valves"),
        data_dir: dir.path().join("data"),
        api_key: Some(sluice_sdk::Secret::new(KEY)),
        log_level: "warn".into(),
        ..Settings::default()
    };
    sluice::telemetry::init("warn", settings.log_format);
    let app =
        Application::build(settings, vec![Arc::new(BenchPipe)], ValvesEnv::Map(Default::default())).await.unwrap();
    println!("PORT {}", app.port());
    app.run_until_stopped().await.unwrap();
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
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("serve")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
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

    for conns in [1usize, 32] {
        run(&client, &format!("{base}/v1/models"), None, "models", conns).await;
        run(&client, &format!("{base}/bench_pipe/filter/inlet"), Some(small.clone()), "inlet_2kb", conns).await;
    }
    for conns in [1usize, 8] {
        run(&client, &format!("{base}/bench_pipe/filter/inlet"), Some(large.clone()), "inlet_200kb", conns).await;
    }
    for conns in [1usize, 16] {
        stream(&client, &base, conns).await;
    }
    println!("bench=rss_after_load kb={}", rss_kb(child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

const WINDOW: Duration = Duration::from_secs(3);

async fn run(client: &reqwest::Client, url: &str, body: Option<Arc<Vec<u8>>>, name: &str, conns: usize) {
    let deadline = Instant::now() + WINDOW;
    let tasks = (0..conns).map(|_| {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let req = match &body {
                    Some(b) => client.post(&url).header("content-type", "application/json").body(b.as_ref().clone()),
                    None => client.get(&url),
                };
                let res = req.bearer_auth(KEY).send().await.unwrap();
                assert!(res.status().is_success());
                res.bytes().await.unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    let mut all: Vec<Duration> =
        futures_util::future::join_all(tasks).await.into_iter().flat_map(Result::unwrap).collect();
    all.sort();
    println!(
        "bench={name} conns={conns} requests={} rps={:.0} p50_ms={:.3} p99_ms={:.3}",
        all.len(),
        all.len() as f64 / WINDOW.as_secs_f64(),
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

async fn stream(client: &reqwest::Client, base: &str, conns: usize) {
    let deadline = Instant::now() + WINDOW;
    let url = format!("{base}/v1/chat/completions");
    let body = serde_json::to_vec(
        &json!({"model": "bench_pipe", "chunks": 200, "messages": [{"role": "user", "content": "go"}]}),
    )
    .unwrap();
    let tasks = (0..conns).map(|_| {
        let client = client.clone();
        let url = url.clone();
        let body = body.clone();
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
