//! Valves shared by several replicas (PostgreSQL store). The database holds each pipeline's
//! TOML text with a version; every replica's `valves/<id>.toml` is a copy of it:
//! - at start, a replica takes the shared text (the first replica to start seeds it from its
//!   own file), then loads its files as usual, environment overrides on top;
//! - an update accepted over REST is written locally as always, then published (version + 1);
//! - every replica polls the versions four times a second and applies a newer text exactly as a
//!   local update: file written atomically, checked, installed, the pipeline's hook called.
//!
//! Polling rather than LISTEN/NOTIFY: no dedicated connection to keep and re-establish, nothing
//! missed across a reconnect, and the bound (under a second) holds by construction.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use sluice_sdk::Pipeline;
use tokio_util::sync::CancellationToken;

use crate::backend::StoreBackend;
use crate::startup::AppState;
use crate::valves::file;

/// A version query (a few bytes per pipeline) four times a second: under a second to every
/// replica with room for a slow apply.
const POLL: Duration = Duration::from_millis(250);

/// Makes every pipeline's valves file the shared text before the registry reads the files.
/// The versions taken, for [`follow`].
pub async fn pull(
    store: &dyn StoreBackend,
    pipelines: &[Arc<dyn Pipeline>],
    dir: &Path,
) -> Result<HashMap<String, i64>, String> {
    let mut versions = HashMap::new();
    if !store.shares_valves() {
        return Ok(versions);
    }
    for p in pipelines {
        let Some(cell) = p.valves() else { continue };
        let entry = crate::valves::ValvesEntry::new(p.id(), cell, dir);
        let path = entry.path().to_path_buf();
        let local = std::fs::read_to_string(&path).unwrap_or_default();
        let Some((shared, version)) = store.seed_valves(p.id(), &local).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if shared != local {
            file::write_atomic(&path, &shared, entry.text_holds_secret(&shared))
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            tracing::info!(pipeline = p.id(), version, "valves taken from the shared store");
        }
        versions.insert(p.id().to_string(), version);
    }
    Ok(versions)
}

/// Applies valves updated by other replicas, until `stop`.
pub async fn follow(state: web::Data<AppState>, stop: CancellationToken) {
    if !state.store.shares_valves() {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
        let versions = match state.store.valves_versions().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "shared valves could not be read; retrying");
                continue;
            }
        };
        for (id, version) in versions {
            let known = state.valves_versions.lock().map(|v| v.get(&id).copied()).unwrap_or(None);
            if known.is_some_and(|k| k >= version) {
                continue;
            }
            let (text, version) = match state.store.valves_text(&id).await {
                Ok(Some(row)) => row,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(pipeline = %id, error = %e, "shared valves could not be read; retrying");
                    continue;
                }
            };
            apply(&state, &id, &text).await;
            if let Ok(mut v) = state.valves_versions.lock() {
                v.insert(id, version);
            }
        }
    }
}

async fn apply(state: &web::Data<AppState>, id: &str, text: &str) {
    let Some(module) = state.registry.module(id) else { return };
    let Some(entry) = &module.valves else { return };
    let _writing = state.valves_lock.lock().await;
    if let Err(e) = file::replace_if_changed(entry.path(), text, entry.text_holds_secret(text)) {
        tracing::warn!(pipeline = id, error = %e, "valves from another replica could not be written");
    }
    match entry.load(&state.valves_env) {
        Ok(loaded) => {
            entry.install(loaded);
            tracing::info!(pipeline = id, "valves updated by another replica");
            if let Err(e) = module.pipeline.on_valves_updated().await {
                tracing::error!(pipeline = id, error = %e, "pipeline failed to apply new valves");
            }
        }
        Err(errors) => {
            let detail: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect();
            tracing::warn!(pipeline = id, errors = %detail.join("; "), "valves from another replica refused here");
        }
    }
}
