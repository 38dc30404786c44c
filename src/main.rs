//! `sluice` serves; `sluice check` validates settings and valves files; `sluice healthcheck`
//! asks a running server's `GET /` (for container health checks, with no curl in the image).

use std::process::ExitCode;

use sluice::config::Settings;
use sluice::registry::{self, Registry};
use sluice::startup::Application;
use sluice::telemetry;
use sluice::valves::ValvesEnv;

#[actix_web::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    let command = std::env::args().nth(1);
    match command.as_deref() {
        None | Some("serve") => serve(settings).await,
        Some("check") => check(&settings),
        Some("healthcheck") => healthcheck(&settings).await,
        Some(other) => {
            eprintln!("sluice: unknown command {other:?}; use `sluice`, `sluice check` or `sluice healthcheck`");
            ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    telemetry::init(&settings.log_level, settings.log_format);
    let app = match Application::build(settings, registry::builtin(), ValvesEnv::Process).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "sluice could not start");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
    }
}

fn check(settings: &Settings) -> ExitCode {
    match Registry::build(registry::builtin(), &settings.valves_dir, &ValvesEnv::Process) {
        Ok(registry) => {
            eprintln!("sluice: settings and {} pipeline(s) are valid", registry.modules().len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn healthcheck(settings: &Settings) -> ExitCode {
    let url = format!("http://127.0.0.1:{}/", settings.port);
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(3)).build();
    let ok = match client {
        Ok(c) => c.get(&url).send().await.is_ok_and(|r| r.status().is_success()),
        Err(_) => false,
    };
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
