//! The one WebAssembly engine of the server: compiles components (cached on disk), checks
//! what they import and export, and gives each call a fresh instance from a pool, with a
//! memory limit and a deadline.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_sdk::{ErrorKind, PipelineError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

use crate::bindings::{self, PipelinePre};
use crate::check;
use crate::epoch::{EpochClock, Running, TICK};
use crate::limits::Limits;
use crate::manifest::Manifest;
use crate::records_gate::Gates;
use crate::state::{Grants, GuestState};

/// Why a component was not accepted: said to whoever added it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the component has {size} bytes; at most {max} are accepted")]
    TooLarge { size: usize, max: usize },
    #[error("not a WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component imports {0}, which sluice does not give pipelines (allowed: wasi:io, wasi:clocks, wasi:random, wasi:cli, wasi:filesystem and wasi:sockets with nothing behind them, wasi:http outgoing, sluice:pipeline/host@0.1)")]
    ForbiddenImport(String),
    #[error("the component does not export sluice:pipeline/guest@0.1 (build it for the world `pipeline` of wit/pipeline.wit)")]
    NotAPipeline,
    #[error("the component could not be prepared: {0}")]
    Link(String),
    #[error("describe() failed: {0}")]
    Describe(String),
    /// No instance came free in time: the component was not looked at; worth retrying.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Manifest(String),
}

#[derive(Debug, thiserror::Error)]
#[error("the WebAssembly runtime could not start: {0}")]
pub struct RuntimeError(String);

/// A component compiled and linked, ready to instantiate; shared by every call.
pub struct Compiled {
    pub(crate) pre: PipelinePre<GuestState>,
    pub sha256: String,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    limits: Limits,
    slots: Arc<Semaphore>,
    clock: EpochClock,
    /// The gate to each pipeline id's records (see [`crate::records_gate`]).
    pub(crate) gates: Gates,
}

impl Runtime {
    /// `cache_dir`: where compiled code is kept between runs (none: compile every time).
    pub fn new(limits: Limits, cache_dir: Option<&Path>) -> Result<Arc<Self>, RuntimeError> {
        let fail = |e: wasmtime::Error| RuntimeError(format!("{e:#}"));
        // wasi:http's TLS asks rustls for the process's provider; with two compiled in (ring
        // here, aws-lc-rs for the server's own client) none is chosen and the first https
        // request of a guest panicked. An earlier install (by anyone) is kept.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut pool = PoolingAllocationConfig::default();
        let instances = limits.instances.max(1);
        pool.total_component_instances(instances)
            .total_core_instances(instances * 16)
            .total_memories(instances * 4)
            .total_tables(instances * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(16)
            .table_elements(100_000)
            .max_memory_size(limits.memory_bytes)
            .max_core_instance_size(4 << 20)
            .max_component_instance_size(4 << 20);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .wasm_component_model(true)
            .memory_reservation(limits.memory_bytes as u64)
            .memory_guard_size(64 << 10)
            .memory_init_cow(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError(format!("{}: {e}", dir.display())))?;
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(wasmtime::Cache::new(cache).map_err(fail)?));
        }
        let engine = Engine::new(&config).map_err(fail)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(fail)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(fail)?;
        bindings::host::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(fail)?;
        bindings::types::add_to_linker::<_, wasmtime::component::HasSelf<GuestState>>(&mut linker, |s| s)
            .map_err(fail)?;
        let clock = EpochClock::start(&engine).map_err(|e| RuntimeError(e.to_string()))?;
        let slots = Arc::new(Semaphore::new(instances as usize));
        Ok(Arc::new(Runtime { engine, linker, limits, slots, clock, gates: Gates::default() }))
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// For a removal: once this returns, no call of a pipeline loaded with these records
    /// (`records_namespace`) so far reads or writes one, so the records deleted next stay
    /// deleted.
    pub async fn close_records(&self, namespace: &str) {
        self.gates.close(namespace).await;
    }

    /// Checks and compiles a component (seconds for a large one: call off the async threads).
    pub fn compile(&self, bytes: &[u8]) -> Result<Compiled, LoadError> {
        if bytes.len() > self.limits.component_bytes {
            return Err(LoadError::TooLarge { size: bytes.len(), max: self.limits.component_bytes });
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::Invalid("it does not start with the WebAssembly magic number".into()));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::Invalid(format!("{e:#}")))?;
        let ty = component.component_type();
        if let Some((name, _)) = ty.imports(&self.engine).find(|(name, _)| !check::import_allowed(name)) {
            return Err(LoadError::ForbiddenImport(name.to_string()));
        }
        if !ty.exports(&self.engine).any(|(name, _)| name.starts_with(check::GUEST_EXPORT)) {
            return Err(LoadError::NotAPipeline);
        }
        let pre = self.linker.instantiate_pre(&component).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = PipelinePre::new(pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        Ok(Compiled { pre, sha256: hex::encode(Sha256::digest(bytes)) })
    }

    /// Asks a compiled component what it is, in a store without network or records.
    pub async fn describe(&self, compiled: &Compiled) -> Result<Manifest, LoadError> {
        let mut call = self.call("(new)".into(), Grants::default()).await.map_err(|e| LoadError::Busy(e.message))?;
        let deadline = call.arm();
        let store = &mut call.store;
        let text = deadline
            .run(async {
                let instance = compiled.pre.instantiate_async(&mut *store).await?;
                instance.sluice_pipeline_guest().call_describe(&mut *store).await
            })
            .await
            .map_err(|e| LoadError::Describe(e.message))?;
        self.check_output("(new)", &text).map_err(|e| LoadError::Describe(e.message))?;
        Manifest::parse(&text).map_err(LoadError::Manifest)
    }

    /// A store for one call (or one answer), once an instance slot is free.
    pub(crate) async fn call(&self, pipeline: Arc<str>, grants: Grants) -> Result<Call, PipelineError> {
        let permit = tokio::time::timeout(self.limits.call_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| PipelineError::new(ErrorKind::Unavailable, "every WebAssembly instance is busy; try again"))?
            .map_err(|_| PipelineError::new(ErrorKind::Unavailable, "the WebAssembly runtime is stopping"))?;
        let mut store = Store::new(&self.engine, GuestState::new(pipeline, self.limits.memory_bytes, grants));
        store.limiter(|s| &mut s.limits);
        // Guests run on the thread of the HTTP worker that called them: at every tick the guest
        // hands the thread back to the worker's other requests, and is stopped once its call's
        // time is up. Stopped only then, one that spun held a worker (of two) for its whole call,
        // and a streamed answer's for minutes (found by a red team).
        store.epoch_deadline_callback(|store| match store.data().deadline {
            Some(at) if std::time::Instant::now() >= at => Ok(UpdateDeadline::Interrupt),
            _ => Ok(UpdateDeadline::Yield(1)),
        });
        Ok(Call { store, _permit: permit, _clock: self.clock.running(), timeout: self.limits.call_timeout })
    }

    pub(crate) fn check_output(&self, pipeline: &str, text: &str) -> Result<(), PipelineError> {
        if text.len() > self.limits.output_bytes {
            return Err(PipelineError::new(
                ErrorKind::Internal,
                format!(
                    "pipeline {pipeline} returned {} bytes; at most {} are accepted",
                    text.len(),
                    self.limits.output_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// One instance's store and its slot. Before each guest call, [`Call::arm`] sets its deadline.
pub(crate) struct Call {
    pub store: Store<GuestState>,
    _permit: OwnedSemaphorePermit,
    _clock: Running,
    timeout: Duration,
}

impl Call {
    pub fn arm(&mut self) -> Deadline {
        self.store.data_mut().deadline = Some(std::time::Instant::now() + self.timeout);
        self.store.set_epoch_deadline(1);
        Deadline { pipeline: Arc::clone(&self.store.data().pipeline), timeout: self.timeout }
    }
}

/// The deadline of one guest call.
pub(crate) struct Deadline {
    pipeline: Arc<str>,
    timeout: Duration,
}

impl Deadline {
    /// Awaits a guest call; a trap, a timeout or an exhausted memory becomes an error that
    /// names the pipeline and what happened.
    pub async fn run<T>(
        self,
        call: impl std::future::Future<Output = wasmtime::Result<T>>,
    ) -> Result<T, PipelineError> {
        // The epoch stops guest code; this stops a guest waiting on the host (a slow HTTP answer).
        // A few ticks later than the epoch's own stop, which names what happened better.
        match tokio::time::timeout(self.timeout + TICK * 5, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(trap_error(&self.pipeline, &error, self.timeout)),
            Err(_) => Err(PipelineError::new(
                ErrorKind::Timeout,
                format!("pipeline {} did not answer within {} s", self.pipeline, self.timeout.as_secs_f32()),
            )),
        }
    }
}

fn trap_error(pipeline: &str, error: &wasmtime::Error, timeout: Duration) -> PipelineError {
    if let Some(wasmtime::Trap::Interrupt) = error.downcast_ref::<wasmtime::Trap>() {
        return PipelineError::new(
            ErrorKind::Timeout,
            format!("pipeline {pipeline} ran longer than {} s and was stopped", timeout.as_secs_f32()),
        );
    }
    let text = format!("{error:#}");
    if text.contains("growing memory") || text.contains("memory") && text.contains("limit") {
        return PipelineError::new(
            ErrorKind::Internal,
            format!("pipeline {pipeline} exceeded its memory limit and was stopped"),
        );
    }
    // The outermost context is wasmtime's "error while executing at wasm backtrace"; what
    // happened is the root cause (a trap's name, a value that could not be lifted).
    let cause = error.root_cause().to_string();
    let first = cause.lines().next().unwrap_or("").chars().take(300).collect::<String>();
    PipelineError::new(ErrorKind::Internal, format!("pipeline {pipeline} failed: {first}"))
}
