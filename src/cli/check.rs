//! `sluice check`: what the server would refuse at start-up, every problem at once, on stdout.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use sluice_sdk::{error_chain, Pipeline};

use crate::components;
use crate::config::Settings;
use crate::registry::{self, Registry, RegistryError, Source};
use crate::store::PgStore;
use crate::valves::{file, ValvesEnv};

/// Every pipeline's valves are checked on their own, so one run lists every problem; a value
/// from a file names its line, a value from the environment its variable.
/// `settings_problems`: what the settings were found to have wrong, listed first.
/// `settings`: when they are valid, the WebAssembly pipelines added in the store they name are
/// checked with the built-in ones (their valves files and variables are as much the server's).
pub async fn run(settings: Option<&Settings>, valves_dir: &Path, settings_problems: &[String]) -> ExitCode {
    for problem in settings_problems {
        say!("error  {problem}");
    }
    let mut problems = settings_problems.len();
    // Said, not counted: the settings are valid, only exposed.
    if let Some(warning) = crate::config::settings_file_warning() {
        say!("warn   {warning}");
    }
    let mut all = registry::builtin();
    // The store's URL is read as the server reads it, whether or not anything is read there;
    // one it refuses is one problem, not also a store that could not be read.
    let mut url_refused = false;
    if let Some(Err(e)) = settings.and_then(|s| s.store_url.as_ref()).map(|url| PgStore::connect_to_read(url.expose()))
    {
        problems += 1;
        url_refused = true;
        say!("error  store_url: {e}");
    }
    if let Some(settings) = settings.filter(|_| !url_refused) {
        let (added, trouble) = added_pipelines(settings, &all).await;
        all.extend(added);
        for t in &trouble {
            say!("error  {t}");
        }
        problems += trouble.len();
    }
    let env = ValvesEnv::Process;
    // The variables are checked against every pipeline at once: one may name any of them.
    let mut unknown = Vec::new();
    if let Err(RegistryError::UnknownOverrides(found)) = Registry::build(all.clone(), valves_dir, &env) {
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
    for pipeline in all {
        let id = pipeline.id().to_string();
        // Said, not counted, as the server says it at start.
        if let Some(cell) = pipeline.valves() {
            let entry = crate::valves::ValvesEntry::new(&id, cell, valves_dir);
            if let Some(mode) = file::read(entry.path()).ok().flatten().and_then(|doc| entry.exposed_key(&doc)) {
                let path = entry.path().display();
                say!("warn   {path} (mode {mode:o}) holds a key and others on this machine may read it: make it 0600");
            }
        }
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

/// The WebAssembly pipelines added in the store `settings` name, and what kept any from loading
/// (each a problem). Nothing when they are switched off or there is no store yet (nothing was
/// added). The store is only read: no schema migrated, no compiled-code cache written.
async fn added_pipelines(settings: &Settings, builtin: &[Arc<dyn Pipeline>]) -> (Vec<Arc<dyn Pipeline>>, Vec<String>) {
    if !settings.wasm_pipelines {
        return (Vec::new(), Vec::new());
    }
    let cannot = |why: String| (Vec::new(), vec![format!("the added WebAssembly pipelines could not be read: {why}")]);
    match super::store_exists(settings) {
        Ok(true) => {}
        Ok(false) => return (Vec::new(), Vec::new()),
        Err(why) => return cannot(why),
    }
    let builtin: HashSet<String> = builtin.iter().map(|p| p.id().to_string()).collect();
    let each = async {
        let store = crate::store::open_to_read(settings, &settings.data_dir).map_err(|e| error_chain(&e))?;
        let runtime = sluice_wasm::Runtime::new(settings.wasm_limits(), None).map_err(|e| e.to_string())?;
        components::load_each(&runtime, store.as_ref(), &builtin).await.map_err(|e| error_chain(&e))
    };
    // A database that does not answer must not hold the check forever.
    let each = match tokio::time::timeout(READ_WAIT, each).await {
        Ok(Ok((each, _))) => each,
        Ok(Err(e)) => return cannot(e),
        Err(_) => {
            return cannot(format!("the store did not answer, or they did not load, within {} s", READ_WAIT.as_secs()))
        }
    };
    let mut added: Vec<Arc<dyn Pipeline>> = Vec::new();
    let mut trouble = Vec::new();
    for (id, _, result) in each {
        match result {
            Ok(pipeline) => added.push(Arc::new(pipeline)),
            Err(e) => trouble
                .push(format!("{id}: the added WebAssembly pipeline cannot be loaded (the server leaves it out): {e}")),
        }
    }
    (added, trouble)
}

/// How long `check` waits for the store to list the added pipelines and for them to load.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    let text = crate::valves::file::read_text(path).ok()??;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix(key).or_else(|| l.strip_prefix(&format!("\"{key}\"")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}
