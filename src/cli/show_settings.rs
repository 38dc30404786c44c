//! `sluice settings`: every setting in effect and where it came from, as TOML an operator can
//! copy into `sluice.toml`. Secrets are never printed.

use std::process::ExitCode;

use figment::Figment;

use crate::config::{effective, Settings};

pub fn run(figment: &Figment, settings: &Settings) -> ExitCode {
    let lines = effective(figment, settings);
    let width = lines.iter().map(|l| l.key.len() + l.value.len() + 3).max().unwrap_or(0);
    for line in lines {
        let assignment = format!("{} = {}", line.key, line.value);
        if line.value.starts_with('(') {
            // Not a value: a note about a secret.
            println!("# {:<width$}  # {}", format!("{} {}", line.key, line.value), line.source, width = width - 2);
        } else {
            println!("{assignment:<width$}  # {}", line.source);
        }
    }
    ExitCode::SUCCESS
}
