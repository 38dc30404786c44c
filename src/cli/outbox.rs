//! `sluice outbox`: the durable delivery queues in whichever store the settings name. Safe
//! while the server runs (SQLite's WAL lets a second process read and write; PostgreSQL is
//! shared anyway).

use std::io::Write;
use std::process::ExitCode;

use crate::config::Settings;
use crate::registry;

pub const USAGE: &str = "\
Usage: sluice outbox [--dead QUEUE [LIMIT] | --requeue QUEUE]

  (no option)         every queue: entries waiting, dead letters, age of the oldest, last error
  --dead QUEUE [N]    QUEUE's dead letters as JSON lines (id, status, error), at most N (50)
  --requeue QUEUE     put QUEUE's dead letters back in line; the server sends them within a minute";

#[derive(Debug, PartialEq)]
pub enum Action {
    List,
    Dead { queue: String, limit: usize },
    Requeue { queue: String },
}

pub fn parse(args: &[&str]) -> Result<Action, String> {
    match args {
        [] => Ok(Action::List),
        ["--dead", queue] => Ok(Action::Dead { queue: queue.to_string(), limit: 50 }),
        ["--dead", queue, limit] => match limit.parse::<usize>() {
            Ok(limit) if limit > 0 => Ok(Action::Dead { queue: queue.to_string(), limit }),
            _ => Err(format!("LIMIT must be a positive number, got {limit:?}\n{USAGE}")),
        },
        ["--requeue", queue] => Ok(Action::Requeue { queue: queue.to_string() }),
        _ => Err(format!("unexpected arguments {:?}\n{USAGE}", args.join(" "))),
    }
}

pub async fn run(settings: &Settings, action: Action) -> ExitCode {
    if let Err(why) = super::store_is_there(settings) {
        complain!("sluice: {why}");
        return ExitCode::FAILURE;
    }
    let stores = match crate::store::Stores::open(settings, &settings.data_dir, Default::default()).await {
        Ok(s) => s,
        Err(e) => {
            complain!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut queues = match stores.admin.queues().await {
        Ok(q) => q,
        Err(e) => {
            complain!("sluice: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Queues the pipelines deliver from, listed even before anything was queued.
    for pipeline in registry::builtin() {
        for name in pipeline.queues() {
            if !queues.iter().any(|q| q.queue == *name) {
                queues.push(sluice_sdk::outbox::QueueStats { queue: name.to_string(), ..Default::default() });
            }
        }
    }
    queues.sort_by(|a, b| a.queue.cmp(&b.queue));
    let names: Vec<&str> = queues.iter().map(|q| q.queue.as_str()).collect();
    let check_queue = |queue: &str| -> Result<(), ExitCode> {
        if names.contains(&queue) {
            return Ok(());
        }
        let hint = crate::suggest::hint(queue, names.iter().copied());
        complain!("sluice: no queue {queue:?}{hint}; queues: {}", names.join(", "));
        Err(ExitCode::from(2))
    };
    let mut out = std::io::stdout().lock();
    let result = match action {
        Action::List => {
            let now = sluice_sdk::clock::unix_ms();
            let _ = writeln!(out, "{:<24} {:>8} {:>8} {:>12}  last error", "queue", "queued", "dead", "oldest (s)");
            for q in &queues {
                let age = q.oldest_age(now).map(|a| a.as_secs().to_string()).unwrap_or_else(|| "-".into());
                // An upstream's words: escaped, so they cannot drive the terminal.
                let error = crate::telemetry::OneLine(q.last_error.as_deref().unwrap_or("-"));
                let _ = writeln!(out, "{:<24} {:>8} {:>8} {:>12}  {error}", q.queue, q.depth, q.dead, age);
            }
            Ok(())
        }
        Action::Dead { queue, limit } => {
            if let Err(code) = check_queue(&queue) {
                return code;
            }
            stores.outbox.dead_letters(&queue, limit).await.map(|dead| {
                for e in dead {
                    let line = serde_json::json!({
                        "id": e.id, "kind": e.kind, "target": e.target, "created_at_ms": e.created_at_ms,
                        "dead_at_ms": e.dead_at_ms, "attempts": e.attempts, "last_status": e.last_status,
                        "last_error": e.last_error,
                    });
                    // OpenPipe's answer, quoted in last_error, cannot drive the terminal.
                    let _ = writeln!(out, "{}", crate::telemetry::ShownJson(&line.to_string()));
                }
            })
        }
        Action::Requeue { queue } => {
            if let Err(code) = check_queue(&queue) {
                return code;
            }
            stores.admin.requeue_dead(&queue).await.map(|n| {
                let _ = writeln!(out, "{n} dead letter(s) of {queue} queued again");
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}
