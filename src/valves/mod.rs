//! Valves on the server side: load (Rust defaults < `valves/<id>.toml` < environment), serve
//! (values with secrets masked, the spec in Open WebUI's shape), and update (coerce, merge,
//! validate the whole object, write the TOML atomically, swap the live value, call the hook).

mod coerce;
pub mod file;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use sluice_sdk::valves::PreparedValves;
use sluice_sdk::{DynValves, FieldError};
use toml_edit::DocumentMut;

pub use schema::{FieldSpec, FieldType, ValvesSchema};

/// `GET /valves` shows a set secret as this prefix (plus its last four characters when long
/// enough to keep them unguessable). An update carrying a string with this prefix keeps the
/// stored secret, so the admin page can post the whole object back without wiping the key.
pub const SECRET_MASK: &str = "********";

/// Where environment overrides are read from: the process, or a fixed map (tests run many
/// apps in one process).
#[derive(Clone, Debug, Default)]
pub enum ValvesEnv {
    #[default]
    Process,
    Map(HashMap<String, String>),
}

impl ValvesEnv {
    fn get(&self, name: &str) -> Option<String> {
        match self {
            ValvesEnv::Process => std::env::var(name).ok(),
            ValvesEnv::Map(map) => map.get(name).cloned(),
        }
    }
}

/// The generic override variable: `SLUICE_VALVES__<PIPELINE ID>__<FIELD>`, upper-cased, `-` → `_`.
pub fn env_var_name(pipeline_id: &str, field: &str) -> String {
    format!("SLUICE_VALVES__{}__{}", pipeline_id.to_uppercase().replace('-', "_"), field.to_uppercase())
}

/// Where a pipeline's valves file lives in `dir`.
pub fn file_path(dir: &Path, pipeline_id: &str) -> PathBuf {
    dir.join(format!("{pipeline_id}.toml"))
}

/// A value fixed by the environment: shown, never written, and not editable over REST.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub variable: String,
    pub value: Value,
}

/// One pipeline's valves as the server manages them.
pub struct ValvesEntry {
    pipeline_id: String,
    cell: Arc<dyn DynValves>,
    pub schema: ValvesSchema,
    path: PathBuf,
    pinned: ArcSwap<BTreeMap<String, Pinned>>,
    /// The live value as JSON, refreshed on every install; `/models` reads filters' routing here.
    snapshot: ArcSwap<Value>,
}

/// A checked value for one pipeline, not yet live.
pub struct Loaded {
    prepared: PreparedValves,
    pinned: BTreeMap<String, Pinned>,
    values: Value,
}

impl ValvesEntry {
    pub fn new(pipeline_id: &str, cell: Arc<dyn DynValves>, dir: &Path) -> Self {
        let schema = schema::normalize(&cell.schema());
        let snapshot = ArcSwap::from_pointee(cell.current());
        Self {
            pipeline_id: pipeline_id.to_string(),
            cell,
            schema,
            path: file_path(dir, pipeline_id),
            pinned: ArcSwap::from_pointee(BTreeMap::new()),
            snapshot,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The live values, secrets in clear. For the server's own use (routing), never a response.
    pub fn snapshot(&self) -> Arc<Value> {
        self.snapshot.load_full()
    }

    /// Reads the file and the environment and checks the result, without changing anything.
    pub fn load(&self, env: &ValvesEnv) -> Result<Loaded, Vec<FieldError>> {
        let doc = file::read(&self.path).map_err(|e| vec![FieldError::new("", e)])?;
        let pinned = self.read_env(env)?;
        self.check(doc.as_ref(), pinned)
    }

    /// Makes a checked value live.
    pub fn install(&self, loaded: Loaded) {
        (loaded.prepared)();
        self.pinned.store(Arc::new(loaded.pinned));
        self.snapshot.store(Arc::new(loaded.values));
    }

    fn read_env(&self, env: &ValvesEnv) -> Result<BTreeMap<String, Pinned>, Vec<FieldError>> {
        let mut pinned = BTreeMap::new();
        let mut errors = Vec::new();
        for field in &self.schema.fields {
            let generic = env_var_name(&self.pipeline_id, &field.name);
            let aliases = self.cell.env_aliases().iter().filter(|(f, _)| *f == field.name).map(|(_, v)| v.to_string());
            let found = std::iter::once(generic).chain(aliases).find_map(|var| env.get(&var).map(|raw| (var, raw)));
            if let Some((variable, raw)) = found {
                match coerce::coerce(field, Value::String(raw)) {
                    Ok(value) => {
                        pinned.insert(field.name.clone(), Pinned { variable, value });
                    }
                    Err(e) => errors.push(FieldError::new(field.name.clone(), format!("{variable}: {}", e.message))),
                }
            }
        }
        if errors.is_empty() {
            Ok(pinned)
        } else {
            Err(errors)
        }
    }

    /// defaults < file < environment, coerced field by field, then parsed and validated whole.
    fn check(&self, doc: Option<&DocumentMut>, pinned: BTreeMap<String, Pinned>) -> Result<Loaded, Vec<FieldError>> {
        let mut values = match self.cell.defaults() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut errors = Vec::new();
        if let Some(doc) = doc {
            let from_file = file::to_json(doc).map_err(|e| vec![FieldError::new("", e)])?;
            for (key, value) in from_file {
                match self.schema.field(&key) {
                    Some(field) => match coerce::coerce(field, value) {
                        Ok(v) => {
                            values.insert(key, v);
                        }
                        Err(e) => errors.push(e),
                    },
                    None => errors.push(self.unknown(&key)),
                }
            }
        }
        for (key, p) in &pinned {
            values.insert(key.clone(), p.value.clone());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let values = Value::Object(values);
        let prepared = self.cell.prepare(values.clone())?;
        // The snapshot is what the pipeline now holds, re-serialised (normalises e.g. 1 → 1.0).
        Ok(Loaded { prepared, pinned, values })
    }

    fn unknown(&self, key: &str) -> FieldError {
        let known = self.schema.fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ");
        FieldError::new(key, format!("unknown valve (known: {known})"))
    }

    /// The values as `GET /valves` shows them: secrets masked.
    pub fn masked(&self) -> Value {
        let mut values = self.cell.current();
        if let Value::Object(map) = &mut values {
            for field in self.schema.fields.iter().filter(|f| f.secret) {
                if let Some(v) = map.get_mut(&field.name) {
                    if let Some(s) = v.as_str() {
                        *v = Value::String(mask(s));
                    }
                }
            }
        }
        values
    }

    /// The spec, with fields pinned by the environment marked read-only and explained.
    pub fn spec(&self) -> Value {
        let pinned = self.pinned.load();
        let mut spec = self.schema.spec.clone();
        if pinned.is_empty() {
            return spec;
        }
        if let Some(props) = spec.get_mut("properties").and_then(Value::as_object_mut) {
            for (name, p) in pinned.iter() {
                if let Some(Value::Object(prop)) = props.get_mut(name) {
                    let note = format!("Set by the environment variable {}; change it there.", p.variable);
                    let description = match prop.get("description").and_then(Value::as_str) {
                        Some(d) => format!("{d}\n\n{note}"),
                        None => note,
                    };
                    prop.insert("description".into(), description.into());
                    prop.insert("readOnly".into(), true.into());
                    let sorted: Map<String, Value> = prop
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .collect();
                    *prop = sorted;
                }
            }
        }
        spec
    }

    /// Applies an update as Open WebUI sends it. On success the file is written and the value is
    /// live; the caller runs the pipeline's hook.
    pub fn update(&self, body: Value) -> Result<Value, UpdateError> {
        let Value::Object(body) = body else {
            return Err(UpdateError::Invalid(vec![FieldError::new("", "the valves update must be a JSON object")]));
        };
        let current = match self.cell.current() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let pinned = self.pinned.load_full();
        let mut invalid = Vec::new();
        let mut refused = Vec::new();
        let mut changes = Vec::new();
        for (key, value) in body {
            let Some(field) = self.schema.field(&key) else {
                invalid.push(self.unknown(&key));
                continue;
            };
            if field.secret && value.as_str().is_some_and(|s| s.starts_with(SECRET_MASK)) {
                continue;
            }
            let value = match coerce::coerce(field, value) {
                Ok(v) => v,
                Err(e) => {
                    invalid.push(e);
                    continue;
                }
            };
            if current.get(&key) == Some(&value) {
                continue;
            }
            if let Some(p) = pinned.get(&key) {
                refused.push(FieldError::new(
                    key.clone(),
                    format!("is set by the environment variable {}; change it there", p.variable),
                ));
                continue;
            }
            changes.push((key, value));
        }
        if !invalid.is_empty() {
            return Err(UpdateError::Invalid(invalid));
        }
        if !refused.is_empty() {
            return Err(UpdateError::Pinned(refused));
        }
        let original = file::read(&self.path).map_err(UpdateError::Io)?;
        let mut doc = original.clone().unwrap_or_default();
        for (key, value) in &changes {
            if value.is_null() {
                file::remove(&mut doc, key);
            } else {
                file::set(&mut doc, key, value)
                    .map_err(|e| UpdateError::Invalid(vec![FieldError::new(key.clone(), e)]))?;
            }
        }
        let loaded = self.check(Some(&doc), (*pinned).clone()).map_err(UpdateError::Invalid)?;
        let text = doc.to_string();
        if original.map(|o| o.to_string()) != Some(text.clone()) {
            file::write_atomic(&self.path, &text)
                .map_err(|e| UpdateError::Io(format!("{}: cannot write: {e}", self.path.display())))?;
        }
        self.install(loaded);
        Ok(self.masked())
    }
}

/// Why an update was not applied. Nothing was written in any of these cases.
#[derive(Debug)]
pub enum UpdateError {
    Invalid(Vec<FieldError>),
    Pinned(Vec<FieldError>),
    Io(String),
}

pub fn mask(secret: &str) -> String {
    match secret.chars().count() {
        0 => String::new(),
        n if n >= 20 => format!("{SECRET_MASK}{}", secret.chars().skip(n - 4).collect::<String>()),
        _ => SECRET_MASK.to_string(),
    }
}
