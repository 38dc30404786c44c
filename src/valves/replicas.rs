//! Valves shared by several replicas (PostgreSQL store). The database holds each pipeline's
//! TOML text with a version; every replica's `valves/<id>.toml` is a copy of it:
//! - at start, a replica takes the shared text (the first replica to start seeds it from its
//!   own file), then loads its files as usual, environment overrides on top ([`pull`]);
//! - a change made on a replica (an update, a reload) is shared by the [`ValvesService`];
//! - every replica polls the versions four times a second and applies a newer text like a
//!   local update ([`follow`]).
//!
//! Polling rather than LISTEN/NOTIFY: no dedicated connection to keep and re-establish, nothing
//! missed across a reconnect, and the bound (under a second) holds by construction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_sdk::{Pipeline, StoreError};
use tokio_util::sync::CancellationToken;

use super::{file, ValvesEntry, ValvesEnv, ValvesService};
use crate::store::SharedValves;

/// A version query (a few bytes per pipeline) four times a second: under a second to every
/// replica with room for a slow apply.
const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("shared valves of {pipeline}: {source}")]
    Store { pipeline: String, source: StoreError },
    #[error("{path}: cannot write the shared valves: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Makes every pipeline's valves file the shared text before the registry reads the files.
/// The versions taken, for the [`ValvesService`].
pub async fn pull(
    shared: &dyn SharedValves,
    pipelines: &[Arc<dyn Pipeline>],
    dir: &Path,
    env: &ValvesEnv,
) -> Result<HashMap<String, i64>, PullError> {
    let mut versions = HashMap::new();
    for p in pipelines {
        let Some(cell) = p.valves() else { continue };
        let entry = ValvesEntry::new(p.id(), cell, dir);
        let path = entry.path().to_path_buf();
        let local = file::read_text(&path).ok().flatten().unwrap_or_default();
        let (text, version) = shared
            .seed(p.id(), &local)
            .await
            .map_err(|source| PullError::Store { pipeline: p.id().to_string(), source })?;
        let local_values = local.parse().ok().and_then(|doc| file::to_json(&doc).ok()).unwrap_or_default();
        // As a running replica takes them (`ValvesService::apply_shared`).
        let text = entry.keep_pinned_urls(env, &local_values, &text);
        if text != local {
            file::write_atomic(&path, &text, entry.text_holds_secret(&text))
                .map_err(|source| PullError::Write { path: path.display().to_string(), source })?;
            tracing::info!(pipeline = p.id(), version, "valves taken from the shared store");
        }
        versions.insert(p.id().to_string(), version);
    }
    Ok(versions)
}

/// Applies valves updated by other replicas, until `stop`.
pub async fn follow(service: Arc<ValvesService>, stop: CancellationToken) {
    let Some(shared) = service.shared().cloned() else { return };
    // Said when it starts failing and when it is back, not four times a second meanwhile.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
        let versions = match shared.versions().await {
            Ok(rows) => rows,
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %e, "shared valves could not be read; retrying until they can");
                }
                continue;
            }
        };
        if std::mem::take(&mut failing) {
            tracing::info!("shared valves can be read again");
        }
        for (id, version) in versions {
            if service.version(&id).is_some_and(|known| known >= version) {
                continue;
            }
            match shared.text(&id).await {
                Ok(Some((text, version))) => service.apply_shared(&id, &text, version).await,
                Ok(None) => {}
                Err(e) => tracing::warn!(pipeline = %id, error = %e, "shared valves could not be read; retrying"),
            }
        }
    }
}
