//! `GET /metrics` in the Prometheus text format: requests by route and status, latency
//! histograms, open streams, pipe errors, the durable queues, and each pipeline's own counters.
//! Hand-rolled (a few maps behind a mutex each) because the set is small and fixed; label
//! values are escaped as the exposition format requires.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_sdk::{ErrorKind, QueueStats};

use crate::store::StoreHealth;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

/// What one route pattern saw.
#[derive(Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// By route pattern: one lock per request, and the key is allocated only for a new route.
    routes: Mutex<BTreeMap<String, RouteStats>>,
    open_streams: AtomicI64,
    pipe_errors: Mutex<BTreeMap<(String, &'static str, &'static str), u64>>,
}

/// Where a pipe's error happened: before the HTTP status was sent, or inside the stream.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    BeforeStream,
    InStream,
}

/// Counts one open stream for as long as it lives.
pub struct OpenStream(Arc<Metrics>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

impl Metrics {
    pub fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        let Ok(mut routes) = self.routes.lock() else { return };
        let stats = match routes.get_mut(route) {
            Some(stats) => stats,
            None => routes.entry(route.to_string()).or_default(),
        };
        *stats.by_status.entry(status).or_default() += 1;
        stats.latency.observe(elapsed.as_secs_f64());
    }

    pub fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.open_streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(self))
    }

    pub fn pipe_error(&self, pipeline: &str, stage: Stage, kind: ErrorKind) {
        let stage = match stage {
            Stage::BeforeStream => "before_stream",
            Stage::InStream => "in_stream",
        };
        if let Ok(mut m) = self.pipe_errors.lock() {
            *m.entry((pipeline.to_string(), stage, kind.as_str())).or_default() += 1;
        }
    }

    /// The whole exposition. `queues` and `pipelines` are read by the caller at scrape time.
    pub fn render(
        &self,
        queues: &[QueueStats],
        now_ms: u64,
        pipelines: &[(String, Vec<(&'static str, u64)>)],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP sluice_build_info The running version.\n# TYPE sluice_build_info gauge");
        let _ = writeln!(out, "sluice_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        header(&mut out, "sluice_http_requests_total", "counter", "Requests by route pattern and status.");
        let guard = self.routes.lock();
        let routes: Vec<(String, &RouteStats)> = match &guard {
            Ok(m) => m.iter().map(|(route, stats)| (escape(route), stats)).collect(),
            Err(_) => Vec::new(),
        };
        for (route, stats) in &routes {
            for (status, n) in &stats.by_status {
                let _ = writeln!(out, "sluice_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
            }
        }
        header(
            &mut out,
            "sluice_http_request_duration_seconds",
            "histogram",
            "Time to the response head by route (for streams: time to the first byte).",
        );
        for (route, stats) in &routes {
            let h = &stats.latency;
            for (le, n) in BUCKETS.iter().zip(h.counts.iter()) {
                let _ =
                    writeln!(out, "sluice_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
            }
            let _ = writeln!(
                out,
                "sluice_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "sluice_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum);
            let _ = writeln!(out, "sluice_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        // Requests are recorded again while the rest is written.
        drop(routes);
        drop(guard);
        header(&mut out, "sluice_open_streams", "gauge", "Streamed answers in progress.");
        let _ = writeln!(out, "sluice_open_streams {}", self.open_streams.load(Ordering::Relaxed));
        header(
            &mut out,
            "sluice_pipe_errors_total",
            "counter",
            "Errors of pipes (upstream failures included) by pipeline, stage and kind.",
        );
        if let Ok(m) = self.pipe_errors.lock() {
            for ((pipeline, stage, kind), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "sluice_pipe_errors_total{{pipeline=\"{}\",stage=\"{stage}\",kind=\"{kind}\"}} {n}",
                    escape(pipeline)
                );
            }
        }
        header(&mut out, "sluice_outbox_queued", "gauge", "Entries waiting for delivery, by queue.");
        for q in queues {
            let _ = writeln!(out, "sluice_outbox_queued{{queue=\"{}\"}} {}", escape(&q.queue), q.depth);
        }
        header(&mut out, "sluice_outbox_dead_letters", "gauge", "Entries given up on and kept, by queue.");
        for q in queues {
            let _ = writeln!(out, "sluice_outbox_dead_letters{{queue=\"{}\"}} {}", escape(&q.queue), q.dead);
        }
        header(&mut out, "sluice_outbox_oldest_age_seconds", "gauge", "Age of the oldest queued entry, by queue.");
        for q in queues {
            if let Some(age) = q.oldest_age(now_ms) {
                let age = age.as_secs_f64();
                let _ = writeln!(out, "sluice_outbox_oldest_age_seconds{{queue=\"{}\"}} {age}", escape(&q.queue));
            }
        }
        header(
            &mut out,
            "sluice_pipeline_events_total",
            "counter",
            "Counters a pipeline keeps (for openpipe_reporting: captured, queued, attempts, delivered, retried, dead_lettered, ...).",
        );
        for (pipeline, counters) in pipelines {
            for (event, n) in counters {
                let _ = writeln!(
                    out,
                    "sluice_pipeline_events_total{{pipeline=\"{}\",event=\"{event}\"}} {n}",
                    escape(pipeline)
                );
            }
        }
        out
    }
}

/// The gauges read at scrape time from outside the request counters: tasks alive on the HTTP
/// worker that answers the scrape, and a shared store's reachability and in-memory hold.
pub fn render_runtime(out: &mut String, tasks: usize, store: Option<StoreHealth>) {
    header(out, "sluice_worker_tasks_alive", "gauge", "Tasks alive on the HTTP worker that answered this scrape.");
    let _ = writeln!(out, "sluice_worker_tasks_alive {tasks}");
    let Some(h) = store else { return };
    header(out, "sluice_store_up", "gauge", "Whether the shared store answered its last call.");
    let _ = writeln!(out, "sluice_store_up {}", u8::from(h.up));
    header(out, "sluice_store_held_entries", "gauge", "Reports held in memory while the shared store is unreachable.");
    let _ = writeln!(out, "sluice_store_held_entries {}", h.held_entries);
    header(out, "sluice_store_held_oldest_seconds", "gauge", "Age of the oldest report held in memory.");
    let _ = writeln!(out, "sluice_store_held_oldest_seconds {:.3}", h.held_oldest_secs);
    header(out, "sluice_store_held_dropped_total", "counter", "Reports dropped at the in-memory hold's bounds.");
    let _ = writeln!(out, "sluice_store_held_dropped_total {}", h.dropped);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_counters_histograms_and_gauges() {
        let m = Arc::new(Metrics::default());
        m.observe_request("/models", 200, Duration::from_micros(700));
        m.observe_request("/models", 200, Duration::from_millis(30));
        m.observe_request("/{id}/valves/update", 422, Duration::from_millis(2));
        let stream = m.stream_opened();
        m.pipe_error("openai_responses", Stage::BeforeStream, ErrorKind::RateLimited);
        let queues = [QueueStats {
            queue: "openpipe_reporting".into(),
            depth: 3,
            dead: 1,
            oldest_created_at_ms: Some(500),
            last_error: None,
        }];
        let text = m.render(&queues, 5_000, &[("openpipe_reporting".into(), vec![("delivered", 7)])]);
        for line in [
            "sluice_http_requests_total{route=\"/models\",status=\"200\"} 2",
            "sluice_http_requests_total{route=\"/{id}/valves/update\",status=\"422\"} 1",
            "sluice_http_request_duration_seconds_bucket{route=\"/models\",le=\"0.001\"} 1",
            "sluice_http_request_duration_seconds_bucket{route=\"/models\",le=\"0.05\"} 2",
            "sluice_http_request_duration_seconds_count{route=\"/models\"} 2",
            "sluice_open_streams 1",
            "sluice_pipe_errors_total{pipeline=\"openai_responses\",stage=\"before_stream\",kind=\"rate_limit_error\"} 1",
            "sluice_outbox_queued{queue=\"openpipe_reporting\"} 3",
            "sluice_outbox_dead_letters{queue=\"openpipe_reporting\"} 1",
            "sluice_outbox_oldest_age_seconds{queue=\"openpipe_reporting\"} 4.5",
            "sluice_pipeline_events_total{pipeline=\"openpipe_reporting\",event=\"delivered\"} 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        drop(stream);
        assert!(m.render(&[], 0, &[]).contains("sluice_open_streams 0"));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
