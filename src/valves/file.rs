//! `valves/<id>.toml`: read it, edit single keys while keeping the operator's comments and
//! layout, and replace it atomically (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves either the old or the new file, never a torn one.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};
use toml_edit::{Array, DocumentMut, InlineTable, Item};

/// Why a valves file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    // No path: whoever reports the error names the file once.
    #[error("cannot read: {source}")]
    Read { source: std::io::Error },
    /// Place and reason only (crate::toml_syntax): the parser's excerpt may quote a key.
    #[error("{0}")]
    Syntax(String),
    #[error("{}", .0.message())]
    Value(#[from] toml::de::Error),
}

/// The text of the valves file `path`; `Ok(None)` when it does not exist
/// ([`crate::small_file::read`]: a regular file of at most 1 MiB).
pub fn read_text(path: &Path) -> std::io::Result<Option<String>> {
    crate::small_file::read(path, "a valves file")
}

/// Reads the file; `Ok(None)` when it does not exist.
pub fn read(path: &Path) -> Result<Option<DocumentMut>, FileError> {
    let text = match read_text(path) {
        Ok(Some(text)) => text,
        Ok(None) => return Ok(None),
        Err(source) => return Err(FileError::Read { source }),
    };
    text.parse::<DocumentMut>()
        .map(Some)
        .map_err(|e| FileError::Syntax(crate::toml_syntax::described(&text, e.message(), e.span())))
}

/// The document's keys as JSON values.
pub fn to_json(doc: &DocumentMut) -> Result<Map<String, Value>, FileError> {
    let table: toml::Table = toml::from_str(&doc.to_string())?;
    // A TOML table is a JSON object (dates become strings).
    match serde_json::to_value(table) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Ok(Map::new()),
    }
}

/// Sets `key`, keeping the comments around it (its leading lines and a trailing `# ...`).
/// A key the file does not set yet takes the place of its commented-out default
/// (`# KEY = ...`, as the shipped files list them), or goes at the end: never above the
/// file's header. `None` when the value has no TOML form (a null inside a list).
pub fn set(doc: &mut DocumentMut, key: &str, value: &Value) -> Option<()> {
    let new = to_toml(value)?;
    if let Some(old) = doc.get_mut(key).and_then(Item::as_value_mut) {
        let decor = old.decor().clone();
        *old = new;
        *old.decor_mut() = decor;
        return Some(());
    }
    let line = format!("{key} = {}", new.to_string().trim());
    let text = doc.to_string();
    let commented = text.lines().position(|l| {
        l.trim_start()
            .strip_prefix('#')
            .map(str::trim_start)
            .and_then(|rest| rest.strip_prefix(key))
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    let edited = match commented {
        Some(at) => {
            let mut lines: Vec<&str> = text.lines().collect();
            lines[at] = &line;
            lines.join("\n") + "\n"
        }
        None if text.is_empty() => format!("{line}\n"),
        None => format!("{}\n{line}\n", text.trim_end_matches('\n')),
    };
    match edited.parse::<DocumentMut>() {
        Ok(parsed) => *doc = parsed,
        // Cannot happen for a document that parsed and a line of our own; keep it safe anyway.
        Err(_) => {
            doc.insert(key, Item::Value(new));
        }
    }
    Some(())
}

pub fn remove(doc: &mut DocumentMut, key: &str) {
    doc.remove(key);
}

fn to_toml(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(to_toml(item)?);
            }
            toml_edit::Value::Array(array)
        }
        Value::Object(map) => {
            let mut table = InlineTable::new();
            for (k, v) in map {
                if let Some(v) = to_toml(v) {
                    table.insert(k, v);
                }
            }
            toml_edit::Value::InlineTable(table)
        }
    })
}

/// How [`write_atomic`]'s temporary files are named, so a crash's leftovers can be found.
const TEMP_PREFIX: &str = ".valves-";
const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `path` with `contents`. New files are 0600 (they may hold API keys); an existing
/// file keeps its permissions unless `private` (the contents hold a secret), which makes it 0600
/// whatever it was: a shipped 0644 template that receives a key must not stay readable by all.
pub fn write_atomic(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    crate::private::create_dir(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX).tempfile_in(dir)?;
    tmp.write_all(contents.as_bytes())?;
    match std::fs::metadata(path) {
        Ok(meta) if !private => tmp.as_file().set_permissions(meta.permissions())?,
        _ => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Replaces `path` with `contents` (atomically) unless it already holds exactly that; whether
/// it wrote. `private` as for [`write_atomic`].
pub fn replace_if_changed(path: &Path, contents: &str, private: bool) -> std::io::Result<bool> {
    if read_text(path).ok().flatten().as_deref() == Some(contents) {
        return Ok(false);
    }
    write_atomic(path, contents, private).map(|()| true)
}

/// Whether valves files can be written in `dir` (created if missing): what every update and,
/// with replicas, every start needs. Found out at start, not at the first save from Open WebUI
/// (which shows any failure as "Pipeline not found").
pub fn check_writable(dir: &Path) -> std::io::Result<()> {
    crate::private::create_dir(dir)?;
    tempfile::Builder::new().prefix(TEMP_PREFIX).suffix(TEMP_SUFFIX).tempfile_in(dir).map(drop)
}

/// Removes temporary files a crash left in the middle of [`write_atomic`] (the rename never
/// happened, so they hold nothing that was acknowledged). Called once at start, before any write.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX) {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a valves temp file left by a crash"),
                Err(e) => tracing::warn!(file = %name, error = %e, "cannot remove a stale valves temp file"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edits_keep_comments() -> Result<(), toml_edit::TomlError> {
        let mut doc: DocumentMut = "# top comment\n\n# how many\nMAX = 3 # keep me\nMODE = \"fast\"\n".parse()?;
        assert_eq!(set(&mut doc, "MAX", &json!(5)), Some(()));
        assert_eq!(set(&mut doc, "TAGS", &json!(["a", "b"])), Some(()));
        remove(&mut doc, "MODE");
        assert_eq!(doc.to_string(), "# top comment\n\n# how many\nMAX = 5 # keep me\nTAGS = [\"a\", \"b\"]\n");
        Ok(())
    }

    #[test]
    fn a_new_key_replaces_its_commented_default_or_goes_last() -> Result<(), toml_edit::TomlError> {
        let template = "# Header of the file.\n\n# Retries before giving up.\n# MAX = 3\n# MODE = \"fast\"\n";
        let mut doc: DocumentMut = template.parse()?;
        assert_eq!(set(&mut doc, "MAX", &json!(5)), Some(()));
        assert_eq!(set(&mut doc, "NOTE", &json!("hi")), Some(()));
        assert_eq!(
            doc.to_string(),
            "# Header of the file.\n\n# Retries before giving up.\nMAX = 5\n# MODE = \"fast\"\nNOTE = \"hi\"\n"
        );
        assert_eq!(to_json(&doc).ok().map(|m| m.len()), Some(2));
        Ok(())
    }
}
