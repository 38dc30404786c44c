//! A WebAssembly component as a [`Pipeline`]: each hook call and each answer gets a fresh
//! instance, the pipeline's current valves and its own allow-list.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use sluice_sdk::{
    async_trait, DynValves, ErrorKind, KvStore, PipeRequest, PipeStream, Pipeline, PipelineContext, PipelineError,
    PipelineKind, SubModel,
};

use crate::answer;
use crate::manifest::{Manifest, ALLOWED_HOSTS};
use crate::records_gate::GatedStore;
use crate::runtime::{Compiled, Runtime};
use crate::state::Grants;
use crate::valves::JsonValves;

pub struct WasmPipeline {
    id: Arc<str>,
    manifest: Manifest,
    runtime: Arc<Runtime>,
    compiled: Arc<Compiled>,
    valves: Arc<JsonValves>,
    kv: OnceLock<Arc<dyn KvStore>>,
    /// Where its records are (see [`crate::records_namespace`]).
    records: Arc<str>,
    calls: AtomicU64,
    failures: AtomicU64,
}

#[derive(Clone, Copy)]
enum HookName {
    Inlet,
    Outlet,
}

impl WasmPipeline {
    pub fn new(runtime: Arc<Runtime>, compiled: Compiled, manifest: Manifest) -> Self {
        WasmPipeline {
            id: Arc::from(manifest.id.as_str()),
            records: Arc::from(crate::records_namespace(&manifest.id, 0)),
            valves: Arc::new(JsonValves::new(manifest.valves.clone())),
            manifest,
            runtime,
            compiled: Arc::new(compiled),
            kv: OnceLock::new(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Which addition of its id this is (see [`crate::records_namespace`]); set before it
    /// starts.
    pub fn set_generation(&mut self, generation: u64) {
        self.records = Arc::from(crate::records_namespace(&self.id, generation));
    }

    /// The SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.compiled.sha256
    }

    /// What a call may reach, and the guest's own valves as JSON text (the host's valve left
    /// out).
    pub(crate) fn call_inputs(&self) -> (Grants, String) {
        let live = self.valves.get();
        let allowed_hosts = live
            .get(ALLOWED_HOSTS)
            .and_then(Value::as_array)
            .map(|hosts| hosts.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        let own: Map<String, Value> =
            live.iter().filter(|(k, _)| *k != ALLOWED_HOSTS).map(|(k, v)| (k.clone(), v.clone())).collect();
        let grants = Grants {
            allowed_hosts,
            kv: self.kv.get().cloned(),
            secrets: self.valves.secrets(),
            records: Arc::clone(&self.records),
        };
        (grants, Value::Object(own).to_string())
    }

    /// One fresh instance and nothing else: what each call pays before the guest runs (for
    /// the benchmark).
    #[cfg(feature = "guests")]
    pub async fn instantiate_only(&self) -> Result<(), PipelineError> {
        let mut call = self.runtime.call(Arc::clone(&self.id), Grants::default()).await?;
        let deadline = call.arm();
        let store = &mut call.store;
        let compiled = &self.compiled;
        deadline.run(async { compiled.pre.instantiate_async(&mut *store).await.map(drop) }).await
    }

    fn counted<T>(&self, result: Result<T, PipelineError>) -> Result<T, PipelineError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            // Kind only: the message may quote a secret; the server logs it redacted.
            tracing::warn!(pipeline = &*self.id, kind = e.kind.as_str(), "WebAssembly call failed");
        }
        result
    }

    async fn hook(&self, name: HookName, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let (grants, valves) = self.call_inputs();
        let mut call = self.runtime.call(Arc::clone(&self.id), grants).await?;
        let body = body.to_string();
        let user = user.map(|u| u.to_string());
        let deadline = call.arm();
        let store = &mut call.store;
        let compiled = &self.compiled;
        let answer = deadline
            .run(async {
                let instance = compiled.pre.instantiate_async(&mut *store).await?;
                let guest = instance.sluice_pipeline_guest();
                match name {
                    HookName::Inlet => guest.call_inlet(&mut *store, &body, user.as_deref(), &valves).await,
                    HookName::Outlet => guest.call_outlet(&mut *store, &body, user.as_deref(), &valves).await,
                }
            })
            .await?
            .map_err(answer::guest_error)?;
        self.runtime.check_output(&self.id, &answer)?;
        match serde_json::from_str::<Value>(&answer) {
            Ok(value @ Value::Object(_)) => Ok(value),
            _ => Err(PipelineError::new(
                ErrorKind::Internal,
                format!("pipeline {} returned a body that is no JSON object", self.id),
            )),
        }
    }
}

#[async_trait]
impl Pipeline for WasmPipeline {
    fn id(&self) -> &str {
        &self.id
    }

    fn name(&self) -> &str {
        &self.manifest.name
    }

    fn kind(&self) -> PipelineKind {
        self.manifest.kind
    }

    fn valves(&self) -> Option<Arc<dyn DynValves>> {
        Some(Arc::clone(&self.valves) as Arc<dyn DynValves>)
    }

    fn sub_models(&self) -> Arc<[SubModel]> {
        Arc::clone(&self.manifest.models)
    }

    async fn on_startup(&self, ctx: &PipelineContext) -> Result<(), PipelineError> {
        let gated = GatedStore { inner: Arc::clone(&ctx.store), gate: self.runtime.gates.of(&self.records) };
        let _ = self.kv.set(Arc::new(gated));
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("wasm_calls", self.calls.load(Ordering::Relaxed)),
            ("wasm_failures", self.failures.load(Ordering::Relaxed)),
        ]
    }

    async fn inlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let result = self.hook(HookName::Inlet, body, user).await;
        self.counted(result)
    }

    async fn outlet(&self, body: Value, user: Option<Value>) -> Result<Value, PipelineError> {
        let result = self.hook(HookName::Outlet, body, user).await;
        self.counted(result)
    }

    async fn pipe(&self, request: PipeRequest) -> Result<PipeStream, PipelineError> {
        if self.manifest.kind == PipelineKind::Filter {
            return Err(PipelineError::internal(format!("{} is not a pipe", self.id)));
        }
        let (grants, valves) = self.call_inputs();
        let call = self.runtime.call(Arc::clone(&self.id), grants).await?;
        let started = answer::start(
            call,
            Arc::clone(&self.compiled),
            &request,
            valves,
            self.runtime.limits().output_bytes,
            self.runtime.limits().answer_timeout,
        )
        .await;
        self.counted(started)
    }
}
