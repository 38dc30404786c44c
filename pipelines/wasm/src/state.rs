//! What one store (one call's instance) holds: an empty WASI context (no files, no
//! environment, no sockets), outbound HTTP behind the allow-list, the memory limit, and this
//! pipeline's handle on sluice's store.

use std::sync::Arc;

use sluice_sdk::KvStore;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::http_gate::HttpGate;

pub struct GuestState {
    pub pipeline: Arc<str>,
    /// The namespace of its records (see [`crate::records_namespace`]).
    pub(crate) records: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    gate: HttpGate,
    pub limits: StoreLimits,
    /// `None` while the component is being described (before it has a place in the store).
    pub kv: Option<Arc<dyn KvStore>>,
    /// This pipeline's secret valves, kept out of what it logs.
    pub secrets: Vec<String>,
    /// When the guest call under way must stop (set before each call).
    pub deadline: Option<std::time::Instant>,
}

impl GuestState {
    pub fn new(pipeline: Arc<str>, memory_bytes: usize, grants: Grants) -> Self {
        let Grants { allowed_hosts, kv, secrets, records } = grants;
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        GuestState {
            gate: HttpGate::new(Arc::clone(&pipeline), allowed_hosts),
            pipeline,
            records,
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).trap_on_grow_failure(true).build(),
            kv,
            secrets,
            deadline: None,
        }
    }
}

/// What one call may reach: the hosts its HTTP may go to, its records, and the secrets its
/// log lines are cleaned of.
#[derive(Default)]
pub struct Grants {
    pub allowed_hosts: Vec<String>,
    pub kv: Option<Arc<dyn KvStore>>,
    pub secrets: Vec<String>,
    /// The namespace of the pipeline's records in `kv`.
    pub records: Arc<str>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.gate }
    }
}
