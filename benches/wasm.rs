//! `wasm` group: what a WebAssembly pipeline costs per call, in this process (no HTTP, so the
//! figures are the sandbox's own): a 2 KB inlet through a guest written in WebAssembly text
//! against the same inlet in Rust, a fresh instance alone, and a streamed answer's cost per
//! event. BENCH_PY_FILTER=path/to/word_filter.wasm adds a Python component's inlet (built by
//! guests/python/build.sh).

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Value};
use sluice_sdk::{async_trait, PipeRequest, Pipeline, PipelineError, PipelineKind};
use sluice_wasm::{guests, Limits, Runtime, WasmPipeline};

/// The same inlet in Rust: takes the body and gives it back.
struct RustEcho;

#[async_trait]
impl Pipeline for RustEcho {
    fn id(&self) -> &str {
        "rust_echo"
    }
    fn name(&self) -> &str {
        "Rust echo"
    }
    fn kind(&self) -> PipelineKind {
        PipelineKind::Filter
    }
    async fn inlet(&self, body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        Ok(body)
    }
}

fn cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks * 1e6 / 100.0
}

/// Mean wall and CPU microseconds of `n` sequential calls of `f`, after `n / 10` to warm up.
async fn per_call<F, Fut>(n: usize, mut f: F) -> (f64, f64)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..n / 10 {
        f().await;
    }
    let (wall, cpu) = (Instant::now(), cpu_us());
    for _ in 0..n {
        f().await;
    }
    (wall.elapsed().as_secs_f64() * 1e6 / n as f64, (cpu_us() - cpu) / n as f64)
}

fn body_2kb() -> Value {
    let messages: Vec<Value> = (0..8)
        .map(|i| json!({"role": if i % 2 == 0 {"user"} else {"assistant"}, "content": "x".repeat(200)}))
        .collect();
    json!({"model": "m", "stream": true, "messages": messages, "metadata": {"chat_id": "c", "message_id": "m"}})
}

async fn load(runtime: &Arc<Runtime>, bytes: Vec<u8>) -> WasmPipeline {
    sluice_wasm::load(runtime, bytes).await.map_err(|e| e.to_string()).expect("bench guest loads")
}

pub async fn group() {
    let runtime = Runtime::new(Limits::default(), None).unwrap();
    let body = body_2kb();
    println!("bench=wasm_payload bytes={}", body.to_string().len());
    let rust = RustEcho;
    let (rust_us, rust_cpu) = per_call(20_000, || async { drop(rust.inlet(body.clone(), None).await) }).await;
    let wat = load(&runtime, guests::filter("bench_wat_filter", guests::ECHO)).await;
    let (wat_us, wat_cpu) = per_call(20_000, || async { drop(wat.inlet(body.clone(), None).await.unwrap()) }).await;
    println!(
        "bench=wasm_inlet_2kb guest=wat wasm_us={wat_us:.2} wasm_cpu_us={wat_cpu:.2} rust_us={rust_us:.2} rust_cpu_us={rust_cpu:.2} added_us={:.2}",
        wat_us - rust_us
    );
    let (inst_us, inst_cpu) = per_call(20_000, || async { wat.instantiate_only().await.unwrap() }).await;
    println!("bench=wasm_instantiate guest=wat us={inst_us:.2} cpu_us={inst_cpu:.2}");

    let events = 200_000u32;
    let ticker = load(&runtime, guests::pipe("bench_wat_pipe", events)).await;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let (wall, cpu) = (Instant::now(), cpu_us());
        let request = PipeRequest {
            model: "bench_wat_pipe".into(),
            model_id: "bench_wat_pipe".into(),
            stream: true,
            dialect: sluice_sdk::Dialect::OpenAi,
            body: serde_json::Map::new(),
            user: None,
            cancel: Default::default(),
        };
        let got = ticker.pipe(request).await.unwrap().count().await;
        assert_eq!(got, events as usize);
        samples.push((wall.elapsed().as_secs_f64() * 1e6 / f64::from(events), (cpu_us() - cpu) / f64::from(events)));
    }
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (event_us, event_cpu) = samples[samples.len() / 2];
    println!("bench=wasm_stream guest=wat events={events} us_per_event={event_us:.3} cpu_us_per_event={event_cpu:.3}");

    if let Ok(path) = std::env::var("BENCH_PY_FILTER") {
        let started = Instant::now();
        let python = load(&runtime, std::fs::read(&path).unwrap()).await;
        println!("bench=wasm_load guest=python ms={:.0}", started.elapsed().as_secs_f64() * 1000.0);
        let (py_us, py_cpu) = per_call(200, || async { drop(python.inlet(body.clone(), None).await.unwrap()) }).await;
        let (py_inst, _) = per_call(200, || async { python.instantiate_only().await.unwrap() }).await;
        println!(
            "bench=wasm_inlet_2kb guest=python wasm_us={py_us:.0} wasm_cpu_us={py_cpu:.0} instantiate_us={py_inst:.0} added_us={:.0}",
            py_us - rust_us
        );
    }
}
