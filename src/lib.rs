//! sluice: a compiled server for Open WebUI's Pipelines protocol.

pub mod auth;
pub mod body;
pub mod cli;
pub mod components;
pub mod config;
pub mod data_lock;
pub mod error;
pub mod id_routes;
pub mod json;
pub mod metrics;
pub mod normal_path;
pub mod offload;
pub mod private;
pub mod registry;
pub mod routes;
pub mod small_file;
pub mod sse;
pub mod startup;
pub mod store;
pub mod suggest;
pub mod telemetry;
pub mod toml_syntax;
pub mod valves;
