//! Builds the application from settings and a list of pipelines, binds it, and runs it until a
//! signal. `main` and the tests both go through [`Application::build`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition, NormalizePath, TrailingSlash};
use actix_web::{web, App, HttpServer};
use sluice_sdk::{Pipeline, PipelineContext};
use tokio_util::sync::CancellationToken;

use crate::auth::{require_key, ApiKey};
use crate::backend::{StoreBackend, Stores};
use crate::body::BodyConfig;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::registry::{Registry, RegistryError};
use crate::routes;
use crate::sse::StreamOptions;
use crate::telemetry::trace_requests;
use crate::valves::ValvesEnv;

/// What every handler shares.
pub struct AppState {
    pub registry: Registry,
    pub valves_env: ValvesEnv,
    /// Valves writes and reloads go one at a time.
    pub valves_lock: tokio::sync::Mutex<()>,
    pub stream_options: StreamOptions,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn StoreBackend>,
    /// Versions of the shared valves this replica runs (several replicas only).
    pub valves_versions: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("pipeline {id} failed to start: {message}")]
    Pipeline { id: String, message: String },
}

pub struct Application {
    port: u16,
    server: Server,
    api_key: ApiKey,
    state: web::Data<AppState>,
    shutdown: Shutdown,
    grace: Duration,
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
        pipelines: Vec<Arc<dyn Pipeline>>,
        valves_env: ValvesEnv,
    ) -> Result<Application, StartupError> {
        let data_dir = settings.data_dir.clone();
        let dir_error = |source| StartupError::DataDir { path: data_dir.display().to_string(), source };
        crate::private::dir(&data_dir).map_err(dir_error)?;
        let api_key = ApiKey::resolve(&settings).map_err(dir_error)?;
        // The port first: a replica that cannot listen must stop before its workers start
        // (a delivery worker of a process about to exit would claim reports and leave them).
        let address = format!("{}:{}", settings.host, settings.port);
        let listener = bind(&address).map_err(|source| StartupError::Bind { address: address.clone(), source })?;
        let port = listener.local_addr().map_err(|source| StartupError::Bind { address, source })?.port();
        crate::valves::file::remove_stale_temps(&settings.valves_dir);
        let shutdown = Shutdown::default();
        let stores =
            Stores::open(&settings, &data_dir, shutdown.draining.clone()).await.map_err(StartupError::Store)?;
        tracing::info!(store = stores.backend.kind(), "store opened");
        // Several replicas: the valves files become the shared text before they are read.
        let valves_versions = crate::valves_sync::pull(stores.backend.as_ref(), &pipelines, &settings.valves_dir)
            .await
            .map_err(StartupError::Store)?;
        let registry = Registry::build(pipelines, &settings.valves_dir, &valves_env)?;
        tokio::spawn(sweep_expired(Arc::clone(&stores.backend), shutdown.draining.clone()));
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartupError::Http(e.to_string()))?;
        for module in registry.modules() {
            let dir = data_dir.join("pipelines").join(module.id());
            crate::private::dir(&dir).map_err(dir_error)?;
            let ctx = PipelineContext {
                http: http.clone(),
                data_dir: dir,
                store: Arc::clone(&stores.kv),
                outbox: Arc::clone(&stores.outbox),
                shutdown: shutdown.draining.clone(),
            };
            module
                .pipeline
                .on_startup(&ctx)
                .await
                .map_err(|e| StartupError::Pipeline { id: module.id().to_string(), message: e.to_string() })?;
            tracing::info!(pipeline = module.id(), kind = module.kind().as_str(), "pipeline started");
        }

        let state = web::Data::new(AppState {
            registry,
            valves_env,
            valves_lock: tokio::sync::Mutex::new(()),
            stream_options: StreamOptions {
                keepalive: (settings.keepalive_secs > 0).then(|| Duration::from_secs(settings.keepalive_secs)),
                deadline: shutdown.deadline.clone(),
            },
            metrics: Arc::new(Metrics::default()),
            store: Arc::clone(&stores.backend),
            valves_versions: std::sync::Mutex::new(valves_versions),
        });
        tokio::spawn(crate::valves_sync::follow(state.clone(), shutdown.draining.clone()));

        let grace = Duration::from_secs(settings.shutdown_grace_secs);
        let server = run(listener, state.clone(), api_key.clone(), &settings, grace)?;
        tracing::info!(port, pipelines = state.registry.modules().len(), "sluice listening");
        Ok(Application { port, server, api_key, state, shutdown, grace })
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
        let result = self.server.await;
        for module in self.state.registry.modules() {
            module.pipeline.on_shutdown().await;
        }
        tracing::info!("sluice stopped");
        result
    }
}

/// Expired records are never returned, but they take space: captures that never saw their
/// outlet, replay records past their TTL. Swept every ten minutes.
async fn sweep_expired(store: Arc<dyn StoreBackend>, stop: CancellationToken) {
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
        tokio::time::sleep(grace).await;
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

fn run(
    listener: TcpListener,
    state: web::Data<AppState>,
    api_key: ApiKey,
    settings: &Settings,
    grace: Duration,
) -> Result<Server, StartupError> {
    let key = web::Data::new(api_key);
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
        // Outermost last: trace → CORS (answers preflights) → path normalising → key check.
        App::new()
            .app_data(state.clone())
            .app_data(key.clone())
            .app_data(body.clone())
            .wrap(from_fn(require_key))
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(Condition::new(!origins.is_empty(), cors(&origins)))
            .wrap(from_fn(trace_requests))
            .service(web::resource("/").get(routes::health).head(routes::health))
            .service(
                web::scope("/v1")
                    .service(web::resource("").get(routes::health).head(routes::health))
                    .configure(|cfg| routes::configure(cfg, &small_body))
                    .default_service(web::to(routes::not_found)),
            )
            .configure(|cfg| routes::configure(cfg, &small_body))
            .default_service(web::to(routes::not_found))
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
