//! The one place a valves change is applied, whoever asks: an update over REST, a reload of
//! the files, or a text another replica shared. Each takes the same lock and ends the same
//! way: the file written, the value checked and live, shared with the other replicas when it
//! came from here, and the pipeline's `on_valves_updated` called.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use sluice_sdk::FieldError;

use super::{file, UpdateError, ValvesEnv};
use crate::registry::{LiveRegistry, Module, RegistryError};
use crate::store::SharedValves;

/// Why a valves change was not applied, or applied only in part.
#[derive(Debug, thiserror::Error)]
pub enum ValvesError {
    #[error("Pipeline {0} not found")]
    PipelineNotFound(String),
    #[error("Valves for {0} not found")]
    NoValves(String),
    #[error("Invalid valves: {}", sluice_sdk::valves::join_errors(.0))]
    Invalid(Vec<FieldError>),
    #[error("{}", sluice_sdk::valves::join_errors(.0))]
    Pinned(Vec<FieldError>),
    #[error(transparent)]
    Reload(#[from] RegistryError),
    #[error("{0}")]
    Io(String),
    #[error("the valves were saved on this replica but could not be shared with the others: {0}")]
    NotShared(sluice_sdk::StoreError),
    #[error("the valves were saved, but {id} failed to apply them: {error}")]
    Hook { id: String, error: sluice_sdk::PipelineError },
}

pub struct ValvesService {
    registry: Arc<LiveRegistry>,
    env: ValvesEnv,
    /// Several replicas: where changes are shared.
    shared: Option<Arc<dyn SharedValves>>,
    /// Changes go one at a time.
    lock: tokio::sync::Mutex<()>,
    /// The shared version of each pipeline's valves this replica runs.
    versions: Mutex<HashMap<String, i64>>,
}

impl ValvesService {
    /// `versions`: what [`super::replicas::pull`] took at start.
    pub fn new(
        registry: Arc<LiveRegistry>,
        env: ValvesEnv,
        shared: Option<Arc<dyn SharedValves>>,
        versions: HashMap<String, i64>,
    ) -> Self {
        ValvesService { registry, env, shared, lock: tokio::sync::Mutex::new(()), versions: Mutex::new(versions) }
    }

    pub fn shared(&self) -> Option<&Arc<dyn SharedValves>> {
        self.shared.as_ref()
    }

    /// The module with valves behind `id` (a connection prefix tolerated).
    pub fn module(&self, id: &str) -> Result<Arc<Module>, ValvesError> {
        let module = self
            .registry
            .load()
            .module_lenient_shared(id)
            .ok_or_else(|| ValvesError::PipelineNotFound(id.to_string()))?;
        if module.valves.is_none() {
            return Err(ValvesError::NoValves(id.to_string()));
        }
        Ok(module)
    }

    /// Applies an update as Open WebUI's editor sends it; what `GET /valves` now shows.
    pub async fn update(&self, id: &str, body: Value) -> Result<Value, ValvesError> {
        let module = self.module(id)?;
        let _one_at_a_time = self.lock.lock().await;
        let registry = self.registry.load();
        let module_id = module.id().to_string();
        // File I/O and the fsyncs of an atomic write: off the async threads.
        let updated = tokio::task::spawn_blocking(move || {
            let entry = registry.module(&module_id).and_then(|m| m.valves.as_ref());
            entry.ok_or_else(|| ValvesError::NoValves(module_id.clone()))?.update(body).map_err(|e| match e {
                UpdateError::Invalid(errors) => ValvesError::Invalid(errors),
                UpdateError::Pinned(errors) => ValvesError::Pinned(errors),
                UpdateError::Io(message) => ValvesError::Io(message),
            })
        })
        .await
        .map_err(|e| ValvesError::Io(format!("the valves update stopped: {}", sluice_sdk::join_failure(&e))))??;
        tracing::info!(pipeline = module.id(), "valves updated");
        self.publish(module.id(), &updated.text).await?;
        self.notify(&module).await?;
        Ok(updated.masked)
    }

    /// Reads every valves file and the environment again and applies them, all or nothing;
    /// with replicas, what changed here is shared. How many pipelines changed.
    pub async fn reload(&self) -> Result<usize, ValvesError> {
        let _one_at_a_time = self.lock.lock().await;
        let registry = self.registry.load();
        let env = self.env.clone();
        let changed = tokio::task::spawn_blocking(move || -> Result<Vec<(String, String)>, ValvesError> {
            let loaded = registry.load_valves(&env)?;
            let mut changed = Vec::new();
            for (id, entry, loaded) in loaded {
                if entry.differs(&loaded) {
                    changed.push((id.to_string(), loaded.text().to_string()));
                }
                entry.install(loaded);
            }
            Ok(changed)
        })
        .await
        .map_err(|e| ValvesError::Io(format!("the reload stopped: {}", sluice_sdk::join_failure(&e))))??;
        for (id, text) in &changed {
            self.publish(id, text).await?;
        }
        for module in self.registry.load().modules().iter().filter(|m| m.valves.is_some()) {
            self.notify(module).await?;
        }
        tracing::info!(changed = changed.len(), "valves reloaded");
        Ok(changed.len())
    }

    /// Applies a text another replica shared, exactly as a local update: file, check, live,
    /// hook. A text this replica cannot accept (its environment pins another value, say) is
    /// left out with a warning; the replica keeps its values.
    pub async fn apply_shared(&self, id: &str, text: &str, version: i64) {
        // Not here (removed, or not yet added): nothing to apply, and the version is taken so
        // it is not read again four times a second.
        let Some(module) = self.registry.load().module_shared(id) else { return self.set_version(id, version) };
        let Some(entry) = &module.valves else { return self.set_version(id, version) };
        let _one_at_a_time = self.lock.lock().await;
        let live = match &*entry.snapshot() {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        let text = entry.keep_pinned_urls(&self.env, &live, text);
        let text = text.as_str();
        if let Err(e) = file::replace_if_changed(entry.path(), text, entry.text_holds_secret(text)) {
            tracing::warn!(pipeline = id, error = %e, "valves from another replica could not be written");
        }
        match entry.load(&self.env) {
            Ok(loaded) => {
                entry.install(loaded);
                tracing::info!(pipeline = id, version, "valves updated by another replica");
                if let Err(e) = module.pipeline.on_valves_updated().await {
                    tracing::error!(pipeline = id, error = %e, "pipeline failed to apply new valves");
                }
            }
            Err(errors) => {
                tracing::warn!(pipeline = id, errors = %sluice_sdk::valves::join_errors(&errors),
                    "valves from another replica refused here");
            }
        }
        self.set_version(id, version);
    }

    /// The shared version this replica runs of `id`.
    pub fn version(&self, id: &str) -> Option<i64> {
        self.versions.lock().ok().and_then(|v| v.get(id).copied())
    }

    fn set_version(&self, id: &str, version: i64) {
        if let Ok(mut v) = self.versions.lock() {
            v.insert(id.to_string(), version);
        }
    }

    /// Shares a change made here; the others apply it within a second ([`super::replicas`]).
    async fn publish(&self, id: &str, text: &str) -> Result<(), ValvesError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        match shared.publish(id, text).await {
            Ok(version) => {
                self.set_version(id, version);
                Ok(())
            }
            Err(e) => Err(ValvesError::NotShared(e)),
        }
    }

    async fn notify(&self, module: &Module) -> Result<(), ValvesError> {
        module
            .pipeline
            .on_valves_updated()
            .await
            .map_err(|error| ValvesError::Hook { id: module.id().to_string(), error })
    }
}
