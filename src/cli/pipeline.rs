//! `sluice pipeline add|list|remove`: WebAssembly pipelines in whichever store the settings
//! name, with the server running or not; a running server (every replica) picks a change up
//! within a second.

use std::path::Path;
use std::process::ExitCode;

use sluice_sdk::Pipeline;

use crate::components::{self, index, python};
use crate::config::Settings;
use crate::registry;

pub const USAGE: &str = "\
Usage: sluice pipeline add FILE | list | remove ID

  add FILE     check and store a WebAssembly component (.wasm), or a Python pipeline (.py, built
               with componentize-py); replaces an added pipeline with the same id
  list         the added pipelines: id, SHA-256, where each came from, when it was added
  remove ID    remove an added pipeline, its valves file and its records

See docs/wasm-pipelines.md.";

#[derive(Debug, PartialEq)]
pub enum Action {
    Add(String),
    List,
    Remove(String),
}

pub fn parse(args: &[&str]) -> Result<Action, String> {
    match args {
        ["add", file] => Ok(Action::Add(file.to_string())),
        ["list"] => Ok(Action::List),
        ["remove", id] => Ok(Action::Remove(id.to_string())),
        _ => Err(format!("unexpected arguments {:?}\n{USAGE}", args.join(" "))),
    }
}

pub async fn run(settings: &Settings, action: Action) -> ExitCode {
    match act(settings, action).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            complain!("sluice: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn act(settings: &Settings, action: Action) -> Result<(), String> {
    super::store_is_there(settings)?;
    let stores = crate::store::Stores::open(settings, &settings.data_dir, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let store = stores.kv.as_ref();
    let builtin: Vec<String> = registry::builtin().iter().map(|p| p.id().to_string()).collect();
    match action {
        Action::List => {
            let index = index::read(store).await.map_err(|e| e.to_string())?;
            if index.components.is_empty() {
                say!("no WebAssembly pipelines added");
            }
            for (id, entry) in &index.components {
                let sha = format!("sha256:{}", entry.sha256.get(..12).unwrap_or(&entry.sha256));
                let added = format!("added at {} (Unix ms)", entry.added_at_ms);
                super::output::row(&[id, &sha, &entry.source, &added]);
            }
            Ok(())
        }
        Action::Remove(id) => {
            if builtin.contains(&id) {
                return Err(format!("{id} is a built-in pipeline and cannot be removed"));
            }
            match index::remove(store, &id).await.map_err(|e| e.to_string())? {
                Some((_, entry)) => {
                    components::forget(store, &settings.valves_dir, &id, entry.generation).await;
                    if let Some(shared) = &stores.shared_valves {
                        // Emptied, as the server does (`Components::remove`).
                        shared.publish(&id, "").await.map_err(|e| {
                            format!("removed {id}, but its shared valves could not be emptied (do it before adding it again): {e}")
                        })?;
                    }
                    say!("removed {id}");
                    Ok(())
                }
                None => Err(format!("pipeline {id:?} not found among the added WebAssembly pipelines")),
            }
        }
        Action::Add(file) => {
            let path = Path::new(&file);
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            let bytes = read_at_most(path, settings.wasm_component_mb as u64 * 1024 * 1024)
                .map_err(|e| format!("{file}: {e}"))?;
            let bytes = match name.strip_suffix(".py") {
                Some(id) => {
                    python::build(&settings.componentize_py, &components::builds_dir(&settings.data_dir), id, &bytes)
                        .await
                        .map_err(|e| e.to_string())?
                }
                None => bytes,
            };
            let runtime =
                sluice_wasm::Runtime::new(settings.wasm_limits(), components::cache_dir(&settings.data_dir).as_deref())
                    .map_err(|e| e.to_string())?;
            let pipeline = sluice_wasm::load(&runtime, bytes.clone()).await.map_err(|e| format!("{file}: {e}"))?;
            let id = pipeline.id().to_string();
            if builtin.contains(&id) {
                return Err(format!("{id} is a built-in pipeline and cannot be replaced"));
            }
            let sha256 = pipeline.sha256().to_string();
            let kind = pipeline.kind().as_str();
            let components::Addition { generation, was } =
                components::plan_addition(store, stores.shared_valves.as_deref(), &id)
                    .await
                    .map_err(|e| e.to_string())?;
            let (_, old) = index::insert(store, &id, &bytes, &sha256, file.clone(), generation, was)
                .await
                .map_err(|e| e.to_string())?;
            let verb = if old.is_some() { "replaced" } else { "added" };
            say!("{verb} {id} ({kind}) from {file}; a running server loads it within a second");
            Ok(())
        }
    }
}

/// The file, or an error when it holds more than `limit` bytes: read no further than that (a
/// 600 MB file took 1.2 GB before it was refused, `/dev/zero` all the memory there was).
fn read_at_most(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(limit + 1).read_to_end(&mut bytes)).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("larger than wasm_component_mb allows ({} MB)", limit / (1024 * 1024)));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_no_further_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.wasm");
        std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(read_at_most(&path, 1 << 20).unwrap().len(), 1 << 20);
        let e = read_at_most(&path, (1 << 20) - 1).unwrap_err();
        assert!(e.contains("larger than wasm_component_mb allows"), "{e}");
        // Endless: refused after the limit, not read to the end of memory.
        assert!(read_at_most(Path::new("/dev/zero"), 1 << 20).is_err());
    }
}
