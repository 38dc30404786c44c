//! `sluice-sdk`: the contract between the sluice server and its pipelines.
//!
//! A pipeline sees only what this crate exports: the [`Pipeline`] trait and its hooks, the
//! [`PipeEvent`] vocabulary a pipe streams back, typed [`Valves`], [`PipelineError`], and the
//! [`PipelineContext`] it receives at start-up. The server owns HTTP, auth, persistence and the
//! wire encoding; pipelines never build SSE strings.

pub mod backoff;
pub mod clock;
pub mod completion;
mod context;
pub mod digest;
mod error;
mod event;
#[cfg(feature = "fuzz")]
pub mod fuzz;
pub mod json_values;
pub mod marker;
pub mod message;
pub mod offloaded;
pub mod outbox;
mod pipeline;
mod request;
pub mod secret;
mod store;
pub mod valves;

pub use context::PipelineContext;
pub use error::{chain as error_chain, join_failure, ErrorKind, PipelineError};
pub use event::{FinishReason, PipeEvent, PipeStream, Status, ToolCallDelta};
pub use outbox::{Outbox, QueueStats};
pub use pipeline::{FilterTargets, Hook, Pipeline, PipelineKind, SubModel};
pub use request::{Dialect, PipeRequest, ServedCompletion};
pub use secret::Secret;
pub use store::{KvStore, StoreError};
pub use valves::{DynValves, FieldError, Valves, ValvesCell};

pub use async_trait::async_trait;
/// Re-exported so pipelines derive the schema with the same version the server reads.
pub use schemars;
pub use tokio_util::sync::CancellationToken;
