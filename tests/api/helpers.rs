use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use serde_json::Value;
use sluice::config::Settings;
use sluice::startup::{Application, Shutdown};
use sluice::valves::ValvesEnv;
use sluice_sdk::{Pipeline, ValvesCell};

use crate::pipelines::{BareFilter, Probe, ScriptedFilter, ScriptedManifold, ScriptedPipe};

pub const KEY: &str = "test-key-1234567890";

/// Every secret the tests give sluice. No log line, at any level, may contain one.
pub const SECRETS: &[&str] = &[
    KEY,
    crate::manifold::OPENAI_KEY,
    "opk-test-7f3a9c51e2d84b06",
    "opk-crash-test-5e6f7a8b9c0d",
    "opk-kill-test-0a1b2c3d4e5f",
    "opk-live-5d41402abc4b2a76b9719d911017c592",
    "opk-rotated-7215ee9c7d9dc229d2921a40e899ec5f",
    "sk-openai-secret-0cc175b9c0f1b6a831c399e269772661",
    "opk-fuzz-9b2e4d6f8a1c3e5d",
    "opk-the-right-one",
    "opk-a-wrong-one",
    "sk-very-long-secret-value-1234",
];

/// Log lines that contained a secret, from any app of this test process.
static LEAKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Secrets a test adds to [`SECRETS`] (a pipeline's own keys), checked the same way.
static MORE_SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Adds a secret that no log line or response may contain from now on.
pub fn register_secret(secret: &str) {
    MORE_SECRETS.lock().unwrap_or_else(|e| e.into_inner()).push(secret.to_string());
}

/// [`SECRETS`] and the registered ones.
fn secrets() -> Vec<String> {
    let more = MORE_SECRETS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    SECRETS.iter().map(|s| s.to_string()).chain(more).collect()
}

/// Where the in-process apps' logs go: every line is scanned for [`SECRETS`]; with `TEST_LOG`
/// set it is also printed.
struct ScanningWriter;

impl std::io::Write for ScanningWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        if secrets().iter().any(|s| line.contains(s.as_str())) {
            LEAKS.lock().unwrap_or_else(|e| e.into_inner()).push(line.clone().into_owned());
        }
        if std::env::var_os("TEST_LOG").is_some() {
            eprint!("{line}");
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The whole suite runs with sluice's crates logging at `trace` (the `sluice` target covers
/// every `sluice_*` crate, a new pipeline's too) and every dependency at `debug` (HTTP server
/// and clients, wiremock), so a secret logged anywhere fails a test.
static TRACING: LazyLock<()> = LazyLock::new(|| {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::new("debug,sluice=trace");
    // The same cap as the binary's logging (sluice::telemetry), so the scan checks it.
    let cap = sluice::telemetry::secret_cap();
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| ScanningWriter).finish().with(cap).try_init();
});

/// Fails the calling test if any log line so far held a secret.
pub fn assert_no_secret_logged() {
    let leaks = LEAKS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(leaks.is_empty(), "secrets reached the log:\n{}", leaks.join(""));
}

/// A response's reason phrase, body and headers must not carry a secret either: buffers the
/// response, checks it, and hands back an equal one. Every request helper of [`TestApp`] goes
/// through this; streams read chunk by chunk use [`TestApp::post_streaming`].
pub async fn scanned(res: reqwest::Response) -> reqwest::Response {
    let status = res.status();
    let version = res.version();
    let headers = res.headers().clone();
    let reason =
        res.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    let body = res.bytes().await.expect("response body");
    let text = String::from_utf8_lossy(&body);
    let head = format!("{} {}\n{headers:?}", status.as_u16(), reason.as_deref().unwrap_or(""));
    for secret in secrets() {
        assert!(!text.contains(&secret), "a secret ({}…) reached a response body:\n{text}", &secret[..6]);
        assert!(!head.contains(&secret), "a secret ({}…) reached a status line or header:\n{head}", &secret[..6]);
    }
    let mut rebuilt = http::Response::new(body);
    *rebuilt.status_mut() = status;
    *rebuilt.version_mut() = version;
    *rebuilt.headers_mut() = headers;
    if let Some(reason) = reason {
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
            rebuilt.extensions_mut().insert(phrase);
        }
    }
    reqwest::Response::from(rebuilt)
}

/// The same check for a log file of the real binary.
pub fn assert_no_secret_in(log: &str) {
    for secret in secrets() {
        assert!(!log.contains(&secret), "a secret ({}…) reached the log:\n{log}", &secret[..6]);
    }
}

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
    /// Keep state in this PostgreSQL database (replica tests), with this lease.
    pub store_url: Option<String>,
    pub store_lease_secs: Option<u64>,
    pub cors_allowed_origins: Vec<String>,
    pub body_timeout_secs: Option<u64>,
    /// More pipelines to register (a new pipeline's tests register it here).
    pub pipelines: Vec<Arc<dyn Pipeline>>,
    /// `wasm_pipelines` (default: on, as in the server).
    pub wasm: Option<bool>,
    /// `componentize_py` (default: the server's).
    pub componentize_py: Option<String>,
    /// `wasm_call_timeout_secs` (default: the server's).
    pub wasm_call_timeout_secs: Option<u64>,
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
        store_url: options.store_url.as_deref().map(sluice_sdk::Secret::new),
        store_lease_secs: options.store_lease_secs.unwrap_or(300),
        cors_allowed_origins: options.cors_allowed_origins,
        body_timeout_secs: options.body_timeout_secs.unwrap_or(Settings::default().body_timeout_secs),
        wasm_pipelines: options.wasm.unwrap_or(true),
        componentize_py: options.componentize_py.unwrap_or_else(|| Settings::default().componentize_py),
        wasm_call_timeout_secs: options.wasm_call_timeout_secs.unwrap_or(Settings::default().wasm_call_timeout_secs),
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
    pipelines.extend(options.pipelines);
    let app = Application::build(settings, pipelines, ValvesEnv::Map(options.env)).await.map_err(|e| e.to_string())?;
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown();
    let running = tokio::spawn(app.run_until_stopped());
    let data_dir = root.join("data");
    Ok(TestApp { address, client: reqwest::Client::new(), valves_dir, probe, shutdown, data_dir, running, _dirs: dirs })
}

/// Every test that started an app checks the log when it is done with it.
impl Drop for TestApp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_secret_logged();
        }
    }
}

impl TestApp {
    /// Stops the app as SIGTERM would and waits until every pipeline has shut down.
    pub async fn stop(mut self) {
        self.shutdown.draining.cancel();
        let _ = (&mut self.running).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        scanned(self.client.get(self.url(path)).bearer_auth(KEY).send().await.expect("request sent")).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        scanned(self.post_streaming(path, body).await).await
    }

    /// Like [`Self::post_json`], without buffering: for tests that read a stream as it comes.
    pub async fn post_streaming(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(KEY).json(body).send().await.expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let res = self
            .client
            .post(self.url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        scanned(res).await
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

/// Status and `{"detail": ...}` of an error answer, after checking it also carries OpenAI's
/// `error` object with the same message (what OpenAI's SDKs read), so tests can compare the
/// reference's shape.
pub async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let (status, body) = json_of(res).await;
    let detail = body["detail"].clone();
    let error = &body["error"];
    assert!(error["type"].is_string() && error.get("param").is_some() && error.get("code").is_some(), "{body}");
    assert!(detail.as_str().is_some_and(|d| d.contains(error["message"].as_str().unwrap_or("\u{0}"))), "{body}");
    (status, serde_json::json!({"detail": detail}))
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

/// Appends `bytes` to `out` as one chunk of a chunked HTTP/1.1 body (its size in hex, the
/// bytes, CRLF): a size written by hand is easy to get wrong.
pub fn http_chunk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Sends `request` as raw bytes on a fresh connection, in `pieces` writes 20 ms apart (so the
/// server reads it in several chunks), and returns the whole answer ("" if none within 5 s).
/// A write the server refuses by closing is not an error: the answer says what happened.
pub async fn raw_exchange(address: &str, request: &[u8], pieces: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address.trim_start_matches("http://")).await.unwrap();
    socket.set_nodelay(true).unwrap();
    for (i, piece) in request.chunks(request.len().div_ceil(pieces.max(1)).max(1)).enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if socket.write_all(piece).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}
