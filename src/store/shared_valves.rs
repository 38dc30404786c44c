//! Valves shared by several replicas through their common store: each pipeline's TOML text
//! with a version. Only a store that replicas share has this ([`super::Stores::shared_valves`]).

use async_trait::async_trait;
use sluice_sdk::StoreError;

#[async_trait]
pub trait SharedValves: Send + Sync + 'static {
    /// The text `pipeline_id`'s file must hold and its version, seeding it with `local` (this
    /// replica's file) when no replica has yet.
    async fn seed(&self, pipeline_id: &str, local: &str) -> Result<(String, i64), StoreError>;
    /// Shares an update accepted here; its new version.
    async fn publish(&self, pipeline_id: &str, toml: &str) -> Result<i64, StoreError>;
    /// Every pipeline's version (polled often: no text).
    async fn versions(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// One pipeline's text and version.
    async fn text(&self, pipeline_id: &str) -> Result<Option<(String, i64)>, StoreError>;
}
