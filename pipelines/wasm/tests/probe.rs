#![allow(clippy::unwrap_used, clippy::print_stdout)]
use sluice_sdk::Pipeline;

#[tokio::test]
async fn probe() {
    let Ok(path) = std::env::var("PROBE_COMPONENT") else { return };
    let runtime = sluice_wasm::Runtime::new(sluice_wasm::Limits::default(), Some(std::path::Path::new("/tmp/wasmcache"))).unwrap();
    let t = std::time::Instant::now();
    let p = match sluice_wasm::load(&runtime, std::fs::read(path).unwrap()).await {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    println!("loaded in {:?}: {} {:?}", t.elapsed(), p.id(), p.kind());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let out = p.inlet(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}), None).await;
        println!("inlet {:?}: {:?}", t.elapsed(), out);
    }
    let out = p.inlet(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "a forbidden word"}]}), None).await;
    println!("blocked: {:?}", out);
}
