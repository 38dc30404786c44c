//! Valves on the server side: load (Rust defaults < `valves/<id>.toml` < environment), serve
//! (values with secrets masked, the spec in Open WebUI's shape), and update (coerce, merge,
//! validate the whole object, write the TOML atomically, swap the live value, call the hook).

mod coerce;
mod destinations;
pub mod file;
mod nested;
pub mod overrides;
pub mod replicas;
pub mod schema;
mod service;

/// Whether a text looks like a key, and so is not quoted back in an error (settings too).
pub(crate) use coerce::looks_like_a_key;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use sluice_sdk::valves::PreparedValves;
use sluice_sdk::{DynValves, FieldError};
use toml_edit::DocumentMut;

pub use schema::{FieldSpec, FieldType, ValvesSchema};
pub use service::{ValvesError, ValvesService};

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
    /// An empty variable is an unset one: `OPENAI_API_KEY: ${OPENAI_API_KEY:-}` in a compose
    /// file passes an empty string when the operator set nothing, and pinning the valve to
    /// "" would lock it in the editor.
    fn get(&self, name: &str) -> Option<String> {
        let value = match self {
            ValvesEnv::Process => std::env::var(name).ok(),
            ValvesEnv::Map(map) => map.get(name).cloned(),
        };
        value.filter(|v| !v.is_empty())
    }

    /// Every variable's name.
    fn names(&self) -> Vec<String> {
        match self {
            ValvesEnv::Process => std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect(),
            ValvesEnv::Map(map) => map.keys().cloned().collect(),
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
    /// The file's text as read (empty when there is no file).
    text: String,
}

impl Loaded {
    /// The valves file's text this value was read from.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// An accepted update: what `GET /valves` now shows, and the file's new text (for replicas).
pub struct Updated {
    pub masked: Value,
    pub text: String,
}

impl ValvesEntry {
    pub fn new(pipeline_id: &str, cell: Arc<dyn DynValves>, dir: &Path) -> Self {
        let mut schema = schema::normalize(&cell.schema());
        schema.set_titles(cell.titles());
        for (name, keys) in cell.nested_secrets() {
            if let Some(field) = schema.fields.iter_mut().find(|f| f.name == *name) {
                field.nested_secrets = keys.iter().map(|k| k.to_string()).collect();
            }
        }
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
        let doc = file::read(&self.path).map_err(|e| vec![FieldError::new("", e.to_string())])?;
        if let Some(doc) = &doc {
            self.warn_if_others_may_read(doc);
        }
        let pinned = self.read_env(env)?;
        self.check(doc.as_ref(), pinned)
    }

    /// A file the operator wrote with a key in it and left readable by others is said, not
    /// changed: it is theirs (sluice makes the files it writes 0600).
    fn warn_if_others_may_read(&self, doc: &DocumentMut) {
        if let Some(mode) = self.exposed_key(doc) {
            tracing::warn!(
                path = %self.path.display(),
                mode = format!("{mode:o}"),
                "this valves file holds a key and others on this machine may read it: make it 0600 (chmod 600)"
            );
        }
    }

    /// The file's mode when, read as `doc`, it holds a key others on this machine may read
    /// (`sluice check` says it too).
    pub fn exposed_key(&self, doc: &DocumentMut) -> Option<u32> {
        let mode = crate::private::others_may_read(&self.path)?;
        file::to_json(doc).is_ok_and(|values| self.holds_secret(&values)).then_some(mode)
    }

    /// Whether `loaded` holds other values than the live ones.
    pub fn differs(&self, loaded: &Loaded) -> bool {
        *self.snapshot() != loaded.values
    }

    /// Makes a checked value live.
    pub fn install(&self, loaded: Loaded) {
        (loaded.prepared)();
        self.pinned.store(Arc::new(loaded.pinned));
        self.snapshot.store(Arc::new(loaded.values));
    }

    /// The variable that sets `field`, if one does: errors about it are blamed on it, not on
    /// the file.
    pub fn variable_of(&self, field: &str, env: &ValvesEnv) -> Option<String> {
        let generic = env_var_name(&self.pipeline_id, field);
        let aliases = self.cell.env_aliases().iter().filter(|(f, _)| *f == field).map(|(_, v)| v.to_string());
        std::iter::once(generic).chain(aliases).find(|var| env.get(var).is_some())
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
                    Err(e) => errors.push(FieldError::new(field.name.clone(), e.message)),
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
            let from_file = file::to_json(doc).map_err(|e| vec![FieldError::new("", e.to_string())])?;
            let mut unknown = Unknown::default();
            for (key, value) in from_file {
                match self.schema.field(&key) {
                    Some(field) => match coerce::coerce(field, value) {
                        Ok(v) => {
                            values.insert(key, v);
                        }
                        Err(e) => errors.push(e),
                    },
                    None => unknown.note(self, &key, &mut errors),
                }
            }
            errors.extend(unknown.not_named());
        }
        for (key, p) in &pinned {
            values.insert(key.clone(), p.value.clone());
        }
        let secrets = self.confidential_texts(&values);
        let values = Value::Object(values);
        // Fields refused above kept their defaults, so the whole-object checks still run and
        // every problem is told at once, not one per attempt.
        let prepared = match self.cell.prepare(values.clone()) {
            Ok(prepared) if errors.is_empty() => prepared,
            Ok(_) => return Err(redact_errors(errors, &secrets)),
            Err(more) => {
                let refused: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
                errors.extend(more.into_iter().filter(|m| !refused.contains(&m.field)));
                return Err(redact_errors(errors, &secrets));
            }
        };
        let text = doc.map(DocumentMut::to_string).unwrap_or_default();
        // The snapshot is what the pipeline now holds, re-serialised (normalises e.g. 1 → 1.0).
        Ok(Loaded { prepared, pinned, values, text })
    }

    fn unknown(&self, key: &str) -> FieldError {
        let names: Vec<&str> = self.schema.fields.iter().map(|f| f.name.as_str()).collect();
        // A key pasted as a name (`{"OPENPIPE_API_KEY=opk-...": true}`) is not quoted back.
        if looks_like_a_key(key) {
            let message = format!("unknown valve whose name looks like a key (known: {})", names.join(", "));
            return FieldError::new("(a name not shown)", message);
        }
        let hint = crate::suggest::hint(key, names.iter().copied());
        FieldError::new(key, format!("unknown valve{hint} (known: {})", names.join(", ")))
    }

    /// The values as `GET /valves` shows them: secrets masked, also inside JSON text.
    ///
    /// Empty values are served as null where that round-trips: Open WebUI's Admin > Pipelines
    /// page renders every other value as a required text box, so one empty key (a fresh
    /// install) or empty list would block saving every valve; for null it shows "None", posts
    /// null back, and null puts the valve back to its (equally empty) default.
    pub fn masked(&self) -> Value {
        let mut values = self.cell.current();
        let defaults = self.cell.defaults();
        if let Value::Object(map) = &mut values {
            for field in &self.schema.fields {
                let Some(value) = map.get_mut(&field.name) else { continue };
                let empty = match value {
                    Value::String(s) => {
                        s.is_empty() && defaults.get(&field.name) == Some(&Value::String(String::new()))
                    }
                    Value::Array(items) => items.is_empty() && field.nullable,
                    _ => false,
                };
                if empty {
                    *value = Value::Null;
                } else if let (true, Value::String(s)) = (field.confidential(), &mut *value) {
                    *s = masked_field(field, s);
                }
            }
        }
        values
    }

    /// Every secret text in `values` (secret fields and secrets inside JSON text), for
    /// redacting messages that might quote them.
    fn confidential_texts(&self, values: &Map<String, Value>) -> Vec<String> {
        let mut out = Vec::new();
        for field in self.schema.fields.iter().filter(|f| f.confidential()) {
            if let Some(value) = values.get(&field.name) {
                secret_texts_of(field, value, &mut out);
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// The secrets live now, for redacting texts that leave the server.
    pub fn secrets(&self) -> Vec<String> {
        match self.cell.current() {
            Value::Object(map) => self.confidential_texts(&map),
            _ => Vec::new(),
        }
    }

    /// Whether `values` hold a secret, which makes the valves file private (mode 0600).
    fn holds_secret(&self, values: &Map<String, Value>) -> bool {
        !self.confidential_texts(values).is_empty()
    }

    /// Whether a valves file's text holds a secret (a text shared by another replica).
    pub fn text_holds_secret(&self, text: &str) -> bool {
        let map = text.parse::<DocumentMut>().ok().and_then(|doc| file::to_json(&doc).ok());
        map.is_some_and(|m| self.holds_secret(&m))
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
    pub fn update(&self, body: Value) -> Result<Updated, UpdateError> {
        let Value::Object(body) = body else {
            return Err(UpdateError::Invalid(vec![FieldError::new("", "the valves update must be a JSON object")]));
        };
        let current = match self.cell.current() {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        // Whatever secret text the update or the current values hold is kept out of every
        // message the update answers with (and so out of reason phrases and logs).
        let mut secrets = self.confidential_texts(&current);
        secrets.extend(self.confidential_texts(&body));
        let pinned = self.pinned.load_full();
        let mut invalid = Vec::new();
        let mut refused = Vec::new();
        let mut changes = Vec::new();
        // Secrets given in this update, changed or not: the caller knows them.
        let mut given = Vec::new();
        let mut unknown = Unknown::default();
        for (key, value) in body {
            let Some(field) = self.schema.field(&key) else {
                unknown.note(self, &key, &mut invalid);
                continue;
            };
            if field.secret && value.as_str().is_some_and(|s| s.starts_with(SECRET_MASK)) {
                continue;
            }
            if field.secret {
                given.push(key.clone());
            }
            // JSON with tokens posted back masked, exactly as GET /valves showed it: its own value.
            let as_shown = !field.nested_secrets.is_empty()
                && value.as_str().is_some_and(|v| {
                    v.contains(SECRET_MASK)
                        && current.get(&key).and_then(Value::as_str).is_some_and(|c| masked_field(field, c) == v)
                });
            if let Some(p) = pinned.get(&key) {
                // Pinned: only its own value may come back (the editor posts every field).
                if !as_shown && coerce::coerce(field, value).ok().as_ref() != current.get(&key) {
                    refused.push(FieldError::new(
                        key.clone(),
                        format!("is set by the environment variable {}; change it there", p.variable),
                    ));
                }
                continue;
            }
            if value.is_null() && !field.nullable {
                // Open WebUI's "Default" toggle: the valve goes back to its declared default
                // (its key leaves the file); for a secret, that clears it.
                changes.push((key, Value::Null));
                continue;
            }
            if !field.nested_secrets.is_empty() && value.as_str().is_some_and(|s| s.contains(SECRET_MASK)) {
                if !as_shown {
                    invalid.push(FieldError::new(
                        key.clone(),
                        format!(
                            "holds masked values ({SECRET_MASK}); when you change {key}, give its {} again",
                            field.nested_secrets.join(" and ")
                        ),
                    ));
                }
                continue;
            }
            if !field.nested_secrets.is_empty() {
                // Given without masks: the caller wrote every token in it.
                given.push(key.clone());
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
            changes.push((key, value));
        }
        invalid.extend(unknown.not_named());
        self.check_destinations(&changes, &given, &current, &pinned, &mut invalid, &mut refused);
        if !invalid.is_empty() {
            // The well-typed part is checked too, as it would be written: every problem told at
            // once, not one per attempt.
            if let Ok((_, doc)) = self.merged(&changes) {
                if let Err(more) = self.check(Some(&doc), (*pinned).clone()) {
                    let named: Vec<String> = invalid.iter().map(|e| e.field.clone()).collect();
                    invalid.extend(more.into_iter().filter(|m| !named.contains(&m.field)));
                }
            }
            return Err(UpdateError::Invalid(redact_errors(invalid, &secrets)));
        }
        if !refused.is_empty() {
            return Err(UpdateError::Pinned(redact_errors(refused, &secrets)));
        }
        let (original, doc) = self.merged(&changes)?;
        let loaded = self
            .check(Some(&doc), (*pinned).clone())
            .map_err(|errors| UpdateError::Invalid(redact_errors(errors, &secrets)))?;
        let text = doc.to_string();
        // What the file holds decides, not what the environment adds to it.
        let private = self.text_holds_secret(&text);
        if original.map(|o| o.to_string()) != Some(text.clone()) {
            file::write_atomic(&self.path, &text, private)
                .map_err(|e| UpdateError::Io(format!("{}: cannot write: {e}", self.path.display())))?;
        }
        self.install(loaded);
        Ok(Updated { masked: self.masked(), text })
    }

    /// The valves file as it is, and as it would be with `changes` (a `null` removes the key).
    fn merged(&self, changes: &[(String, Value)]) -> Result<(Option<DocumentMut>, DocumentMut), UpdateError> {
        let original = file::read(&self.path).map_err(|e| UpdateError::Io(e.to_string()))?;
        let mut doc = original.clone().unwrap_or_default();
        for (key, value) in changes {
            if value.is_null() {
                file::remove(&mut doc, key);
            } else {
                file::set(&mut doc, key, value).ok_or_else(|| {
                    UpdateError::Invalid(vec![FieldError::new(key.clone(), "this value cannot be written to TOML")])
                })?;
            }
        }
        Ok((original, doc))
    }
}

/// Unknown valves named one by one, up to this many in one document; the rest are counted.
const UNKNOWN_NAMED: usize = 10;

/// The unknown valves of one document: each named with the known ones (and a likely meant
/// one) up to [`UNKNOWN_NAMED`], the rest counted. Every one named, an update of 100,000
/// unknown keys (under 1 MB) answered 190 MB and took 22 s (found by a red team).
#[derive(Default)]
struct Unknown {
    seen: usize,
}

impl Unknown {
    fn note(&mut self, entry: &ValvesEntry, key: &str, errors: &mut Vec<FieldError>) {
        self.seen += 1;
        if self.seen <= UNKNOWN_NAMED {
            errors.push(entry.unknown(key));
        }
    }

    fn not_named(&self) -> Option<FieldError> {
        let more = self.seen.saturating_sub(UNKNOWN_NAMED);
        (more > 0).then(|| FieldError::new("", format!("and {more} more unknown valves")))
    }
}

/// Why an update was not applied. Nothing was written in any of these cases.
#[derive(Debug)]
pub enum UpdateError {
    Invalid(Vec<FieldError>),
    Pinned(Vec<FieldError>),
    Io(String),
}

/// Error messages with every secret text replaced.
fn redact_errors(errors: Vec<FieldError>, secrets: &[String]) -> Vec<FieldError> {
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    errors
        .into_iter()
        .map(|e| FieldError::new(e.field, sluice_sdk::secret::redact(&e.message, &secrets).into_owned()))
        .collect()
}

/// The secret texts in a confidential `field`'s `value`: all of it for a secret, the tokens
/// under its secret keys for JSON text.
fn secret_texts_of(field: &FieldSpec, value: &Value, out: &mut Vec<String>) {
    match value.as_str() {
        Some(text) if !field.secret => nested::secrets_in(text, &field.nested_secrets, out),
        _ => nested::strings_in(value, out),
    }
}

/// A confidential field's text as `GET /valves` shows it.
fn masked_field(field: &FieldSpec, text: &str) -> String {
    if field.secret {
        mask(text)
    } else {
        nested::mask(text, &field.nested_secrets)
    }
}

pub fn mask(secret: &str) -> String {
    match secret.chars().count() {
        0 => String::new(),
        n if n >= 20 => format!("{SECRET_MASK}{}", secret.chars().skip(n - 4).collect::<String>()),
        _ => SECRET_MASK.to_string(),
    }
}
