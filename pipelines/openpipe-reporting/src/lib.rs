//! The OpenPipe reporting filter: the inlet captures each chat request, the outlet turns the
//! finished turn into OpenPipe reports and queues them durably, and a background worker
//! delivers them. The filter never edits the conversation and never waits on the network.
//! Spec: docs/reporting.md.

mod blocks;
mod capture;
mod counters;
mod dataset;
mod delivery;
mod dpo;
mod interaction;
mod queue;
mod regeneration;
mod report;
mod request;
mod runtime;
mod shrink;
mod tasks;
mod turn;
pub mod valves;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use sluice_sdk::{
    async_trait, DynValves, FilterTargets, Pipeline, PipelineContext, PipelineError, PipelineKind, ServedCompletion,
    ValvesCell,
};
use tokio::sync::Notify;

pub use crate::counters::Counters;
pub use crate::delivery::Tuning;
use crate::runtime::Runtime;
pub use crate::valves::ReportingValves;

/// The module id, also the outbox queue's name.
pub const PIPELINE_ID: &str = "openpipe_reporting";
pub const QUEUE: &str = PIPELINE_ID;
const STRIPES: usize = 64;

pub use sluice_sdk::clock::unix_ms as now_ms;

pub struct OpenPipeReporting {
    valves: ValvesCell<ReportingValves>,
    counters: Arc<Counters>,
    tuning: Tuning,
    runtime: OnceLock<Arc<Runtime>>,
    /// Whether the last valves made the filter report, so a change is logged once.
    reporting: std::sync::atomic::AtomicBool,
}

impl Default for OpenPipeReporting {
    fn default() -> Self {
        Self::with_tuning(Tuning::default())
    }
}

fn str_at<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

impl OpenPipeReporting {
    pub fn new() -> Self {
        Self::default()
    }

    /// With other delivery timings (tests shorten backoff and probe intervals).
    pub fn with_tuning(tuning: Tuning) -> Self {
        OpenPipeReporting {
            valves: ValvesCell::default(),
            counters: Arc::new(Counters::default()),
            tuning,
            runtime: OnceLock::new(),
            reporting: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Says, once per change, whether reports are being sent. Without a key the filter is
    /// inert by design (OpenPipe is optional): information, not a warning.
    fn log_activity(&self, first: bool) {
        let valves = self.valves.get();
        let active = valves.active();
        let before = self.reporting.swap(active, std::sync::atomic::Ordering::Relaxed);
        if !first && before == active {
            return;
        }
        if active {
            tracing::info!(base_url = valves.base_url(), "openpipe_reporting: reporting to OpenPipe");
        } else if !valves.ENABLED {
            tracing::info!("openpipe_reporting: off (ENABLED = false); the filter passes requests through");
        } else {
            tracing::info!("openpipe_reporting: no OPENPIPE_API_KEY; nothing is reported until one is set");
        }
    }
}

#[async_trait]
impl Pipeline for OpenPipeReporting {
    fn id(&self) -> &str {
        PIPELINE_ID
    }

    fn name(&self) -> &str {
        "OpenPipe Reporting"
    }

    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }

    fn queues(&self) -> &[&str] {
        &[QUEUE]
    }

    /// Only to report API chats of Open WebUI before 0.10 (tasks are never streamed).
    fn observes_streams(&self) -> bool {
        let v = self.valves.get();
        v.active() && v.REPORT_API_CHATS_FROM_ANSWERS
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::new(self.valves.clone()))
    }

    fn targets(&self) -> FilterTargets {
        let v = self.valves.get();
        FilterTargets { pipelines: v.pipelines.clone(), priority: v.priority }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }

    async fn on_startup(&self, ctx: &PipelineContext) -> Result<(), PipelineError> {
        let wake = Arc::new(Notify::new());
        let rt = Arc::new(Runtime {
            store: Arc::clone(&ctx.store),
            outbox: Arc::clone(&ctx.outbox),
            wake: Arc::clone(&wake),
            run_id: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            worker: Mutex::new(None),
            captured_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(self.valves.get().TIMEOUT_SECONDS.min(5)))
            .user_agent(concat!("sluice-openpipe-reporting/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                PipelineError::internal(format!("cannot build the HTTP client: {}", sluice_sdk::error_chain(&e)))
            })?;
        match ctx.outbox.stats(QUEUE).await {
            Ok(s) => tracing::info!(queued = s.depth, dead_letters = s.dead, "openpipe: outbox resumed"),
            Err(e) => tracing::warn!(error = %e, "openpipe: outbox stats unavailable"),
        }
        self.log_activity(true);
        let worker = delivery::Worker {
            outbox: Arc::clone(&ctx.outbox),
            store: Arc::clone(&ctx.store),
            valves: self.valves.clone(),
            http,
            wake,
            counters: Arc::clone(&self.counters),
            tuning: self.tuning,
            shutdown: ctx.shutdown.clone(),
        };
        let handle = tokio::spawn(worker.run());
        if let Ok(mut slot) = rt.worker.lock() {
            *slot = Some(handle);
        }
        let _ = self.runtime.set(rt);
        Ok(())
    }

    async fn on_valves_updated(&self) -> Result<(), PipelineError> {
        if let Some(rt) = self.runtime.get() {
            // A new key or base URL lifts an auth pause at once (§13.3).
            rt.wake.notify_one();
        }
        self.log_activity(false);
        Ok(())
    }

    async fn on_shutdown(&self) {
        let Some(rt) = self.runtime.get() else { return };
        rt.wake.notify_one();
        let handle = rt.worker.lock().ok().and_then(|mut h| h.take());
        if let Some(mut handle) = handle {
            // Attempts in flight get a little time; what is left stays queued for the next start.
            if tokio::time::timeout(self.tuning.shutdown_wait, &mut handle).await.is_err() {
                handle.abort();
                tracing::info!("openpipe: deliveries still in flight at shutdown stay queued");
            }
        }
    }

    /// Switched off (no key, or not enabled), both hooks answer the body as it came.
    fn passes_through(&self, _hook: sluice_sdk::Hook) -> bool {
        self.runtime.get().is_none() || !self.valves.get().active()
    }

    async fn inlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return Ok(body) };
        self.keep(rt, &v, &body, user.as_ref()).await;
        Ok(body)
    }

    async fn observe_completion(&self, served: &ServedCompletion) {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return };
        if let Err(e) = self.report_task(rt, &v, served).await {
            self.counters.report_build_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "openpipe: task report not queued");
        }
    }

    /// `dataset_add` (docs/reporting.md §11.3): the reference's dataset action, asked for.
    async fn action(&self, name: &str, body: Value) -> Result<Value, PipelineError> {
        match name {
            "dataset_add" => self.dataset_add(body).await,
            other => Err(PipelineError::new(
                sluice_sdk::ErrorKind::NotFound,
                format!("openpipe_reporting has no action {other:?}; it has dataset_add"),
            )),
        }
    }

    async fn outlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let v = self.valves.get();
        let Some(rt) = self.runtime.get().filter(|_| v.active()) else { return Ok(body) };
        let (received_at, received_mono) = (now_ms(), rt.mono_ms());
        if let Err(e) = self.report_turn(rt, &v, &body, user.as_ref(), received_at, received_mono).await {
            self.counters.report_build_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ids = body
                .as_object()
                .map(|o| (str_at(o, "chat_id").unwrap_or_default(), str_at(o, "id").unwrap_or_default()));
            let (chat_id, message_id) = ids.unwrap_or_default();
            tracing::warn!(chat_id, message_id, error = %e, "openpipe: report not queued");
        }
        Ok(body)
    }
}
