//! Builds the application from settings and a list of pipelines, binds it, and runs it until a
//! signal. `main` and the tests both go through [`Application::build`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use sluice_sdk::{Pipeline, PipelineContext};
use tokio_util::sync::CancellationToken;

use crate::auth::{require_key, ApiKey};
use crate::body::BodyConfig;
use crate::components::{self, Components, Sources};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::normal_path::NormalPath;
use crate::registry::{LiveRegistry, Registry, RegistryError};
use crate::routes;
use crate::sse::StreamOptions;
use crate::store::{StoreAdmin, Stores};
use crate::telemetry::{catch_panics, trace_requests};
use crate::valves::{replicas, ValvesEnv, ValvesService};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    ValvesDir(String),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    DataDirLocked(#[from] crate::data_lock::LockError),
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    SharedValves(#[from] crate::valves::replicas::PullError),
    #[error("pipeline {id} failed to start: {message}")]
    Pipeline { id: String, message: String },
    #[error("WebAssembly pipelines: {0}")]
    Wasm(String),
}

pub struct Application {
    port: u16,
    server: Server,
    api_key: ApiKey,
    registry: Arc<LiveRegistry>,
    shutdown: Shutdown,
    grace: Duration,
    /// Written out at the end: what a shared store holds in memory.
    store: Arc<dyn crate::store::StoreAdmin>,
    _data_lock: crate::data_lock::DataDirLock,
}

/// Two phases of stopping: `draining` (stop accepting, let streams run) and `deadline`
/// (end the streams still open with an error line).
#[derive(Clone, Default)]
pub struct Shutdown {
    pub draining: CancellationToken,
    pub deadline: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        mut pipelines: Vec<Arc<dyn Pipeline>>,
        valves_env: ValvesEnv,
    ) -> Result<Application, StartupError> {
        let data_dir = settings.data_dir.clone();
        let dir_error = |source| StartupError::DataDir { path: data_dir.display().to_string(), source };
        crate::private::data_dir(&data_dir).map_err(dir_error)?;
        // Before anything else touches the directory: the key, the store, the workers.
        let data_lock = crate::data_lock::acquire(&data_dir)?;
        let api_key = ApiKey::resolve(&settings).map_err(dir_error)?;
        // The port first: a replica that cannot listen must stop before its workers start
        // (a delivery worker of a process about to exit would claim reports and leave them).
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = bind(&address).map_err(|source| StartupError::Bind { address: address.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { address, source })?.port();
        crate::valves::file::remove_stale_temps(&settings.valves_dir);
        if crate::private::anyone_may_write(&settings.valves_dir) {
            // Whoever can write there can replace a valves file: a BASE_URL of theirs, say.
            tracing::warn!(
                path = %settings.valves_dir.display(),
                "the valves directory is writable by every user, any of whom could replace the valves files: make it \
                 writable only by sluice's user (chmod o-w)"
            );
        }
        let shutdown = Shutdown::default();
        let stores = Stores::open(&settings, &data_dir, shutdown.draining.clone()).await?;
        tracing::info!(store = stores.admin.kind(), "store opened");
        if let Err(e) = crate::valves::file::check_writable(&settings.valves_dir) {
            let message = unwritable_valves(&settings.valves_dir, &e);
            // Replicas rewrite their files from the shared text at start: they cannot run so.
            if stores.shared_valves.is_some() {
                return Err(StartupError::ValvesDir(message));
            }
            tracing::warn!("{message}");
        }
        // Added WebAssembly pipelines join the built-in ones before any valves are read.
        let builtin: std::collections::HashSet<String> = pipelines.iter().map(|p| p.id().to_string()).collect();
        let wasm = if settings.wasm_pipelines {
            let runtime =
                sluice_wasm::Runtime::new(settings.wasm_limits(), components::cache_dir(&data_dir).as_deref())
                    .map_err(|e| StartupError::Wasm(e.to_string()))?;
            let (added, loaded, version) = components::load_all(&runtime, stores.kv.as_ref(), &builtin)
                .await
                .map_err(|e| StartupError::Wasm(e.to_string()))?;
            pipelines.extend(added);
            let fetcher = components::fetch::Fetcher::new(settings.wasm_fetch_ca_file.as_deref())
                .map_err(|e| StartupError::Wasm(e.to_string()))?;
            components::python::clear_leftovers(&components::builds_dir(&data_dir));
            let sources = Sources {
                fetcher,
                componentize_py: settings.componentize_py.clone(),
                builds: components::builds_dir(&data_dir),
                intake: Arc::new(tokio::sync::Semaphore::new(components::INTAKE)),
            };
            Some((runtime, loaded, version, sources))
        } else {
            None
        };
        // Several replicas: the valves files become the shared text before they are read.
        let versions = match &stores.shared_valves {
            Some(shared) => replicas::pull(shared.as_ref(), &pipelines, &settings.valves_dir, &valves_env).await?,
            None => Default::default(),
        };
        let registry = Arc::new(LiveRegistry::new(Registry::build(pipelines, &settings.valves_dir, &valves_env)?));
        tokio::spawn(sweep_expired(Arc::clone(&stores.admin), shutdown.draining.clone()));
        let ctx = PipelineContext {
            store: Arc::clone(&stores.kv),
            outbox: Arc::clone(&stores.outbox),
            shutdown: shutdown.draining.clone(),
        };
        for module in registry.load().modules() {
            module
                .pipeline
                .on_startup(&ctx)
                .await
                .map_err(|e| StartupError::Pipeline { id: module.id().to_string(), message: e.to_string() })?;
            tracing::info!(pipeline = module.id(), kind = module.kind().as_str(), "pipeline started");
        }
        let (components, sources) = match wasm {
            Some((runtime, loaded, version, sources)) => {
                let setup = components::Setup {
                    runtime,
                    live: Arc::clone(&registry),
                    store: Arc::clone(&stores.kv),
                    ctx,
                    shared_valves: stores.shared_valves.clone(),
                    valves_dir: settings.valves_dir.clone(),
                    env: valves_env.clone(),
                    builtin,
                };
                let components = Arc::new(Components::new(setup, loaded, version));
                tokio::spawn(Arc::clone(&components).follow(shutdown.draining.clone()));
                (Some(web::Data::from(components)), Some(web::Data::new(sources)))
            }
            None => (None, None),
        };
        let valves =
            Arc::new(ValvesService::new(Arc::clone(&registry), valves_env, stores.shared_valves.clone(), versions));
        tokio::spawn(replicas::follow(Arc::clone(&valves), shutdown.draining.clone()));

        let services = Services {
            registry: web::Data::from(Arc::clone(&registry)),
            valves: web::Data::from(valves),
            metrics: web::Data::new(Metrics::default()),
            models: web::Data::new(routes::ModelsCache::default()),
            store: web::Data::from(Arc::clone(&stores.admin)),
            streams: web::Data::new(StreamOptions {
                keepalive: (settings.keepalive_secs > 0).then(|| Duration::from_secs(settings.keepalive_secs)),
                deadline: shutdown.deadline.clone(),
            }),
            key: web::Data::new(api_key.clone()),
            components,
            sources,
        };
        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let store = Arc::clone(&stores.admin);
        let server = run(listener, services, &settings, grace)?;
        tracing::info!(port, pipelines = registry.load().modules().len(), "sluice listening");
        Ok(Application { port, server, api_key, registry, shutdown, grace, store, _data_lock: data_lock })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until SIGINT/SIGTERM or until [`Shutdown::draining`] is cancelled, then drains.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        tokio::spawn(stop_on_signal(handle, shutdown, self.grace));
        // When the stop began: what is held is written within the same grace period, not a
        // second one after it (an orchestrator kills at the end of the first).
        let stopping = Arc::new(std::sync::OnceLock::new());
        let seen = Arc::clone(&stopping);
        let draining = self.shutdown.draining.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            let _ = seen.set(std::time::Instant::now());
        });
        let result = self.server.await;
        for module in self.registry.load().modules() {
            module.pipeline.on_shutdown().await;
        }
        let spent = stopping.get().map_or(Duration::ZERO, |at: &std::time::Instant| at.elapsed());
        self.store.write_held(self.grace.saturating_sub(spent).max(HELD_AT_LEAST)).await;
        tracing::info!("sluice stopped");
        result
    }
}

/// The least time held reports get at the end, even after a stop that used its grace period.
const HELD_AT_LEAST: Duration = Duration::from_secs(2);

/// What to do about a valves directory this process cannot write.
fn unwritable_valves(dir: &std::path::Path, e: &std::io::Error) -> String {
    #[cfg(unix)]
    // Not the owner of /proc/self: a process that cannot be dumped finds it root's.
    let user = format!(" (uid {})", rustix::process::geteuid().as_raw());
    #[cfg(not(unix))]
    let user = String::new();
    format!(
        "the valves directory {} is not writable by this process{user}: {e}. Saving valves from Open WebUI \
         will fail. Make it writable for this user; in a container, use a named volume, or chown the host \
         directory to the container's uid (10001 in sluice's image)",
        dir.display()
    )
}

/// Expired records are never returned, but they take space: captures that never saw their
/// outlet, replay records past their TTL. Swept every ten minutes.
async fn sweep_expired(store: Arc<dyn StoreAdmin>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = stop.cancelled() => return,
        }
        match store.purge_expired().await {
            Ok(n) if n > 0 => tracing::debug!(removed = n, "expired records swept"),
            Err(e) => tracing::warn!(error = %e, "expired records could not be swept"),
            _ => {}
        }
    }
}

async fn stop_on_signal(handle: ServerHandle, shutdown: Shutdown, grace: Duration) {
    tokio::select! {
        _ = signal() => tracing::info!(grace_secs = grace.as_secs(), "signal received, draining"),
        _ = shutdown.draining.cancelled() => tracing::info!("shutdown requested, draining"),
    }
    shutdown.draining.cancel();
    let deadline = shutdown.deadline.clone();
    tokio::spawn(async move {
        // A second signal (Ctrl-C again, or a supervisor that will not wait) ends the open
        // answers now, with their error line, instead of after the grace period.
        tokio::select! {
            _ = tokio::time::sleep(grace) => {}
            _ = signal() => tracing::warn!("second signal: ending open answers now"),
        }
        deadline.cancel();
    });
    handle.stop(true).await;
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Binds with a deep accept queue. std's `TcpListener::bind` asks for 128: when thousands of
/// clients connect at once (10,000 streams in the benchmark) the queue overflows, SYNs are
/// dropped and those clients wait a full second to retry. The kernel caps this at somaxconn.
fn bind(address: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address");
    for addr in address.to_socket_addrs()? {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if let Err(e) = socket.bind(&addr.into()) {
            last = e;
            continue;
        }
        socket.listen(4096)?;
        return Ok(socket.into());
    }
    Err(last)
}

/// The valves editor sends a few kilobytes; nothing else small takes a body.
const SMALL_BODY_BYTES: usize = 1024 * 1024;

/// Cross-origin access for the configured origins only, with the one header a browser must be
/// allowed to send (the key) and the methods the routes take.
fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "DELETE"])
        .allowed_headers([actix_web::http::header::AUTHORIZATION, actix_web::http::header::CONTENT_TYPE])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// What the handlers share, each registered on its own (`web::Data<T>`): a handler names what
/// it needs and nothing else.
#[derive(Clone)]
struct Services {
    registry: web::Data<LiveRegistry>,
    valves: web::Data<ValvesService>,
    metrics: web::Data<Metrics>,
    models: web::Data<routes::ModelsCache>,
    store: web::Data<dyn StoreAdmin>,
    streams: web::Data<StreamOptions>,
    key: web::Data<ApiKey>,
    /// Absent when WebAssembly pipelines are switched off: the routes that add them say so.
    components: Option<web::Data<Components>>,
    sources: Option<web::Data<Sources>>,
}

fn run(
    listener: TcpListener,
    services: Services,
    settings: &Settings,
    grace: Duration,
) -> Result<Server, StartupError> {
    let body = BodyConfig::new(
        settings.max_body_bytes,
        settings.max_json_values,
        Duration::from_secs(settings.body_timeout_secs),
        // Large bodies in flight at once: room for a few of the largest, never less than 64 MiB.
        (settings.max_body_bytes.saturating_mul(4)).max(64 << 20),
    );
    let small_body = web::Data::new(body.with_limit(SMALL_BODY_BYTES.min(settings.max_body_bytes)));
    let body = web::Data::new(body);
    let origins = settings.cors_allowed_origins.clone();
    let mut server = HttpServer::new(move || {
        let mut app = App::new();
        if let (Some(components), Some(sources)) = (&services.components, &services.sources) {
            app = app.app_data(components.clone()).app_data(sources.clone());
        }
        // Outermost last: trace → CORS (answers preflights) → a panic's 500 → path normalising
        // → key check.
        app.app_data(services.registry.clone())
            .app_data(services.valves.clone())
            .app_data(services.metrics.clone())
            .app_data(services.models.clone())
            .app_data(services.store.clone())
            .app_data(services.streams.clone())
            .app_data(services.key.clone())
            .app_data(body.clone())
            .wrap(from_fn(require_key))
            .wrap(NormalPath)
            .wrap(from_fn(catch_panics))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(trace_requests))
            .service(routes::health_check("/"))
            .service(
                web::scope("/v1")
                    .service(routes::health_check(""))
                    .configure(routes::configure)
                    .default_service(routes::under_ids(small_body.clone())),
            )
            .configure(routes::configure)
            .default_service(routes::under_ids(small_body.clone()))
    })
    // A client that closes its side has gone (nginx sees it the same way): its handler is
    // dropped, and with it every wait of the pipe (the first upstream event, retries, backoff),
    // instead of running on for a client that will never read the answer.
    .h1_allow_half_closed(false)
    // Streams are many small writes; without TCP_NODELAY, Nagle's algorithm and delayed ACKs
    // hold each one back (measured: 44 ms for a 200-chunk answer instead of about 1 ms).
    .on_connect(|conn, _| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
        }
    })
    .disable_signals()
    // Covers the grace period plus the final error lines of streams ended at the deadline.
    .shutdown_timeout(grace.as_secs() + 5);
    if settings.workers > 0 {
        server = server.workers(settings.workers);
    }
    let server = server
        .listen(listener)
        .map_err(|source| StartupError::Bind { address: format!("{}:{}", settings.host, settings.port), source })?
        .run();
    Ok(server)
}
