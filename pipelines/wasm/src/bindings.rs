//! Rust bindings of `wit/pipeline.wit`, generated at build time. The WASI interfaces the
//! world imports are the ones `wasmtime-wasi` and `wasmtime-wasi-http` implement.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "sluice:pipeline/pipeline",
    imports: { default: async },
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
});

pub use sluice::pipeline::{host, types};
