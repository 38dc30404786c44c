//! The one list of pipelines, built at start-up (the reference rebuilds it on every request,
//! docs/protocol.md §1.2) and replaced whole when a WebAssembly pipeline is added or removed
//! ([`LiveRegistry`]), and the lookups from the ids Open WebUI sends.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sluice_sdk::{FieldError, Pipeline, PipelineError, PipelineKind};

use crate::valves::{overrides, ValvesEntry, ValvesEnv};

/// The pipelines compiled into this binary. Tests build their own list instead.
pub fn builtin() -> Vec<Arc<dyn Pipeline>> {
    vec![
        Arc::new(sluice_openai_responses::OpenAIResponses::new()),
        Arc::new(sluice_openpipe_reporting::OpenPipeReporting::new()),
    ]
}

/// A pipeline plus the server's handle on its valves.
pub struct Module {
    pub pipeline: Arc<dyn Pipeline>,
    pub valves: Option<ValvesEntry>,
}

impl Module {
    /// Checks the id and gives the pipeline its valves entry, not loaded yet.
    fn new(pipeline: Arc<dyn Pipeline>, valves_dir: &Path) -> Result<Module, RegistryError> {
        let id = pipeline.id().to_string();
        if !valid_id(&id) {
            return Err(RegistryError::BadId(id));
        }
        let valves = pipeline.valves().map(|cell| ValvesEntry::new(&id, cell, valves_dir));
        Ok(Module { pipeline, valves })
    }

    /// [`Self::new`], then the pipeline's valves loaded (file, then environment) and live.
    pub fn load(pipeline: Arc<dyn Pipeline>, valves_dir: &Path, env: &ValvesEnv) -> Result<Module, RegistryError> {
        let module = Module::new(pipeline, valves_dir)?;
        if let Some(entry) = &module.valves {
            let loaded = entry.load(env).map_err(|errors| sourced(module.id(), entry, env, errors))?;
            entry.install(loaded);
        }
        Ok(module)
    }

    pub fn id(&self) -> &str {
        self.pipeline.id()
    }

    pub fn kind(&self) -> PipelineKind {
        self.pipeline.kind()
    }
}

/// What a model entry id resolved to.
pub struct Resolved<'a> {
    pub module: &'a Module,
    /// The id the pipeline serves: the sub id for a manifold, else the module id.
    pub model_id: String,
}

pub struct Registry {
    modules: Vec<Arc<Module>>,
    by_id: HashMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("pipeline id {0:?} is used twice")]
    Duplicate(String),
    #[error("pipeline id {0:?} must be non-empty and use only letters, digits, '_' and '-'")]
    BadId(String),
    #[error("valves of {id}: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Valves { id: String, errors: Vec<SourcedError> },
    #[error("valve variables that name nothing: {}", .0.iter().map(|u| u.to_string()).collect::<Vec<_>>().join("; "))]
    UnknownOverrides(Vec<overrides::Unknown>),
}

/// Where a refused valve value was set.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    File(std::path::PathBuf),
    Variable(String),
}

/// A refused valve value and where it was set.
#[derive(Debug, Clone)]
pub struct SourcedError {
    pub source: Source,
    pub error: FieldError,
}

/// `VARIABLE: FIELD: message` or `path: FIELD: message`.
impl std::fmt::Display for SourcedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Source::Variable(v) => write!(f, "{v}: {}", self.error),
            Source::File(p) => write!(f, "{}: {}", p.display(), self.error),
        }
    }
}

fn sourced(id: &str, entry: &ValvesEntry, env: &ValvesEnv, errors: Vec<FieldError>) -> RegistryError {
    RegistryError::Valves {
        id: id.to_string(),
        errors: errors
            .into_iter()
            .map(|error| {
                let source = match entry.variable_of(&error.field, env) {
                    Some(variable) => Source::Variable(variable),
                    None => Source::File(entry.path().to_path_buf()),
                };
                SourcedError { source, error }
            })
            .collect(),
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl Registry {
    /// Checks ids and loads every pipeline's valves; nothing is live until all are valid.
    pub fn build(pipelines: Vec<Arc<dyn Pipeline>>, valves_dir: &Path, env: &ValvesEnv) -> Result<Self, RegistryError> {
        let mut modules = Vec::with_capacity(pipelines.len());
        let mut by_id = HashMap::new();
        for pipeline in pipelines {
            let module = Module::new(pipeline, valves_dir)?;
            if by_id.insert(module.id().to_string(), modules.len()).is_some() {
                return Err(RegistryError::Duplicate(module.id().to_string()));
            }
            modules.push(Arc::new(module));
        }
        let registry = Registry { modules, by_id };
        let unknown = registry.unknown_overrides(env);
        if !unknown.is_empty() {
            return Err(RegistryError::UnknownOverrides(unknown));
        }
        let loaded = registry.load_valves(env)?;
        for (_, entry, loaded) in loaded {
            entry.install(loaded);
        }
        Ok(registry)
    }

    /// `SLUICE_VALVES__…` variables that name no pipeline or valve of this registry.
    pub fn unknown_overrides(&self, env: &ValvesEnv) -> Vec<overrides::Unknown> {
        let known: Vec<overrides::Known<'_>> = self
            .modules
            .iter()
            .map(|m| overrides::Known {
                id: m.id(),
                fields: m.valves.iter().flat_map(|v| v.schema.fields.iter().map(|f| f.name.as_str())).collect(),
            })
            .collect();
        overrides::unknown(env, &known)
    }

    /// Reads every valves file and the environment again; applies all or nothing.
    pub fn load_valves(
        &self,
        env: &ValvesEnv,
    ) -> Result<Vec<(&str, &ValvesEntry, crate::valves::Loaded)>, RegistryError> {
        let mut out = Vec::new();
        for module in &self.modules {
            if let Some(entry) = &module.valves {
                let loaded = entry.load(env).map_err(|errors| sourced(module.id(), entry, env, errors))?;
                out.push((module.id(), entry, loaded));
            }
        }
        Ok(out)
    }

    /// `error` without any secret of any pipeline's valves: the last line of defence for a
    /// pipeline that passes on an upstream text quoting a key.
    pub fn redact(&self, error: PipelineError) -> PipelineError {
        let secrets: Vec<String> =
            self.modules.iter().filter_map(|m| m.valves.as_ref()).flat_map(|v| v.secrets()).collect();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        error.redacted(&refs)
    }

    pub fn modules(&self) -> &[Arc<Module>] {
        &self.modules
    }

    /// This list with `module` added, or in place of the one with its id.
    pub fn with(&self, module: Module) -> Registry {
        let mut modules: Vec<Arc<Module>> = self.modules.iter().filter(|m| m.id() != module.id()).cloned().collect();
        modules.push(Arc::new(module));
        Self::indexed(modules)
    }

    /// This list without the module `id`.
    pub fn without(&self, id: &str) -> Registry {
        Self::indexed(self.modules.iter().filter(|m| m.id() != id).cloned().collect())
    }

    fn indexed(modules: Vec<Arc<Module>>) -> Registry {
        let by_id = modules.iter().enumerate().map(|(i, m)| (m.id().to_string(), i)).collect();
        Registry { modules, by_id }
    }

    /// A module by its own id (valves routes).
    pub fn module(&self, id: &str) -> Option<&Module> {
        self.by_id.get(id).map(|i| &*self.modules[*i])
    }

    /// A model entry id: a pipe or filter id, or `<manifold>.<sub>` split at the first dot.
    pub fn model_entry(&self, id: &str) -> Option<Resolved<'_>> {
        if let Some(module) = self.module(id) {
            return (module.kind() != PipelineKind::Manifold).then(|| Resolved { module, model_id: id.to_string() });
        }
        let (prefix, sub) = id.split_once('.')?;
        let module = self.module(prefix)?;
        (module.kind() == PipelineKind::Manifold && module.pipeline.serves(sub))
            .then(|| Resolved { module, model_id: sub.to_string() })
    }

    /// Why `id` is no model a chat can use, and what to ask for instead: a filter answers no
    /// chat, a manifold only through its models, and a bare or mistyped id has a nearest one.
    pub fn why_not_a_model(&self, id: &str) -> String {
        if let Some(module) = self.module(id) {
            match module.kind() {
                PipelineKind::Filter => {
                    return format!(
                        "{id} is a filter: Open WebUI runs it around chats with other models; it answers no chat itself"
                    )
                }
                PipelineKind::Manifold => {
                    let first = module.pipeline.sub_models().first().cloned();
                    let example = first.map(|m| format!(", such as {id}.{}", m.id)).unwrap_or_default();
                    return format!("{id} is a manifold: ask for one of its models{example} (GET /models lists them)");
                }
                PipelineKind::Pipe => {}
            }
        }
        let mut models = Vec::new();
        for module in &self.modules {
            match module.kind() {
                PipelineKind::Manifold => {
                    models.extend(module.pipeline.sub_models().iter().map(|m| format!("{}.{}", module.id(), m.id)))
                }
                PipelineKind::Pipe => models.push(module.id().to_string()),
                PipelineKind::Filter => {}
            }
        }
        let same_sub = models.iter().find(|m| m.split_once('.').is_some_and(|(_, sub)| sub == id));
        let hint = match same_sub {
            Some(m) => format!(" (did you mean `{m}`?)"),
            None => crate::suggest::hint(id, models.iter().map(String::as_str)),
        };
        format!("Pipeline {id} not found{hint}; GET /models lists the model ids")
    }

    /// Like [`Self::model_entry`], but also accepts an id carrying an Open WebUI connection
    /// "Prefix ID" (`<prefix>.<id>`), which Open WebUI puts in inlet/outlet paths
    /// (docs/open-webui-client.md §1.7).
    pub fn model_entry_lenient(&self, id: &str) -> Option<Resolved<'_>> {
        self.model_entry(id).or_else(|| id.split_once('.').and_then(|(_, rest)| self.model_entry(rest)))
    }

    /// [`Self::module`], as a handle that outlives this snapshot.
    pub fn module_shared(&self, id: &str) -> Option<Arc<Module>> {
        self.by_id.get(id).map(|i| Arc::clone(&self.modules[*i]))
    }

    /// [`Self::module_lenient`], as a handle that outlives this snapshot.
    pub fn module_lenient_shared(&self, id: &str) -> Option<Arc<Module>> {
        self.module_shared(id).or_else(|| id.split_once('.').and_then(|(_, rest)| self.module_shared(rest)))
    }

    pub fn module_lenient(&self, id: &str) -> Option<&Module> {
        self.module(id).or_else(|| id.split_once('.').and_then(|(_, rest)| self.module(rest)))
    }
}

/// The registry requests read: a snapshot taken per request, replaced whole when a pipeline is
/// added or removed at run time, so a request in flight keeps the list it started with.
pub struct LiveRegistry {
    current: ArcSwap<Registry>,
}

impl LiveRegistry {
    pub fn new(registry: Registry) -> Self {
        LiveRegistry { current: ArcSwap::from_pointee(registry) }
    }

    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    pub fn replace(&self, registry: Registry) {
        self.current.store(Arc::new(registry));
    }
}
