//! `sluice healthcheck`: the container's health probe (no curl in the image). Silent when
//! healthy; says why otherwise, which `docker inspect` shows.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;

pub async fn run(settings: &Settings) -> ExitCode {
    let url = super::local_url(settings, "/");
    let client = match super::local_client(Duration::from_secs(3), "sluice healthcheck") {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            complain!("sluice healthcheck: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            let why = if e.is_timeout() {
                "no answer within 3 s".to_string()
            } else if e.is_connect() {
                "nothing listens there (is the server running, on this port?)".to_string()
            } else {
                e.to_string()
            };
            complain!("sluice healthcheck: {url}: {why}");
            ExitCode::FAILURE
        }
    }
}
