//! WebAssembly pipelines added at run time: accepted from `/pipelines/add`, `/pipelines/upload`
//! and `sluice pipeline add`, kept in the store, loaded at start, followed by every replica
//! (within a second), removed by `/pipelines/delete`. Built-in pipelines cannot be replaced.

pub mod fetch;
pub mod index;
pub mod python;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_sdk::{KvStore, Pipeline, PipelineContext};
use sluice_wasm::{LoadError, Runtime, WasmPipeline};
use tokio_util::sync::CancellationToken;

use crate::registry::{LiveRegistry, Module, RegistryError};
use crate::valves::ValvesEnv;

/// How often a replica looks for components added or removed elsewhere.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error("{0} is a built-in pipeline and cannot be replaced or removed")]
    BuiltIn(String),
    #[error("pipeline {0} not found among the added WebAssembly pipelines")]
    NotFound(String),
    #[error("{0}")]
    Valves(#[from] RegistryError),
    #[error("the component could not be stored: {0}")]
    Store(#[from] sluice_sdk::StoreError),
    #[error("{0}")]
    Changed(String),
    #[error("pipeline {id} failed to start: {message}")]
    Start { id: String, message: String },
    #[error("the component stored as {id} now says it is {says}")]
    IdChanged { id: String, says: String },
    #[error(
        "pipeline {id} holds secret valves ({}) that new code must not receive: clear them first \
         (POST /{id}/valves/update with each set to null), add the new version, then enter them again",
        fields.join(", ")
    )]
    HoldsSecrets { id: String, fields: Vec<String> },
    /// One component's record is not what was written; the others load (a damaged one
    /// stopped the server from starting: found by a red team).
    #[error("{0}")]
    Damaged(String),
}

/// Where new pipelines come from: the downloader for `/pipelines/add`, and the Python
/// compiler for `.py` files.
pub struct Sources {
    pub fetcher: fetch::Fetcher,
    pub componentize_py: String,
    /// Where `.py` files are built (under the data directory).
    pub builds: PathBuf,
    /// Additions in progress at once: each holds its component (up to `wasm_component_mb`)
    /// in memory and may run a compiler, so a third waits for its turn by being refused.
    pub intake: Arc<tokio::sync::Semaphore>,
}

/// Additions that may be in progress at once (see [`Sources::intake`]).
pub const INTAKE: usize = 2;

/// What was added.
#[derive(Debug, Clone)]
pub struct Added {
    pub id: String,
    pub name: String,
    pub kind: &'static str,
    pub replaced: bool,
}

/// What the service is given once, at start.
pub struct Setup {
    pub runtime: Arc<Runtime>,
    pub live: Arc<LiveRegistry>,
    pub store: Arc<dyn KvStore>,
    /// What each added pipeline's `on_startup` receives.
    pub ctx: PipelineContext,
    /// Several replicas: where valves are shared (a removed pipeline's are deleted there).
    pub shared_valves: Option<Arc<dyn crate::store::SharedValves>>,
    pub valves_dir: PathBuf,
    pub env: ValvesEnv,
    /// Ids no component may take.
    pub builtin: HashSet<String>,
}

/// Which component an id runs here: its code, and which addition of the id it is. The same code
/// added again after a removal is another generation: its predecessor is gone for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Installed {
    pub sha256: String,
    pub generation: u64,
}

impl From<&index::Entry> for Installed {
    fn from(entry: &index::Entry) -> Self {
        Installed { sha256: entry.sha256.clone(), generation: entry.generation }
    }
}

pub struct Components {
    setup: Setup,
    /// What each WebAssembly pipeline runs here.
    running: Mutex<HashMap<String, Installed>>,
    /// The index version this replica has applied.
    seen: Mutex<u64>,
    /// Changes go one at a time.
    lock: tokio::sync::Mutex<()>,
}

impl Components {
    /// `loaded` and `version`: what [`load_all`] loaded at start.
    pub fn new(setup: Setup, loaded: Vec<(String, Installed)>, version: u64) -> Self {
        Components {
            setup,
            running: Mutex::new(loaded.into_iter().collect()),
            seen: Mutex::new(version),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.setup.runtime
    }

    pub fn is_builtin(&self, id: &str) -> bool {
        self.setup.builtin.contains(id)
    }

    /// Checks, stores and starts a component; an older one with its id is replaced.
    pub async fn add(&self, bytes: Vec<u8>, source: String) -> Result<Added, ComponentError> {
        let _one_at_a_time = self.lock.lock().await;
        let mut pipeline = sluice_wasm::load(&self.setup.runtime, bytes.clone()).await?;
        let id = pipeline.id().to_string();
        if self.setup.builtin.contains(&id) {
            return Err(ComponentError::BuiltIn(id));
        }
        // New code under this id would read the secrets entered for the old one, or show them
        // in clear if it no longer marks them secret (found by a red team): they must be
        // cleared first, as a removed pipeline's are.
        let sha256 = pipeline.sha256().to_string();
        let same_code = self.running.lock().is_ok_and(|r| r.get(&id).is_some_and(|i| i.sha256 == sha256));
        let old = self.setup.live.load().module_shared(&id).filter(|_| !same_code);
        let held = old.as_ref().and_then(|m| m.valves.as_ref()).map(|v| v.stored_secret_fields()).unwrap_or_default();
        if !held.is_empty() {
            return Err(ComponentError::HoldsSecrets { id, fields: held });
        }
        let added = Added {
            id: id.clone(),
            name: pipeline.name().to_string(),
            kind: pipeline.kind().as_str(),
            replaced: false,
        };
        let Addition { generation, was } =
            plan_addition(self.setup.store.as_ref(), self.setup.shared_valves.as_deref(), &id).await?;
        pipeline.set_generation(generation);
        let module = self.start(pipeline).await?;
        let store = self.setup.store.as_ref();
        let (version, old) =
            index::insert(store, &id, &bytes, &sha256, source, generation, was).await.map_err(|e| match e {
                index::InsertError::Store(e) => ComponentError::Store(e),
                changed @ index::InsertError::Changed(_) => ComponentError::Changed(changed.to_string()),
            })?;
        self.go_live(module, Installed { sha256: sha256.clone(), generation }).await;
        self.seen_after_own_change(version);
        tracing::info!(pipeline = %id, sha256 = %sha256, "WebAssembly pipeline added");
        Ok(Added { replaced: old.is_some(), ..added })
    }

    /// Removes an added pipeline with its valves file and its records: a component that comes
    /// later with the same id starts from its defaults and sees none of this one's secrets.
    pub async fn remove(&self, id: &str) -> Result<(), ComponentError> {
        let _one_at_a_time = self.lock.lock().await;
        if self.setup.builtin.contains(id) {
            return Err(ComponentError::BuiltIn(id.to_string()));
        }
        let Some((version, entry)) = index::remove(self.setup.store.as_ref(), id).await? else {
            return Err(ComponentError::NotFound(id.to_string()));
        };
        if let Some(shared) = &self.setup.shared_valves {
            // Emptied, not deleted: the replicas follow versions, which must keep growing. Kept,
            // the next addition of the id took the removed one's keys back (found by a red team).
            if let Err(e) = shared.publish(id, "").await {
                tracing::error!(
                    pipeline = id,
                    error = %e,
                    "the shared valves of a removed pipeline could not be emptied: empty them before adding the id again \
                     (POST /<id>/valves/update with each secret set to null, once it is added)"
                );
            }
        }
        // This replica may still run an older addition of the id (not followed yet): ended too.
        let here = self.running.lock().ok().and_then(|r| r.get(id).map(|i| i.generation));
        if let Some(older) = here.filter(|g| *g != entry.generation) {
            self.end_generation(id, older).await;
        }
        self.go_dead_for_good(id, entry.generation).await;
        self.seen_after_own_change(version);
        tracing::info!(pipeline = id, "WebAssembly pipeline removed");
        Ok(())
    }

    /// Applies changes another replica (or the CLI) made, until `stop`.
    pub async fn follow(self: Arc<Self>, stop: CancellationToken) {
        // Said when it starts failing and when it is back, not every second meanwhile.
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = stop.cancelled() => return,
            }
            match self.sync().await {
                Err(e) if !std::mem::replace(&mut failing, true) => {
                    tracing::warn!(error = %e, "WebAssembly pipelines could not be followed; retrying until they can")
                }
                Err(_) => {}
                Ok(()) if std::mem::take(&mut failing) => tracing::info!("WebAssembly pipelines are followed again"),
                Ok(()) => {}
            }
        }
    }

    async fn sync(&self) -> Result<(), ComponentError> {
        if index::read(self.setup.store.as_ref()).await?.version == self.seen() {
            return Ok(());
        }
        let _one_at_a_time = self.lock.lock().await;
        // Read again under the lock: a snapshot taken before waiting for it (an addition here
        // can hold it for seconds) undid what happened meanwhile (found by a red team).
        let index = index::read(self.setup.store.as_ref()).await?;
        let running = self.running.lock().map(|r| r.clone()).unwrap_or_default();
        for (id, here) in &running {
            let now = index.components.get(id).map(Installed::from);
            // Gone, or removed and added again since: the one here is gone for good. An entry
            // without a generation was written by an older sluice (mixed versions while
            // upgrading), which drops the field: not a new addition by itself.
            if now.as_ref().is_none_or(|now| now.generation != 0 && now.generation != here.generation) {
                self.go_dead_for_good(id, here.generation).await;
                tracing::info!(pipeline = %id, "WebAssembly pipeline removed by another replica");
            }
        }
        let running = self.running.lock().map(|r| r.clone()).unwrap_or_default();
        for (id, entry) in &index.components {
            let mut installed = Installed::from(entry);
            if let Some(here) = running.get(id).filter(|_| installed.generation == 0) {
                installed.generation = here.generation;
            }
            if running.get(id) == Some(&installed) || self.setup.builtin.contains(id) {
                continue;
            }
            match self.load_stored(id, &installed, !running.contains_key(id)).await {
                Ok(module) => {
                    self.go_live(module, installed).await;
                    tracing::info!(pipeline = %id, "WebAssembly pipeline added by another replica");
                }
                Err(e) => tracing::error!(pipeline = %id, error = %e, "WebAssembly pipeline could not be loaded"),
            }
        }
        self.set_seen(index.version);
        Ok(())
    }

    /// Before an id new here is loaded, its valves file is made what the replicas share: a
    /// file this replica kept from an earlier addition of the id (while it was stopped during
    /// the removal, say) would give the new code the old one's secrets. A URL the text moves
    /// from its default while a key from this replica's environment goes there stays at its
    /// default, as an update from another replica is taken (found by a reviewer).
    async fn take_shared_valves(&self, pipeline: &WasmPipeline) {
        let Some(shared) = &self.setup.shared_valves else { return };
        let id = pipeline.id();
        let path = crate::valves::file_path(&self.setup.valves_dir, id);
        let entry = pipeline.valves().map(|cell| crate::valves::ValvesEntry::new(id, cell, &self.setup.valves_dir));
        let result = match shared.text(id).await {
            Ok(Some((text, _))) => {
                let text = match &entry {
                    Some(entry) => entry.keep_pinned_urls(&self.setup.env, &serde_json::Map::new(), &text),
                    None => text,
                };
                crate::valves::file::write_atomic(&path, &text, true)
            }
            Ok(None) => std::fs::remove_file(&path).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        if let Err(e) = result {
            tracing::warn!(pipeline = id, error = %e, "the shared valves could not be taken for a pipeline added elsewhere");
        }
    }

    /// `new_here`: the id runs nothing here yet, so its valves file is first made the shared one.
    async fn load_stored(&self, id: &str, installed: &Installed, new_here: bool) -> Result<Module, ComponentError> {
        let mut pipeline = stored(&self.setup.runtime, self.setup.store.as_ref(), id, &installed.sha256).await?;
        pipeline.set_generation(installed.generation);
        if new_here {
            self.take_shared_valves(&pipeline).await;
        }
        self.start(pipeline).await
    }

    /// Valves loaded and `on_startup` called: ready to go live.
    async fn start(&self, pipeline: WasmPipeline) -> Result<Module, ComponentError> {
        let id = pipeline.id().to_string();
        let pipeline: Arc<dyn Pipeline> = Arc::new(pipeline);
        let module = Module::load(Arc::clone(&pipeline), &self.setup.valves_dir, &self.setup.env)?;
        pipeline.on_startup(&self.setup.ctx).await.map_err(|e| ComponentError::Start { id, message: e.to_string() })?;
        Ok(module)
    }

    async fn go_live(&self, module: Module, installed: Installed) {
        let id = module.id().to_string();
        let current = self.setup.live.load();
        let old = current.module_shared(&id);
        self.setup.live.replace(current.with(module));
        if let Ok(mut running) = self.running.lock() {
            running.insert(id, installed);
        }
        if let Some(old) = old {
            old.pipeline.on_shutdown().await;
        }
    }

    async fn go_dead(&self, id: &str) {
        let current = self.setup.live.load();
        let old = current.module_shared(id);
        self.setup.live.replace(current.without(id));
        if let Ok(mut running) = self.running.lock() {
            running.remove(id);
        }
        if let Some(old) = old {
            old.pipeline.on_shutdown().await;
        }
    }

    /// A removal: out of the registry, then its records shut (a call under way finishes the
    /// write it began; none begins after) before they and its valves file are deleted.
    async fn go_dead_for_good(&self, id: &str, generation: u64) {
        self.go_dead(id).await;
        self.end_generation(id, generation).await;
    }

    /// One addition of `id` ended: its records shut, then they and its valves file deleted.
    async fn end_generation(&self, id: &str, generation: u64) {
        self.setup.runtime.close_records(&sluice_wasm::records_namespace(id, generation)).await;
        forget(self.setup.store.as_ref(), &self.setup.valves_dir, id, generation).await;
    }

    /// After a change made here: the index version it wrote is this replica's only when it
    /// follows the one applied; otherwise another replica changed it meanwhile, and taking the
    /// version would skip that change (found by a reviewer).
    fn seen_after_own_change(&self, version: u64) {
        if version == self.seen() + 1 {
            self.set_seen(version);
        }
    }

    fn seen(&self) -> u64 {
        self.seen.lock().map(|s| *s).unwrap_or(0)
    }

    fn set_seen(&self, version: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            *seen = version;
        }
    }
}

/// What an addition of an id takes: its generation, and the one it saw there (`None`: none).
pub struct Addition {
    pub generation: u64,
    pub was: Option<u64>,
}

/// How `id` is to be added, from the index as it is now (the server's additions and the CLI's
/// alike). A new addition empties the shared valves first, so it starts from its defaults on
/// every replica: a replica that had not yet seen a removal could still share valves for the
/// removed one (found by a red team).
pub async fn plan_addition(
    store: &dyn KvStore,
    shared: Option<&dyn crate::store::SharedValves>,
    id: &str,
) -> Result<Addition, sluice_sdk::StoreError> {
    let index = index::read(store).await?;
    let addition =
        Addition { generation: index::generation_for(&index, id), was: index.components.get(id).map(|e| e.generation) };
    if let (None, Some(shared)) = (addition.was, shared) {
        shared.publish(id, "").await?;
    }
    Ok(addition)
}

/// Deletes what a removed pipeline leaves: its valves file (its keys) and its records, so a
/// component added later with its id starts from its defaults.
pub async fn forget(store: &dyn KvStore, valves_dir: &Path, id: &str, generation: u64) {
    let file = crate::valves::file_path(valves_dir, id);
    if let Err(e) = std::fs::remove_file(&file) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(pipeline = id, error = %e, "the valves file of a removed pipeline could not be deleted");
        }
    }
    if let Err(e) = store.trim(&sluice_wasm::records_namespace(id, generation), 0, 0).await {
        tracing::warn!(pipeline = id, error = %e, "the records of a removed pipeline could not be deleted");
    }
}

/// Where compiled WebAssembly is kept between runs: inside the data directory, 0700 itself
/// (native code sluice will run), as an absolute path (wasmtime's cache takes no other).
/// `None` when it cannot be made sluice's own and private: whoever can write there can run
/// code as sluice, so pipelines are then compiled at every start instead (found by a red team:
/// the cache was used after a warning).
pub fn cache_dir(data_dir: &Path) -> Option<PathBuf> {
    let dir = data_dir.join("wasm-cache");
    // What others could write may be theirs: a cache is only worth what it saves.
    if crate::private::others_may_write(&dir) && crate::private::own_dir(&dir).is_ok() {
        tracing::warn!(path = %dir.display(), "the compile cache was open to others: emptied");
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(path = %dir.display(), error = %e, "the compile cache could not be emptied; not used");
            return None;
        }
    }
    if let Err(e) = crate::private::own_dir(&dir) {
        tracing::warn!(
            path = %dir.display(),
            error = %e,
            "the compile cache is not used: WebAssembly pipelines are compiled at every start"
        );
        return None;
    }
    Some(std::path::absolute(&dir).unwrap_or(dir))
}

/// Where `.py` pipelines are built: under the data directory (private, and present in an
/// image that has no /tmp).
pub fn builds_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("builds")
}

/// A stored component, loaded: its bytes from the store, compiled (or taken from the cache),
/// described, and checked to still name the id it is stored under.
async fn stored(
    runtime: &Arc<Runtime>,
    store: &dyn KvStore,
    id: &str,
    sha256: &str,
) -> Result<WasmPipeline, ComponentError> {
    let bytes = match index::bytes(store, sha256).await {
        Ok(bytes) => bytes.ok_or_else(|| ComponentError::NotFound(id.to_string()))?,
        Err(index::BytesError::Store(e)) => return Err(ComponentError::Store(e)),
        Err(damaged @ index::BytesError::Damaged(..)) => return Err(ComponentError::Damaged(damaged.to_string())),
    };
    let pipeline = sluice_wasm::load(runtime, bytes).await?;
    if pipeline.id() != id {
        return Err(ComponentError::IdChanged { id: id.to_string(), says: pipeline.id().to_string() });
    }
    Ok(pipeline)
}

/// At start: the stored components, loaded before the registry is built so their valves are
/// read with the others'. One that fails to load is left out with an error in the log; the
/// server starts without it.
pub async fn load_all(
    runtime: &Arc<Runtime>,
    store: &dyn KvStore,
    builtin: &HashSet<String>,
) -> Result<(Vec<Arc<dyn Pipeline>>, Vec<(String, Installed)>, u64), sluice_sdk::StoreError> {
    let (each, version) = load_each(runtime, store, builtin).await?;
    let mut pipelines: Vec<Arc<dyn Pipeline>> = Vec::new();
    let mut loaded = Vec::new();
    for (id, installed, result) in each {
        match result {
            Ok(pipeline) => {
                loaded.push((id, installed));
                pipelines.push(Arc::new(pipeline));
            }
            Err(e) => tracing::error!(pipeline = %id, error = %e, "WebAssembly pipeline could not be loaded; left out"),
        }
    }
    Ok((pipelines, loaded, version))
}

/// Each stored component (its id and what it is) loaded, or why it could not be (`sluice
/// check` says each); and the index's version. Only the store failing fails the whole.
#[allow(clippy::type_complexity)]
pub async fn load_each(
    runtime: &Arc<Runtime>,
    store: &dyn KvStore,
    builtin: &HashSet<String>,
) -> Result<(Vec<(String, Installed, Result<WasmPipeline, ComponentError>)>, u64), sluice_sdk::StoreError> {
    let index = index::read(store).await?;
    let mut each = Vec::new();
    for (id, entry) in index.components.iter().filter(|(id, _)| !builtin.contains(*id)) {
        let result = stored(runtime, store, id, &entry.sha256).await.map(|mut pipeline| {
            pipeline.set_generation(entry.generation);
            pipeline
        });
        match result {
            Err(ComponentError::Store(e)) => return Err(e),
            result => each.push((id.clone(), Installed::from(entry), result)),
        }
    }
    Ok((each, index.version))
}
