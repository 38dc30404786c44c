//! What a pipeline receives at start-up: shared services it must not build itself.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{KvStore, Outbox};

/// Shared services for a pipeline. Cheap to clone.
#[derive(Clone)]
pub struct PipelineContext {
    /// Durable records shared by all pipelines; namespace keys with the pipeline id.
    pub store: Arc<dyn KvStore>,
    /// Durable outgoing work (same database as `store`); queue names start with the pipeline id.
    pub outbox: Arc<dyn Outbox>,
    /// Cancelled when the server begins to shut down; background tasks stop on it.
    pub shutdown: CancellationToken,
}
