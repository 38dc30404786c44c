//! What the operator reads in the log of the real binary: why a request was refused (each
//! cause once, naming where the key came from) and how each streamed answer ended.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::cli::{start_binary, wait_for_port};
use crate::manifold::fixture;

/// The binary on a free port with a generated key (read from the data dir), logging in
/// `format` (`json` or `text`).
struct Served {
    child: std::process::Child,
    url: String,
    key: String,
}

impl Served {
    fn start(dir: &std::path::Path, upstream: &str, format: &str) -> Served {
        Served::start_with(dir, upstream, format, &[])
    }

    /// [`Served::start`] with more environment.
    fn start_with(dir: &std::path::Path, upstream: &str, format: &str, env: &[(&str, &str)]) -> Served {
        let base_url = format!("{upstream}/v1");
        let ours = [
            ("SLUICE_LOG_FORMAT", format),
            ("OPENAI_API_KEY", "sk-upstream-test"),
            ("OPENAI_API_BASE_URL", base_url.as_str()),
            ("SLUICE_VALVES__OPENAI_RESPONSES__FETCH_MODELS", "false"),
        ];
        let env: Vec<(&str, &str)> = ours.into_iter().chain(env.iter().copied()).collect();
        let (child, port) = start_binary(dir, &env, Stdio::piped());
        wait_for_port(port, Instant::now() + Duration::from_secs(30), "sluice did not start");
        let key = std::fs::read_to_string(dir.join("data/api_key")).unwrap();
        Served { child, url: format!("http://127.0.0.1:{port}"), key }
    }

    /// `body` posted to `path` with the key.
    async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        let url = format!("{}{path}", self.url);
        reqwest::Client::new().post(url).bearer_auth(&self.key).json(body).send().await.unwrap()
    }

    /// Stops it (SIGTERM-free: the log is complete once each request was answered) and
    /// returns its log.
    fn stop_text(mut self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        let _ = self.child.kill();
        let mut text = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
        let _ = self.child.wait();
        text
    }

    /// [`Served::stop_text`] of a JSON log, one value per line.
    fn stop(self) -> Vec<serde_json::Value> {
        self.stop_text().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

#[tokio::test]
async fn refusals_name_each_cause_and_where_the_key_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let served = Served::start(dir.path(), &upstream.uri(), "json");
    let client = reqwest::Client::new();
    let models = format!("{}/models", served.url);
    client.get(&models).send().await.unwrap();
    client.get(&models).bearer_auth("sk-wrong").send().await.unwrap();
    client.get(&models).header("authorization", "Basic abc").send().await.unwrap();
    // The same cause again within 10 s: at debug level only.
    client.get(&models).bearer_auth("sk-wrong-again").send().await.unwrap();
    let lines = served.stop();
    let refusals: Vec<String> = lines
        .iter()
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["message"].as_str().filter(|m| m.starts_with("request refused: ")).map(str::to_owned))
        .collect();
    assert_eq!(refusals.len(), 3, "{refusals:#?}");
    assert!(refusals[0].contains("no `Authorization: Bearer <key>` header"), "{refusals:#?}");
    assert!(refusals[1].contains("does not match the key generated into"), "{refusals:#?}");
    assert!(refusals[2].contains("is not `Bearer <key>`"), "{refusals:#?}");
}

#[tokio::test]
async fn a_streamed_answer_logs_how_long_it_took_and_how_it_ended() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/event-stream")
                .set_body_raw(fixture("1_plain_text.sse"), "text/event-stream")
                .set_delay(Duration::from_millis(700)),
        )
        .mount(&upstream)
        .await;
    let served = Served::start(dir.path(), &upstream.uri(), "json");
    let body = serde_json::json!({"model": "openai_responses.gpt-4.1", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let answer = served.post("/chat/completions", &body).await.text().await.unwrap();
    assert!(answer.ends_with("data: [DONE]\n\n"), "{answer}");
    let lines = served.stop();
    let ended: Vec<&serde_json::Value> = lines.iter().filter(|l| l["message"] == "answer ended").collect();
    assert_eq!(ended.len(), 1, "{lines:#?}");
    assert_eq!(ended[0]["outcome"], "completed");
    assert!(ended[0]["duration_ms"].as_u64().unwrap() >= 700, "{:?}", ended[0]);
    assert_eq!(ended[0]["bytes"].as_u64().unwrap(), answer.len() as u64);
    assert!(ended[0]["span"]["request_id"].is_string() || ended[0]["request_id"].is_string(), "{:?}", ended[0]);
}

/// The default text log quotes a caller in a refusal (a valves update naming an unknown valve):
/// a newline, a terminal escape or a line separator in that name stays inside the one line,
/// escaped, and cannot print a line of the caller's making. Found by trying it: tracing's own
/// text fields escaped none of them outside the message.
/// `RUST_LOG` text that tracing-subscriber's parser panics on (a space, then a letter that is
/// not ASCII; found by a reviewer), and one that is no filter: the binary starts, says it set
/// `RUST_LOG` aside and why, and logs by its level setting (`info`: a line per request).
#[tokio::test]
async fn a_rust_log_that_cannot_be_read_is_set_aside_with_a_word() {
    for (asked, why) in
        [(" é=debug", "it holds characters other than ASCII"), ("sluice=loud", "it is not a valid filter")]
    {
        let dir = tempfile::tempdir().unwrap();
        let upstream = MockServer::start().await;
        let served = Served::start_with(dir.path(), &upstream.uri(), "text", &[("RUST_LOG", asked)]);
        let url = format!("{}/v1/models", served.url);
        let res = reqwest::Client::new().get(url).bearer_auth(&served.key).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let log = served.stop_text();
        assert!(log.contains(&format!("RUST_LOG set aside ({why}): logging by the level setting")), "{log}");
        assert!(log.contains("handled route=/v1/models"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A valves file the operator wrote with a key in it, readable by others: the log says so
/// (without the key) and the file is left as it is.
#[cfg(unix)]
#[tokio::test]
async fn a_valves_file_holding_a_key_that_others_may_read_is_said() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let file = dir.path().join("valves/openpipe_reporting.toml");
    std::fs::write(&file, "OPENPIPE_API_KEY = \"opk-readable-by-all-0123456789\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let upstream = MockServer::start().await;
    let log = Served::start(dir.path(), &upstream.uri(), "text").stop_text();
    let line =
        log.lines().find(|l| l.contains("holds a key and others on this machine may read it")).unwrap_or_default();
    assert!(line.contains("openpipe_reporting.toml") && line.contains("mode=\"644\""), "{log}");
    assert!(!log.contains("opk-readable-by-all"), "{log}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
}

/// The same for the settings file, when it holds the key: said at start, without the key.
#[cfg(unix)]
#[tokio::test]
async fn a_settings_file_holding_the_key_that_others_may_read_is_said() {
    use std::os::unix::fs::PermissionsExt;
    const KEY: &str = "k-settings-readable-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, format!("api_key = \"{KEY}\"\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Where `Served` reads the key from (the server takes it from sluice.toml).
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::set_permissions(dir.path().join("data"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(dir.path().join("data/api_key"), KEY).unwrap();
    let upstream = MockServer::start().await;
    let served = Served::start(dir.path(), &upstream.uri(), "text");
    let res = reqwest::Client::new().get(format!("{}/v1/models", served.url)).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let log = served.stop_text();
    let line = log.lines().find(|l| l.contains("sluice.toml holds api_key and others")).unwrap_or_default();
    assert!(line.contains("WARN") && line.contains("(mode 644)") && line.contains("chmod 600"), "{log}");
    assert!(!log.contains(KEY), "{log}");
}

#[tokio::test]
async fn a_caller_cannot_forge_a_line_in_the_text_log() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let served = Served::start(dir.path(), &upstream.uri(), "text");
    let forged = "2026-01-01T00:00:00.000000Z  WARN sluice::auth: request refused";
    let body = serde_json::json!({ format!("x\n{forged}\u{1b}[2J\u{2028}\r"): 1 });
    let res = served.post("/openai_responses/valves/update", &body).await;
    assert_eq!(res.status(), 422);
    let log = served.stop_text();
    let quoted: Vec<&str> = log.lines().filter(|l| l.contains(forged)).collect();
    assert_eq!(quoted.len(), 1, "{log}");
    assert!(quoted[0].contains("status=422"), "{log}");
    assert!(quoted[0].contains(&format!(r"x\n{forged}\u{{1b}}[2J\u{{2028}}\r")), "{log}");
    assert!(log.lines().all(|l| !l.starts_with(forged)), "{log}");
    assert!(!log.contains(['\u{1b}', '\u{2028}', '\r']), "{log:?}");
}

/// The same refusal in the JSON log, the valve's name 100,000 escape characters after a
/// quote, a brace and a newline, and a request whose method is 8,000 letters (logged in the
/// request's span): every line is one JSON object, shows no control character raw and stays
/// under the 16 KiB at which Docker splits a line into records that are not JSON. Found by
/// trying it: tracing-subscriber's JSON writer made a line of 60 KB.
#[tokio::test]
async fn a_caller_cannot_break_a_json_line_or_make_one_docker_would_split() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockServer::start().await;
    let served = Served::start(dir.path(), &upstream.uri(), "json");
    let start = "x\"}\n{\"level\":\"ERROR\",\"message\":\"forged\"}\u{2028}";
    let body = serde_json::json!({ format!("{start}{}", "\u{1b}".repeat(100_000)): 1 });
    let res = served.post("/openai_responses/valves/update", &body).await;
    assert_eq!(res.status(), 422);
    let method = "A".repeat(8000);
    let head = format!(
        "{method} /models HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer {}\r\n\r\n",
        served.key
    );
    let answer = crate::helpers::raw_exchange(&served.url, head.as_bytes(), 1).await;
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:.200}");
    let log = served.stop_text();
    let mut lines = Vec::new();
    for line in log.lines() {
        assert!(line.len() < 16 * 1024, "a line of {} bytes: {line:.300}", line.len());
        assert!(!line.contains(|c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')), "{line:.300}");
        lines.push(serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line:.300}")));
    }
    // The caller's text is there as it was sent, up to where it was cut.
    let quoting: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l.as_object().unwrap().values().any(|v| v.as_str().is_some_and(|s| s.contains(start))))
        .collect();
    assert!(!quoting.is_empty(), "{log:.2000}");
    assert!(quoting.iter().any(|l| l["status"] == 422), "{quoting:#?}");
    let with_method: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["span"]["method"].as_str().is_some_and(|m| m.starts_with("AAAA"))).collect();
    assert!(!with_method.is_empty(), "{log:.2000}");
    assert!(with_method.iter().all(|l| l["span"]["method"].as_str().unwrap().ends_with("bytes)")), "{with_method:#?}");
}
