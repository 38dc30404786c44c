//! `sluice settings`: every setting in effect and where it came from, as TOML an operator can
//! copy into `sluice.toml`. Secrets are never printed.

use std::process::ExitCode;

use figment::Figment;

use crate::config::{effective, rust_log_with_tracing_names, Settings};
use crate::telemetry::{chosen_directives, rust_log, OneLine};

pub fn run(figment: &Figment, settings: &Settings) -> ExitCode {
    let lines = effective(figment, settings);
    let width = lines.iter().map(|l| l.key.len() + l.value.len() + 3).max().unwrap_or(0);
    for line in lines {
        let assignment = format!("{} = {}", line.key, line.value);
        if line.value.starts_with('(') {
            // Not a value: a note about a secret.
            say!("# {:<width$}  # {}", format!("{} {}", line.key, line.value), line.source, width = width - 2);
        } else {
            say!("{assignment:<width$}  # {}", line.source);
        }
    }
    // RUST_LOG, when set, filters the log in place of log_level: say so, or why it does not.
    if let Some(asked) = rust_log() {
        match chosen_directives(Some(&asked), &settings.log_level) {
            (_, Some(reason)) => say!("# RUST_LOG is set aside ({reason}): log_level is used"),
            (directives, None) if directives == asked => {
                say!("# RUST_LOG={} filters the log in place of log_level", OneLine(&asked))
            }
            // Python's level names turned into tracing's.
            (directives, None) if directives == rust_log_with_tracing_names(&asked) => say!(
                "# RUST_LOG={} filters the log in place of log_level, read as {}",
                OneLine(&asked),
                OneLine(&directives)
            ),
            // Empty: read as unset (the level setting's directives came back).
            _ => {}
        }
    }
    ExitCode::SUCCESS
}
