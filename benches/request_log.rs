//! The `log` group (`sluice-bench log`): what a request's span and log line cost by
//! themselves, without the HTTP work around them. The wrk runs show the logging's share only as
//! the difference of two runs minutes apart, which a busy host moves by more than the share
//! itself; here one process does the tracing work of many requests (the span, its polls, the
//! `handled` line, as `telemetry::trace_requests` does them) on as many threads as there are
//! cores, with the subscriber sluice installs, its stderr a pipe the driver drains. Between two
//! requests each thread does about as much other work as a small request costs sluice (a fixed
//! loop), so threads meet on the log's lock about as often as a server's workers do. Its CPU
//! (the writer's thread included) per request is printed for each level and format, and what
//! each adds to the run at `warn`, where the same loop runs and nothing is logged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use sluice::config::LogFormat;

const REQUESTS: usize = 400_000;

/// Runs [`child`] at each level and format, one process each, and prints their figures.
pub fn group() {
    let mut quiet = None;
    for (level, format) in [("warn", "text"), ("info", "text"), ("info", "json")] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["log-child", level, format])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a child");
        let mut stderr = child.stderr.take().unwrap();
        let drained = std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()).unwrap_or(0));
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let _ = child.wait();
        let bytes = drained.join().unwrap_or(0);
        let cpu: f64 = line.split_whitespace().find_map(|f| f.strip_prefix("cpu_us_per_req=")?.parse().ok()).unwrap();
        let added = cpu - *quiet.get_or_insert(cpu);
        println!(
            "{} log_bytes_per_req={:.0} added_cpu_us_per_req={added:.2}",
            line.trim(),
            bytes as f64 / REQUESTS as f64
        );
    }
}

/// The child: sluice's subscriber at `level` in `format`, then [`REQUESTS`] requests' tracing.
pub fn child(level: &str, format: &str) {
    let log_format = if format == "json" { LogFormat::Json } else { LogFormat::Text };
    let guard = sluice::telemetry::init(level, log_format);
    let threads = std::thread::available_parallelism().map(usize::from).unwrap_or(2);
    let per_thread = REQUESTS / threads;
    let pid = std::process::id();
    let (cpu_before, started) = (super::wrk::cpu_secs(pid), Instant::now());
    let workers: Vec<_> = (0..threads).map(|t| std::thread::spawn(move || requests(t, per_thread))).collect();
    for worker in workers {
        worker.join().unwrap();
    }
    // Dropping the guard writes what is still waiting: its work is counted.
    drop(guard);
    let (cpu, wall) = (super::wrk::cpu_secs(pid) - cpu_before, started.elapsed().as_secs_f64());
    let n = (per_thread * threads) as f64;
    println!(
        "bench=request_log level={level} format={format} threads={threads} requests={n} cpu_us_per_req={:.2} wall_us_per_req={:.2}",
        cpu * 1e6 / n,
        wall * 1e6 * threads as f64 / n
    );
}

/// What `trace_requests` asks of tracing for each request: its span, entered on each poll of
/// the handler (twice here), and the line when the head is ready.
fn requests(thread: usize, n: usize) {
    let mut id = String::with_capacity(32);
    for i in 0..n {
        id.clear();
        std::fmt::Write::write_fmt(&mut id, format_args!("{thread:016x}{i:016x}")).unwrap();
        let span = tracing::info_span!("request", request_id = %id, method = %actix_web::http::Method::POST);
        let instrumented = span.clone();
        for _ in 0..2 {
            let _entered = instrumented.enter();
            std::hint::black_box(&id);
        }
        drop(instrumented);
        let (route, path, status, elapsed_ms) =
            ("/{pipeline_id}/filter/inlet", "/bench_pipe/filter/inlet", 200u16, 0.084);
        span.in_scope(|| tracing::info!(route = %route, path = %path, status, elapsed_ms, "handled"));
        other_work(i);
    }
}

/// About 10 µs of arithmetic the compiler cannot drop: a request's own work, without memory
/// traffic that would disturb the logging's.
fn other_work(seed: usize) {
    let mut x = seed as u64;
    for step in 0..4_000u64 {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(step));
    }
    std::hint::black_box(x);
}
