//! `sluice check`: what the server would refuse at start-up, every problem at once, on stdout.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use crate::registry::{self, Registry, RegistryError, Source};
use crate::valves::ValvesEnv;

/// Every pipeline's valves are checked on their own, so one run lists every problem; a value
/// from a file names its line, a value from the environment its variable.
/// `settings_problems`: what the settings were found to have wrong, listed first.
pub fn run(valves_dir: &Path, settings_problems: &[String]) -> ExitCode {
    for problem in settings_problems {
        say!("error  {problem}");
    }
    let mut problems = settings_problems.len();
    // Said, not counted: the settings are valid, only exposed.
    if let Some(warning) = crate::config::readable_settings_file() {
        say!("warn   {warning}");
    }
    let env = ValvesEnv::Process;
    let all = registry::builtin();
    // The variables are checked against every pipeline at once: one may name any of them.
    let mut unknown = Vec::new();
    if let Err(RegistryError::UnknownOverrides(found)) = Registry::build(all, valves_dir, &env) {
        for u in found {
            problems += 1;
            say!("error  {u}");
            unknown.push(u.variable);
        }
    }
    // Each pipeline on its own (one failing stops none of the others), without those variables.
    // `vars()` panics on a value that is not UTF-8, quoting it (a key, as like as not).
    let mut known_env = HashMap::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else { continue };
        match value.into_string() {
            Ok(value) if !unknown.contains(&name) => {
                known_env.insert(name, value);
            }
            Ok(_) => {}
            Err(_) if name.to_ascii_uppercase().starts_with("SLUICE_") => {
                problems += 1;
                say!("error  {name}: the value is not UTF-8 text (not shown)");
            }
            Err(_) => {}
        }
    }
    for pipeline in registry::builtin() {
        let id = pipeline.id().to_string();
        match Registry::build(vec![pipeline], valves_dir, &ValvesEnv::Map(own_variables(&known_env, &id))) {
            Ok(_) => say!("ok     {id}"),
            Err(RegistryError::Valves { errors, .. }) => {
                for e in errors {
                    problems += 1;
                    match &e.source {
                        Source::File(path) => {
                            let line = line_of(path, &e.error.field).map(|l| format!(":{l}")).unwrap_or_default();
                            say!("error  {}{line}: {}", path.display(), e.error);
                        }
                        Source::Variable(_) => say!("error  {e}"),
                    }
                }
            }
            Err(e) => {
                problems += 1;
                say!("error  {id}: {e}");
            }
        }
    }
    if problems == 0 {
        say!("sluice: settings, every valves file and the valve variables are valid");
        ExitCode::SUCCESS
    } else {
        say!("sluice: {problems} problem(s)");
        ExitCode::FAILURE
    }
}

/// `env` without the `SLUICE_VALVES__` variables of other pipelines (a registry of one
/// pipeline would call them unknown).
fn own_variables(env: &HashMap<String, String>, id: &str) -> HashMap<String, String> {
    let own = format!("SLUICE_VALVES__{}__", id.to_uppercase().replace('-', "_"));
    env.iter()
        .filter(|(k, _)| !k.to_ascii_uppercase().starts_with("SLUICE_VALVES__") || k.starts_with(&own))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The 1-based line where `field` is assigned in a TOML file, if it is.
fn line_of(path: &std::path::Path, field: &str) -> Option<usize> {
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
