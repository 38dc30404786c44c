//! Many concurrent, long answers on raw connections (a reqwest client per answer would weigh
//! more than sluice): the peak RSS of sluice while they run, the stretch (how much longer
//! than its pace each answer took) and, for the manifold, sluice's CPU per upstream event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::raw_http::{paced_events, FIRST_TOKEN, FIRST_TOKEN_DUE, PACE, PACED_MARKER};
use crate::wrk::cpu_secs;
use crate::{percentile, rss_kb, KEY};

/// What one batch of answers showed.
struct Run {
    took: Vec<Duration>,
    /// Until the answer's first token arrived, sorted: the upstream sends it [`FIRST_TOKEN_DUE`]
    /// after the request reached it, so what is over that was made at the start (the server
    /// taking the request and opening the upstream call).
    first_token: Vec<Duration>,
    /// From the first token to the end marker, sorted: the stretch made along the answer.
    after_first_token: Vec<Duration>,
    rss_before_kb: u64,
    rss_peak_kb: u64,
}

/// Opens `n` answers to `POST /v1/chat/completions` with `body` over about a second, reads
/// each to `data: [DONE]`; how long each took (sorted; failed answers are left out).
async fn answers(port: u16, pid: u32, body: &str, n: usize) -> Run {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = Arc::new(format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    ));
    let before = rss_kb(pid);
    let peak = Arc::new(AtomicU64::new(before));
    let sampling = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let batch = (n / 20).max(1);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && i % batch == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            socket.write_all(request.as_bytes()).await.ok()?;
            let mut seen = Vec::new();
            let mut first_token = None;
            let mut buf = [0u8; 4096];
            loop {
                match tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                    Ok(Ok(k)) => {
                        // Only the tail can hold a marker that just arrived (both are at most
                        // 12 bytes): the load stays lighter than the server it measures.
                        let from = seen.len().saturating_sub(12);
                        seen.extend_from_slice(&buf[..k]);
                        if first_token.is_none() && seen[from..].windows(FIRST_TOKEN.len()).any(|w| w == FIRST_TOKEN) {
                            first_token = Some(t.elapsed());
                        }
                        if seen[from..].windows(12).any(|w| w == b"data: [DONE]") {
                            return Some((t.elapsed(), first_token));
                        }
                    }
                }
            }
            None
        }));
    }
    let (mut took, first_token): (Vec<Duration>, Vec<Option<Duration>>) =
        futures_util::future::join_all(tasks).await.into_iter().filter_map(|r| r.ok().flatten()).unzip();
    sampling.abort();
    // An answer whose first token was not seen is left out of both (counted as missing).
    let (mut first_token, mut after_first_token): (Vec<Duration>, Vec<Duration>) =
        took.iter().zip(&first_token).filter_map(|(t, f)| f.map(|f| (f, t.saturating_sub(f)))).unzip();
    took.sort();
    first_token.sort();
    after_first_token.sort();
    Run { took, first_token, after_first_token, rss_before_kb: before, rss_peak_kb: peak.load(Ordering::Relaxed) }
}

fn stretch_pct(took: &[Duration], pace: Duration, q: f64) -> f64 {
    (percentile(took, q) / pace.as_secs_f64() / 1000.0 - 1.0) * 100.0
}

/// `n` concurrent answers of the scripted pipe, 10 chunks one a second (about 10 s each).
pub async fn long_streams(port: u16, pid: u32, n: usize) {
    const LENGTH: Duration = Duration::from_secs(10);
    let body = r#"{"model":"bench_pipe","stream":true,"chunks":10,"interval_ms":1000,"messages":[{"role":"user","content":"go"}]}"#;
    let run = answers(port, pid, body, n).await;
    println!(
        "bench=long_streams n={n} completed={} rss_before_kb={} rss_peak_kb={} stretch_p50_pct={:.2} stretch_p99_pct={:.2} stretch_max_pct={:.2}",
        run.took.len(),
        run.rss_before_kb,
        run.rss_peak_kb,
        stretch_pct(&run.took, LENGTH, 0.5),
        stretch_pct(&run.took, LENGTH, 0.99),
        stretch_pct(&run.took, LENGTH, 1.0),
    );
}

/// The machine's CPU counters from /proc/stat: (idle, steal, total) in ticks.
fn machine_ticks() -> (u64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal ...; guest time is already in user.
    (get(3) + get(4), get(7), fields.iter().take(8).sum())
}

/// `n` concurrent manifold answers whose upstream events arrive paced (the stand-in writes
/// each event on its own, [`PACE`] apart, like a model producing 50 tokens a second): CPU per
/// upstream event of a raw relay (the floor) and of sluice, back to back, the stretch of each
/// answer, sluice's RSS, and how busy the machine was.
pub async fn paced_manifold(sluice: (u16, u32), relay: (u16, u32), n: usize) {
    let length = PACE * (paced_events() as u32 - 1);
    let body = format!(
        r#"{{"model":"openai_responses.gpt-4.1","stream":true,"messages":[{{"role":"user","content":"{PACED_MARKER}"}}],"user":{{"id":"bench"}}}}"#
    );
    let mut per_event = Vec::new();
    for (who, (port, pid)) in [("relay", relay), ("sluice", sluice)] {
        let (cpu_before, machine_before) = (cpu_secs(pid), machine_ticks());
        let run = answers(port, pid, &body, n).await;
        let (cpu, machine_after) = (cpu_secs(pid) - cpu_before, machine_ticks());
        let total = (machine_after.2 - machine_before.2).max(1) as f64;
        let events = run.took.len() * paced_events();
        let us = cpu * 1e6 / events.max(1) as f64;
        per_event.push(us);
        println!(
            "bench=paced_manifold n={n} server={who} completed={} deltas_per_s={:.0} events={events} cpu_s={cpu:.2} cpu_us_per_event={us:.1} stretch_p50_pct={:.2} stretch_p99_pct={:.2} stretch_max_pct={:.2} first_token_due_ms={:.0} first_token_missing={} first_token_p50_ms={:.1} first_token_p99_ms={:.1} after_first_token_p50_ms={:.1} after_first_token_p99_ms={:.1} rss_before_kb={} rss_peak_kb={} machine_idle_pct={:.0} machine_steal_pct={:.1}",
            run.took.len(),
            1.0 / PACE.as_secs_f64(),
            stretch_pct(&run.took, length, 0.5),
            stretch_pct(&run.took, length, 0.99),
            stretch_pct(&run.took, length, 1.0),
            FIRST_TOKEN_DUE.as_secs_f64() * 1000.0,
            run.took.len() - run.first_token.len(),
            percentile(&run.first_token, 0.5),
            percentile(&run.first_token, 0.99),
            percentile(&run.after_first_token, 0.5),
            percentile(&run.after_first_token, 0.99),
            run.rss_before_kb,
            run.rss_peak_kb,
            (machine_after.0 - machine_before.0) as f64 * 100.0 / total,
            (machine_after.1 - machine_before.1) as f64 * 100.0 / total,
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "bench=paced_manifold_vs_relay n={n} added_cpu_us_per_event={:.1} cpu_sluice_over_relay={:.2}",
        per_event[1] - per_event[0],
        per_event[1] / per_event[0]
    );
}
