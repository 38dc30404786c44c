//! `sluice` serves; `sluice check` validates settings and valves files; `sluice healthcheck`
//! asks a running server's `GET /` (for container health checks, with no curl in the image);
//! `sluice outbox` shows the durable queues (depth, dead letters) of the embedded store.

use std::process::ExitCode;

use sluice::config::Settings;
use sluice::registry::{self, Registry, RegistryError};
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
        Some("outbox") => outbox(&settings, std::env::args().skip(2).collect()).await,
        Some(other) => {
            eprintln!(
                "sluice: unknown command {other:?}; use `sluice`, `sluice check`, `sluice healthcheck` or `sluice outbox`"
            );
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

/// Every pipeline's valves file is checked on its own, so one run lists every problem; a
/// field's problem names the line it is set on.
fn check(settings: &Settings) -> ExitCode {
    let mut problems = 0usize;
    for pipeline in registry::builtin() {
        let id = pipeline.id().to_string();
        match Registry::build(vec![pipeline], &settings.valves_dir, &ValvesEnv::Process) {
            Ok(_) => eprintln!("ok     {id}"),
            Err(RegistryError::Valves { path, errors, .. }) => {
                for e in errors {
                    problems += 1;
                    let line = line_of(&path, &e.field).map(|l| format!(":{l}")).unwrap_or_default();
                    eprintln!("error  {path}{line}: {e}");
                }
            }
            Err(e) => {
                problems += 1;
                eprintln!("error  {id}: {e}");
            }
        }
    }
    if problems == 0 {
        if let Err(e) = Registry::build(registry::builtin(), &settings.valves_dir, &ValvesEnv::Process) {
            problems += 1;
            eprintln!("error  {e}");
        }
    }
    if problems == 0 {
        eprintln!("sluice: settings and every valves file are valid");
        ExitCode::SUCCESS
    } else {
        eprintln!("sluice: {problems} problem(s)");
        ExitCode::FAILURE
    }
}

/// The 1-based line where `field` is assigned in a TOML file, if it is.
fn line_of(path: &str, field: &str) -> Option<usize> {
    let key = field.split(['.', '[']).next().filter(|k| !k.is_empty())?;
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(key).or_else(|| l.strip_prefix(&format!("\"{key}\"")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

const OUTBOX_USAGE: &str = "usage: sluice outbox [--dead QUEUE [LIMIT]] [--requeue QUEUE]";

/// Queue depths, dead letters, and putting dead letters back in line, in whichever store the
/// settings name. Safe while the server runs (SQLite WAL lets a second process read and write;
/// PostgreSQL is shared anyway).
async fn outbox(settings: &Settings, args: Vec<String>) -> ExitCode {
    use std::io::Write;
    let path = settings.data_dir.join(sluice::store::STORE_FILE);
    if settings.store_url.is_none() && !path.exists() {
        eprintln!("sluice: no store at {} yet (the server creates it on first start)", path.display());
        return ExitCode::FAILURE;
    }
    let stores = match sluice::store::Stores::open(settings, &settings.data_dir, Default::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let now = sluice_sdk::clock::unix_ms();
    let mut out = std::io::stdout().lock();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => stores.admin.queues().await.map(|queues| {
            let _ = writeln!(out, "{:<24} {:>8} {:>8} {:>12}", "queue", "queued", "dead", "oldest (s)");
            for q in queues {
                let age = q.oldest_age(now).map(|a| a.as_secs().to_string());
                let _ = writeln!(out, "{:<24} {:>8} {:>8} {:>12}", q.queue, q.depth, q.dead, age.unwrap_or("-".into()));
            }
        }),
        ["--dead", queue, rest @ ..] => {
            let limit = rest.first().and_then(|l| l.parse().ok()).unwrap_or(50);
            stores.outbox.dead_letters(queue, limit).await.map(|dead| {
                for e in dead {
                    let line = serde_json::json!({
                        "id": e.id, "kind": e.kind, "target": e.target, "created_at_ms": e.created_at_ms,
                        "dead_at_ms": e.dead_at_ms, "attempts": e.attempts, "last_status": e.last_status,
                        "last_error": e.last_error,
                    });
                    let _ = writeln!(out, "{line}");
                }
            })
        }
        ["--requeue", queue] => stores.admin.requeue_dead(queue).await.map(|n| {
            let _ = writeln!(out, "{n} dead letter(s) of {queue} queued again");
        }),
        _ => {
            eprintln!("sluice: {OUTBOX_USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
