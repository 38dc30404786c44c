//! The real `sluice` binary in a child process, on a free port, logging to a file: for what
//! only a process shows (kill -9, SIGTERM, open descriptors, what reaches the log).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::KEY;

pub struct Binary {
    child: std::process::Child,
    pub base: String,
    log_path: PathBuf,
}

impl Binary {
    /// Starts sluice with its data and valves under `dir` and waits until it answers.
    /// `SLUICE_LOG_LEVEL=trace` unless `env` says otherwise, so every test that runs the binary
    /// also checks what the most verbose log shows.
    pub async fn start(dir: &Path, env: &[(&str, String)]) -> Binary {
        std::fs::create_dir_all(dir.join("valves")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log_path = dir.join(format!("sluice-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .env_clear()
            .env("SLUICE_HOST", "127.0.0.1")
            .env("SLUICE_PORT", port.to_string())
            .env("SLUICE_DATA_DIR", dir.join("data"))
            .env("SLUICE_VALVES_DIR", dir.join("valves"))
            .env("SLUICE_API_KEY", KEY)
            .env("SLUICE_LOG_LEVEL", "trace")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let server = Binary { child, base, log_path };
        for _ in 0..400 {
            if reqwest::get(&server.base).await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sluice did not start: {}", server.kill());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        reqwest::Client::new().post(format!("{}{path}", self.base)).bearer_auth(KEY).json(&body).send().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new().get(format!("{}{path}", self.base)).bearer_auth(KEY).send().await.unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log once it holds `needle`, or as it is after two seconds: lines reach the file
    /// from sluice's writer thread a moment after they are logged, so a line logged while a
    /// request was answered may not be there yet when its answer arrives.
    pub async fn log_showing(&self, needle: &str) -> String {
        for _ in 0..100 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log()
    }

    /// A memory figure of the process in kB: `VmRSS` (resident now), `VmHWM` (resident at most).
    pub fn memory_kb(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Open file descriptors (sockets included) of the process.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// SIGTERM, as `docker stop` sends; the process is left to exit by itself.
    pub fn terminate(&self) {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
    }

    /// Waits up to `limit` for the process to exit; its exit code, if it did.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// SIGKILL: no shutdown hook runs. The log, checked for secrets.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        if !std::thread::panicking() {
            crate::helpers::assert_no_secret_in(&log);
        }
        log
    }
}

/// A failing assertion must not leave the server running.
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            crate::helpers::assert_no_secret_in(&self.log());
        }
    }
}
