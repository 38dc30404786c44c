//! Pipelines as WebAssembly components (`wit/pipeline.wit`), run in a sandbox: a fresh
//! instance per call with a memory limit and a deadline, no files, no environment, no sockets,
//! outbound HTTP only to the hosts the admin allowed, records only in the pipeline's own part
//! of sluice's store. See docs/wasm-pipelines.md.

mod answer;
mod bindings;
mod check;
mod epoch;
#[cfg(feature = "guests")]
pub mod guests;
mod host;
mod http_gate;
mod limits;
mod manifest;
mod pipeline;
mod records_gate;
mod runtime;
mod state;
mod valves;

pub use host::records_namespace;
pub use limits::Limits;
pub use manifest::{Manifest, ALLOWED_HOSTS};
pub use pipeline::WasmPipeline;
pub use runtime::{Compiled, LoadError, Runtime, RuntimeError};

/// Compiles, checks and describes a component: what `add` and `upload` accept, or why not.
pub async fn load(runtime: &std::sync::Arc<Runtime>, bytes: Vec<u8>) -> Result<WasmPipeline, LoadError> {
    let compiling = std::sync::Arc::clone(runtime);
    let compiled = tokio::task::spawn_blocking(move || compiling.compile(&bytes))
        .await
        .map_err(|e| LoadError::Invalid(format!("the compilation stopped: {}", sluice_sdk::join_failure(&e))))??;
    let manifest = runtime.describe(&compiled).await?;
    Ok(WasmPipeline::new(std::sync::Arc::clone(runtime), compiled, manifest))
}
