//! The [`Pipeline`] trait: one module that Open WebUI sees as a pipe, a filter or a manifold.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use crate::{DynValves, PipeRequest, PipeStream, PipelineContext, PipelineError, ServedCompletion};

/// How Open WebUI treats a module (docs/protocol.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineKind {
    /// One chat model whose id is the module id.
    Pipe,
    /// Runs on other models' requests through inlet/outlet; never a chat model itself.
    Filter,
    /// Several chat models, `<module id>.<sub id>`; no entry for the module itself.
    Manifold,
}

impl PipelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Pipe => "pipe",
            PipelineKind::Filter => "filter",
            PipelineKind::Manifold => "manifold",
        }
    }
}

/// The two filter hooks Open WebUI calls around a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Inlet,
    Outlet,
}

/// One model a manifold offers.
#[derive(Debug, Clone, PartialEq)]
pub struct SubModel {
    /// The part after `<module id>.`; may itself contain dots.
    pub id: String,
    /// Appended to the manifold's name to make the display name.
    pub name: String,
    /// Optional Open WebUI `info` object (`meta.description`, `meta.capabilities`, ...).
    pub info: Option<Value>,
}

/// Which models a filter runs for and its place among filters; Open WebUI reads both from
/// `/models` and applies the filter only to the models listed (docs/open-webui-client.md §1.5).
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTargets {
    /// Model ids, or `"*"` for every model.
    pub pipelines: Vec<String>,
    /// Lower runs first.
    pub priority: i64,
}

/// A pipeline module. Every hook has a default, so an implementation writes only what it
/// needs. Hooks are async and must not block a runtime thread.
#[async_trait]
pub trait Pipeline: Send + Sync + 'static {
    /// Module id: alphanumeric plus `_`/`-`, unique in the registry, names `valves/<id>.toml`.
    fn id(&self) -> &str;

    /// Display name (for a manifold, the prefix of every sub-model's name).
    fn name(&self) -> &str;

    fn kind(&self) -> PipelineKind;

    /// The pipeline's valves, if it has any: usually `Some(Arc::new(self.valves.clone()))` of a
    /// [`crate::ValvesCell`]. The server loads, persists and edits them through this handle.
    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        None
    }

    /// A manifold's models. Called on every `/models` request: return the list the pipeline
    /// keeps (a clone of its `Arc`, which the server compares by pointer before by content),
    /// never do network I/O here.
    fn sub_models(&self) -> Arc<[SubModel]> {
        Arc::new([])
    }

    /// Whether a manifold serves `sub_id`. By default: the ids listed by [`Self::sub_models`].
    fn serves(&self, sub_id: &str) -> bool {
        self.sub_models().iter().any(|m| m.id == sub_id)
    }

    /// A filter's targets. By default they are read from valves named `pipelines` (a list of
    /// model ids) and `priority` (an integer), the reference's convention; a filter whose
    /// valves say it otherwise implements this. Without either, the filter runs for no model.
    fn targets(&self) -> FilterTargets {
        let valves = self.valves().map(|v| v.current()).unwrap_or(Value::Null);
        let pipelines = valves
            .get("pipelines")
            .and_then(Value::as_array)
            .map(|list| list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let priority = valves.get("priority").and_then(Value::as_i64).unwrap_or(0);
        FilterTargets { pipelines, priority }
    }

    /// Called once after the valves are loaded, before the server accepts requests.
    async fn on_startup(&self, _ctx: &PipelineContext) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Counters the pipeline keeps, exported by the server's `/metrics` as
    /// `sluice_pipeline_events_total{pipeline, event}`. Must be cheap (atomics).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The outbox queues this pipeline delivers from, so `sluice outbox` can name them before
    /// anything was queued.
    fn queues(&self) -> &[&str] {
        &[]
    }

    /// Called when the server stops.
    async fn on_shutdown(&self) {}

    /// Called after new valves went live (an update or a reload).
    async fn on_valves_updated(&self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Whether `hook` would answer the body unchanged right now without reading it (a filter
    /// switched off, a pipe without a hook). The server then answers the bytes it received,
    /// checked but never built into a tree, and does not call the hook. Say `true` only when
    /// that holds: the default is `false`, so a pipeline that overrides a hook is always asked.
    fn passes_through(&self, _hook: Hook) -> bool {
        false
    }

    /// Sees (and may change) the request before Open WebUI sends it to the model.
    async fn inlet(&self, body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        Ok(body)
    }

    /// Sees a completion a pipe of this server answered: every non-streamed one (background
    /// tasks are answered that way), and streamed ones too while [`Self::observes_streams`]
    /// says so. Runs after the answer was sent; must not block.
    async fn observe_completion(&self, _completion: &ServedCompletion) {}

    /// Whether streamed answers are recorded for [`Self::observe_completion`]. Recording costs a
    /// copy of every event of every stream, so it is off unless the filter needs it now.
    fn observes_streams(&self) -> bool {
        false
    }

    /// Sees (and may change) the finished exchange.
    async fn outlet(&self, body: Value, _user: Option<Value>) -> Result<Value, PipelineError> {
        Ok(body)
    }

    /// An operator's action on this pipeline, `POST /{id}/actions/{name}` behind the key (a
    /// Pipelines server draws no buttons, so what an Open WebUI action did is asked for here):
    /// the JSON answer, or an error with its status.
    async fn action(&self, name: &str, _body: Value) -> Result<Value, PipelineError> {
        Err(PipelineError::new(crate::ErrorKind::NotFound, format!("{} has no action {name:?}", self.id())))
    }

    /// Answers a chat request. Only pipes and manifolds are asked. An error returned here is
    /// reported before the answer starts; an error during the answer is a [`crate::PipeEvent::Error`].
    async fn pipe(&self, _request: PipeRequest) -> Result<PipeStream, PipelineError> {
        Err(PipelineError::internal(format!("{} is not a pipe", self.id())))
    }
}
