use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use serde_json::Value;
use sluice::config::Settings;
use sluice::startup::{Application, Shutdown};
use sluice::valves::ValvesEnv;
use sluice_sdk::{Pipeline, ValvesCell};

use crate::pipelines::{BareFilter, Probe, ScriptedFilter, ScriptedManifold, ScriptedPipe};

pub const KEY: &str = "test-key-1234567890";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        sluice::telemetry::init("debug", sluice::config::LogFormat::Text);
    }
});

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub valves_dir: PathBuf,
    pub probe: Arc<Probe>,
    pub shutdown: Shutdown,
    pub data_dir: PathBuf,
    running: tokio::task::JoinHandle<std::io::Result<()>>,
    _dirs: Option<tempfile::TempDir>,
}

#[derive(Default)]
pub struct Options {
    pub env: HashMap<String, String>,
    pub valves_files: Vec<(&'static str, String)>,
    pub keepalive_secs: u64,
    pub max_body_bytes: Option<usize>,
    pub grace_secs: Option<u64>,
    /// Also register the real `openai_responses` manifold (configure it with `valves_files`).
    pub manifold: bool,
    /// Also register the real `openpipe_reporting` filter with these delivery timings.
    pub openpipe: Option<sluice_openpipe_reporting::Tuning>,
    /// Use this directory (valves/ and data/ inside) instead of a fresh one, to restart an app.
    pub root: Option<PathBuf>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await.expect("app starts")
}

pub async fn spawn_app_with(options: Options) -> Result<TestApp, String> {
    LazyLock::force(&TRACING);
    let dirs = match options.root {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| e.to_string())?),
    };
    let root = match (&options.root, &dirs) {
        (Some(root), _) => root.clone(),
        (None, Some(d)) => d.path().to_path_buf(),
        (None, None) => return Err("no root".into()),
    };
    let valves_dir = root.join("valves");
    std::fs::create_dir_all(&valves_dir).map_err(|e| e.to_string())?;
    for (name, text) in &options.valves_files {
        std::fs::write(valves_dir.join(name), text).map_err(|e| e.to_string())?;
    }
    let settings = Settings {
        host: "127.0.0.1".into(),
        port: 0,
        valves_dir: valves_dir.clone(),
        data_dir: root.join("data"),
        api_key: Some(sluice_sdk::Secret::new(KEY)),
        keepalive_secs: options.keepalive_secs,
        workers: 1,
        max_body_bytes: options.max_body_bytes.unwrap_or(Settings::default().max_body_bytes),
        shutdown_grace_secs: options.grace_secs.unwrap_or(5),
        ..Settings::default()
    };
    let probe = Arc::new(Probe::default());
    let pipelines: Vec<Arc<dyn Pipeline>> = vec![
        Arc::new(ScriptedPipe { valves: ValvesCell::default(), probe: Arc::clone(&probe) }),
        Arc::new(ScriptedFilter { valves: ValvesCell::default() }),
        Arc::new(BareFilter),
        Arc::new(ScriptedManifold),
    ];
    let mut pipelines = pipelines;
    if options.manifold {
        pipelines.push(Arc::new(sluice_openai_responses::OpenAIResponses::new()));
    }
    if let Some(tuning) = options.openpipe {
        pipelines.push(Arc::new(sluice_openpipe_reporting::OpenPipeReporting::with_tuning(tuning)));
    }
    let app = Application::build(settings, pipelines, ValvesEnv::Map(options.env)).await.map_err(|e| e.to_string())?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown();
    let running = tokio::spawn(app.run_until_stopped());
    let data_dir = root.join("data");
    Ok(TestApp { address, client: reqwest::Client::new(), valves_dir, probe, shutdown, data_dir, running, _dirs: dirs })
}

impl TestApp {
    /// Stops the app as SIGTERM would and waits until every pipeline has shut down.
    pub async fn stop(self) {
        self.shutdown.draining.cancel();
        let _ = self.running.await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(KEY).send().await.expect("request sent")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(KEY).json(body).send().await.expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub fn valves_file(&self, id: &str) -> String {
        std::fs::read_to_string(self.valves_dir.join(format!("{id}.toml"))).unwrap_or_default()
    }
}

/// Status and JSON body of a response, asserting the JSON content type.
pub async fn json_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = res.text().await.expect("body");
    assert!(ct.starts_with("application/json"), "content-type {ct:?} for {status} {text}");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// Replaces the per-answer chunk id and timestamps so streams compare with golden files.
pub fn normalize_sse(text: &str) -> String {
    let mut out = text.to_string();
    for line in text.lines() {
        let Some(json) = line.strip_prefix("data: ") else { continue };
        let Ok(value) = serde_json::from_str::<Value>(json) else { continue };
        if let Some(id) = value.get("id").and_then(Value::as_str) {
            out = out.replace(id, "ID");
        }
        if let Some(created) = value.get("created").and_then(Value::as_u64) {
            out = out.replace(&format!("\"created\": {created}"), "\"created\": 0");
        }
    }
    out
}

/// Compares with `tests/api/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/golden").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing golden file {}", path.display()));
    assert_eq!(actual, expected, "stream differs from {}", path.display());
}
