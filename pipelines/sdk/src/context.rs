//! What a pipeline receives at start-up: shared services it must not build itself.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// Shared services for a pipeline. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PipelineContext {
    /// One HTTP client for every pipeline, so connections are pooled across them.
    pub http: reqwest::Client,
    /// A directory this pipeline may keep files in (created by the server).
    pub data_dir: PathBuf,
    /// Cancelled when the server begins to shut down; background tasks stop on it.
    pub shutdown: CancellationToken,
}
