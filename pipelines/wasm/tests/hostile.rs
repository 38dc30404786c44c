//! Guests written in WebAssembly text against wit/pipeline.wit, built into components here
//! (wit-component), each doing one thing a hostile or broken pipeline would: loop, allocate
//! without end, trap, answer 100 MB, answer garbage, import what sluice does not give. Each
//! must be refused or stopped with a clear error, and a good guest must work after each.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sluice_sdk::{ErrorKind, Pipeline};
use sluice_wasm::guests::{component, core, filter, ECHO};
use sluice_wasm::{Limits, LoadError, Runtime, WasmPipeline};

fn runtime() -> Arc<Runtime> {
    let limits = Limits {
        call_timeout: Duration::from_secs(1),
        memory_bytes: 160 << 20,
        output_bytes: 16 << 20,
        instances: 8,
        ..Limits::default()
    };
    Runtime::new(limits, None).unwrap()
}

async fn load(runtime: &Arc<Runtime>, bytes: Vec<u8>) -> WasmPipeline {
    match sluice_wasm::load(runtime, bytes).await {
        Ok(p) => p,
        Err(e) => panic!("not loaded: {e}"),
    }
}

fn body() -> serde_json::Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

/// The good guest answers, so the runtime survived whatever came before.
async fn still_serves(good: &WasmPipeline) {
    assert_eq!(good.inlet(body(), None).await.unwrap(), body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_guest_answers_its_hooks() {
    let runtime = runtime();
    let good = load(&runtime, filter("good", ECHO)).await;
    assert_eq!(good.id(), "good");
    assert_eq!(good.kind(), sluice_sdk::PipelineKind::Filter);
    still_serves(&good).await;
    assert_eq!(good.outlet(body(), Some(json!({"id": "u"}))).await.unwrap(), body());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_are_stopped_with_a_clear_error() {
    let runtime = runtime();
    let good = load(&runtime, filter("good", ECHO)).await;
    let cases: &[(&str, &str, ErrorKind, &str)] = &[
        ("spin", "(loop $l (br $l)) unreachable", ErrorKind::Timeout, "longer than 1 s"),
        (
            "hog",
            "(loop $l (drop (memory.grow (i32.const 256))) (br $l)) unreachable",
            ErrorKind::Internal,
            "memory limit",
        ),
        ("crash", "unreachable", ErrorKind::Internal, "failed"),
        (
            "flood",
            "(drop (memory.grow (i32.const 1600)))
             (i32.store8 (i32.const 1024) (i32.const 0))
             (i32.store (i32.const 1028) (i32.const 65536))
             (i32.store (i32.const 1032) (i32.const 104857600))
             (i32.const 1024)",
            ErrorKind::Internal,
            "at most 16777216",
        ),
        (
            "garbage",
            "(i32.store8 (i32.const 1024) (i32.const 0))
             (i32.store (i32.const 1028) (i32.const 512))
             (i32.store (i32.const 1032) (i32.const 8))
             (i32.const 1024)",
            ErrorKind::Internal,
            "no JSON object",
        ),
        (
            "liar",
            "(i32.store8 (i32.const 1024) (i32.const 0))
             (i32.store (i32.const 1028) (i32.const 2000000000))
             (i32.store (i32.const 1032) (i32.const 8))
             (i32.const 1024)",
            ErrorKind::Internal,
            "failed",
        ),
    ];
    for (id, inlet, kind, says) in cases {
        let hostile = load(&runtime, filter(id, inlet)).await;
        let started = Instant::now();
        let error = hostile.inlet(body(), None).await.expect_err(id);
        assert_eq!(error.kind, *kind, "{id}: {}", error.message);
        assert!(error.message.contains(says), "{id}: {}", error.message);
        assert!(error.message.contains(id), "{id}: the error names the pipeline: {}", error.message);
        assert!(started.elapsed() < Duration::from_secs(5), "{id} was stopped late: {:?}", started.elapsed());
        still_serves(&good).await;
    }
    let counters = good.counters();
    assert!(counters.contains(&("wasm_failures", 0)), "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_that_are_no_pipeline_are_refused_by_name() {
    let runtime = runtime();
    let forbidden = component(
        &core(r#"{"id":"sneaky","kind":"filter"}"#, &format!("(call $run) {ECHO}"), r#"(import "evil:host/shell" "run" (func $run))"#),
        Some("package evil:host;\ninterface shell { run: func(); }\nworld bad { import shell; export sluice:pipeline/guest@0.1.0; }"),
    );
    match sluice_wasm::load(&runtime, forbidden).await {
        Err(LoadError::ForbiddenImport(name)) => assert!(name.starts_with("evil:host/shell"), "{name}"),
        other => panic!("a forbidden import was not refused: {:?}", other.err()),
    }
    let core_only = wat::parse_str("(module)").unwrap();
    assert!(matches!(sluice_wasm::load(&runtime, core_only).await, Err(LoadError::Invalid(_))));
    let empty = wat::parse_str("(component)").unwrap();
    assert!(matches!(sluice_wasm::load(&runtime, empty).await, Err(LoadError::NotAPipeline)));
    assert!(matches!(sluice_wasm::load(&runtime, b"\0asm garbage".to_vec()).await, Err(LoadError::Invalid(_))));
    let bad_id = component(&core(r#"{"id":"a b","kind":"filter"}"#, ECHO, ""), None);
    match sluice_wasm::load(&runtime, bad_id).await {
        Err(LoadError::Manifest(m)) => assert!(m.contains("\"a b\""), "{m}"),
        other => panic!("a bad id was accepted: {:?}", other.err()),
    }
    let spin_describe = component(
        &core(r#"{"id":"x","kind":"filter"}"#, ECHO, "").replace(
            "(func (export \"sluice:pipeline/guest@0.1.0#describe\") (result i32)",
            "(func (export \"sluice:pipeline/guest@0.1.0#describe\") (result i32) (loop $l (br $l))",
        ),
        None,
    );
    match sluice_wasm::load(&runtime, spin_describe).await {
        Err(LoadError::Describe(m)) => assert!(m.contains("longer than"), "{m}"),
        other => panic!("a describe that never returns was accepted: {:?}", other.err()),
    }
    let big = vec![0u8; Limits::default().component_bytes + 1];
    assert!(matches!(sluice_wasm::load(&runtime, big).await, Err(LoadError::TooLarge { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_pool_wait_and_then_run() {
    let runtime = runtime();
    let good = Arc::new(load(&runtime, filter("good", ECHO)).await);
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let good = Arc::clone(&good);
            tokio::spawn(async move { good.inlet(body(), None).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), body());
    }
}

/// An answer nobody pulls (its client stopped reading) gives its instance back when its time
/// is up, and says so when it is pulled again: it held the instance for as long as the
/// connection stayed open, and with the pool taken every WebAssembly pipeline answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_reads_gives_its_instance_back_at_its_time() {
    use futures_util::StreamExt;
    let limits = Limits {
        call_timeout: Duration::from_secs(1),
        instances: 1,
        answer_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let runtime = Runtime::new(limits, None).unwrap();
    let endless = load(&runtime, sluice_wasm::guests::pipe("endless", u32::MAX)).await;
    let good = load(&runtime, filter("good", ECHO)).await;
    let request = sluice_sdk::PipeRequest {
        model: "endless".into(),
        model_id: "endless".into(),
        stream: true,
        dialect: sluice_sdk::Dialect::OpenWebUi,
        body: body().as_object().unwrap().clone(),
        user: None,
        cancel: sluice_sdk::CancellationToken::new(),
    };
    let mut answer = endless.pipe(request).await.unwrap();
    assert!(matches!(answer.next().await, Some(sluice_sdk::PipeEvent::Text(_))));
    // Not pulled past its time: the one instance is free again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    still_serves(&good).await;
    match answer.next().await {
        Some(sluice_sdk::PipeEvent::Error(e)) => assert!(e.to_string().contains("longer than allowed"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(answer.next().await.is_none());
}
