//! One integration binary: the app on port 0 with scripted pipelines registered only here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;
mod pipelines;
mod replicas;
mod resources;
mod secrets;
mod security;

mod abandoned;
mod auth;
mod bad_input;
mod binary;
mod chat;
mod cli;
mod cli_outside;
mod crash;
mod disk;
mod example_pipeline;
mod fault_leaks;
mod filter;
mod fuzz;
mod manifold;
mod manifold_files;
mod manifold_switches;
mod models;
mod openai_clients;
mod openpipe;
mod openpipe_mock;
mod operator_logs;
mod panics;
mod route_table;
mod store_contract;
mod streaming;
mod upstream_connections;
mod upstream_faults;
mod valves;
mod wasm;
