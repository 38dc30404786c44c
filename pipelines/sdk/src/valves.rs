//! Typed valves. A pipeline declares a plain struct; the server loads it from
//! `valves/<id>.toml` and the environment, serves its schema, and swaps in validated updates.

use std::sync::Arc;

use arc_swap::ArcSwap;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// One rejected field, named exactly as in the valves object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// `FIELD: message`, or the message alone when it is about the whole object.
impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// How deep a valves schema may nest once its `$ref`s are inlined (objects and arrays): far
/// more than any settings struct does, and shallow enough for the recursion that inlines it
/// (measured: about a thousand levels fit in a test build on a 2 MiB stack).
pub const MAX_INLINED_DEPTH: usize = 64;

/// What is wrong with a valves schema for whoever inlines its `$ref`s to `$defs` (or
/// `definitions`), as the server does, recursively, for Open WebUI's editor: a definition that
/// refers to itself, anywhere inside it (`A → B → A`: inlining never ends), or a schema nesting
/// deeper than [`MAX_INLINED_DEPTH`] once inlined (the recursion overflows the stack, which
/// aborts the process). A WebAssembly guest's schema is refused with it. References are
/// matched by their last `/` segment, as they are inlined.
pub fn ref_trouble(schema: &Value) -> Option<String> {
    /// A definition referred to, and how deep the reference sits.
    type Reference<'a> = (&'a str, usize);
    let empty = serde_json::Map::new();
    let defs = schema.get("$defs").or_else(|| schema.get("definitions")).and_then(Value::as_object).unwrap_or(&empty);
    // How deep `root` nests by itself, and the references in it with the depth each sits at.
    // A stack, not recursion: a guest's schema can be deep.
    let scan = |root: &Value, skip_defs: bool| -> (usize, Vec<Reference>) {
        let mut found = Vec::new();
        let mut own = 0;
        let mut stack: Vec<(&Value, usize)> = vec![(root, 0)];
        while let Some((value, level)) = stack.pop() {
            own = own.max(level);
            match value {
                Value::Object(map) => {
                    if let Some(target) = map.get("$ref").and_then(Value::as_str) {
                        let target = target.rsplit('/').next().unwrap_or_default();
                        if let Some((name, _)) = defs.get_key_value(target) {
                            found.push((name.as_str(), level));
                        }
                    }
                    let inner = map
                        .iter()
                        .filter(|(key, _)| !(skip_defs && level == 0 && (*key == "$defs" || *key == "definitions")));
                    stack.extend(inner.map(|(_, v)| (v, level + 1)));
                }
                Value::Array(items) => stack.extend(items.iter().map(|v| (v, level + 1))),
                _ => {}
            }
        }
        (own, found)
    };
    // Depth-first through the definitions, again with a stack. `path` is the chain being
    // walked, each with the references left to follow and how deep it nests so far; `on_path`
    // holds the same names, for a lookup that does not grow with the chain; `inlined` how deep
    // each definition finished nests once inlined.
    let mut inlined: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut on_path = std::collections::HashSet::new();
    for start in defs.keys() {
        if inlined.contains_key(start.as_str()) {
            continue;
        }
        let (own, refs) = scan(&defs[start], false);
        let mut path: Vec<(&str, Vec<Reference>, usize)> = vec![(start.as_str(), refs, own)];
        on_path.insert(start.as_str());
        while let Some((_, next, deepest)) = path.last_mut() {
            match next.pop() {
                Some((target, _)) if on_path.contains(target) => {
                    let from = path.iter().position(|(name, ..)| *name == target).unwrap_or_default();
                    let mut names: Vec<&str> = path[from..].iter().map(|(name, ..)| *name).collect();
                    names.push(target);
                    return Some(format!("$defs refer to themselves ({})", names.join(" → ")));
                }
                Some((target, level)) => match inlined.get(target) {
                    // The hop itself is one level: `{"$ref": …}` chains nest nothing, yet
                    // each link is a frame of the inlining recursion.
                    Some(below) => *deepest = (*deepest).max(level + 1 + below),
                    None => {
                        // Looked at again once the target is finished.
                        next.push((target, level));
                        let (own, refs) = scan(&defs[target], false);
                        on_path.insert(target);
                        path.push((target, refs, own));
                    }
                },
                None => {
                    let Some((name, _, depth)) = path.pop() else { break };
                    on_path.remove(name);
                    // Capped: only whether it passes the limit matters, and a long chain
                    // must not add up past `usize`.
                    inlined.insert(name, depth.min(MAX_INLINED_DEPTH + 1));
                }
            }
        }
    }
    let (own, refs) = scan(schema, true);
    let depth = refs
        .iter()
        .map(|(target, level)| level + 1 + inlined.get(target).copied().unwrap_or_default())
        .fold(own, usize::max);
    (depth > MAX_INLINED_DEPTH)
        .then(|| format!("it nests more than {MAX_INLINED_DEPTH} levels deep once its $refs are inlined"))
}

/// Every error on one line, `; `-separated.
pub fn join_errors(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A pipeline's settings. Declare with `#[derive(Serialize, Deserialize, JsonSchema)]` and
/// `#[serde(default, deny_unknown_fields)]`; doc comments become the schema's `description`.
/// Fields appear in Open WebUI in declaration order.
pub trait Valves: Serialize + DeserializeOwned + JsonSchema + Default + Send + Sync + 'static {
    /// Checks across fields or beyond types (ranges, URLs, JSON in strings). Runs on every
    /// load and update before anything is written.
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        Ok(())
    }

    /// Extra environment variables a field is read from, as `(field, VARIABLE)`, e.g.
    /// `("API_KEY", "OPENAI_API_KEY")`. The generic `SLUICE_VALVES__<ID>__<FIELD>` wins over these.
    fn env_aliases() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Where each secret is sent, as `(secret field, URL field)`, e.g. `("API_KEY", "BASE_URL")`.
    /// Whoever may edit valves must not be able to send a stored key elsewhere: an update that
    /// changes the URL must carry the secret again, and a secret set by the environment pins its
    /// URL to the environment too.
    fn sent_to() -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Fields holding JSON text with secrets inside, as `(field, keys)`: the values under those
    /// keys, at any depth, are masked like a [`crate::Secret`] (e.g. the `headers` of MCP servers).
    fn nested_secrets() -> &'static [(&'static str, &'static [&'static str])] {
        &[]
    }

    /// Labels for Open WebUI's editor where pydantic's default (`REQUEST_TIMEOUT_CONNECT_S` →
    /// "Request Timeout Connect S") reads badly, as `(field, label)`.
    fn titles() -> &'static [(&'static str, &'static str)] {
        &[]
    }
}

/// A checked value waiting to go live; see [`DynValves::prepare`].
pub type PreparedValves = Box<dyn FnOnce() + Send>;

/// The type-erased face of a pipeline's valves that the server works with.
pub trait DynValves: Send + Sync {
    /// The raw JSON schema as schemars generates it (the server reshapes it for Open WebUI).
    fn schema(&self) -> Value;
    /// `Default::default()` as JSON.
    fn defaults(&self) -> Value;
    /// The live value as JSON (secrets in clear: the server masks them).
    fn current(&self) -> Value;
    fn env_aliases(&self) -> &'static [(&'static str, &'static str)];
    /// See [`Valves::sent_to`].
    fn sent_to(&self) -> &'static [(&'static str, &'static str)];
    /// See [`Valves::nested_secrets`].
    fn nested_secrets(&self) -> &'static [(&'static str, &'static [&'static str])];
    /// See [`Valves::titles`].
    fn titles(&self) -> &'static [(&'static str, &'static str)];
    /// Parses and validates a whole valves object; on success returns the action that makes it
    /// live, so several pipelines can be checked before any of them changes.
    fn prepare(&self, values: Value) -> Result<PreparedValves, Vec<FieldError>>;
}

/// Holds the live valves of one pipeline: readers take a cheap snapshot per request.
pub struct ValvesCell<V: Valves> {
    live: Arc<ArcSwap<V>>,
}

/// Clones share the same live value.
impl<V: Valves> Clone for ValvesCell<V> {
    fn clone(&self) -> Self {
        Self { live: Arc::clone(&self.live) }
    }
}

impl<V: Valves> Default for ValvesCell<V> {
    fn default() -> Self {
        Self { live: Arc::new(ArcSwap::from_pointee(V::default())) }
    }
}

impl<V: Valves> ValvesCell<V> {
    /// The current valves. Hold the `Arc` for the duration of one request.
    pub fn get(&self) -> Arc<V> {
        self.live.load_full()
    }

    /// Parses a JSON object into `V`, naming the field of a type error.
    pub fn parse(values: Value) -> Result<V, Vec<FieldError>> {
        let parsed: V = serde_path_to_error::deserialize(values).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { String::new() } else { field };
            vec![FieldError::new(field, e.into_inner().to_string())]
        })?;
        parsed.validate()?;
        Ok(parsed)
    }
}

impl<V: Valves> DynValves for ValvesCell<V> {
    fn schema(&self) -> Value {
        schemars::schema_for!(V).to_value()
    }

    fn defaults(&self) -> Value {
        serde_json::to_value(V::default()).unwrap_or(Value::Null)
    }

    fn current(&self) -> Value {
        serde_json::to_value(&*self.get()).unwrap_or(Value::Null)
    }

    fn env_aliases(&self) -> &'static [(&'static str, &'static str)] {
        V::env_aliases()
    }

    fn sent_to(&self) -> &'static [(&'static str, &'static str)] {
        V::sent_to()
    }

    fn nested_secrets(&self) -> &'static [(&'static str, &'static [&'static str])] {
        V::nested_secrets()
    }

    fn titles(&self) -> &'static [(&'static str, &'static str)] {
        V::titles()
    }

    fn prepare(&self, values: Value) -> Result<PreparedValves, Vec<FieldError>> {
        let parsed = Self::parse(values)?;
        let live = Arc::clone(&self.live);
        Ok(Box::new(move || live.store(Arc::new(parsed))))
    }
}

/// Checks a valve that names an upstream: `http(s)://host[/path]`. Credentials in the URL are
/// refused (they would travel into error messages and logs, where a URL is not treated as a
/// secret), and so are a query and a fragment when the URL is a base that paths get appended to.
pub fn check_url(value: &str, is_base: bool) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an http(s) URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials; set the API key valve instead".into());
    }
    if is_base && (url.query().is_some() || url.fragment().is_some()) {
        return Err("must not have a query or a fragment".into());
    }
    Ok(())
}

/// Checks a valve that becomes an HTTP header value (an API key, an organisation id): printable
/// ASCII without surrounding blanks. A line break would otherwise fail every request later
/// with a misleading error, or split the header.
pub fn check_header_value(value: &str) -> Result<(), String> {
    if value.bytes().any(|b| !(0x20..0x7f).contains(&b)) {
        return Err("must be printable ASCII without line breaks or control characters".into());
    }
    if value.trim() != value {
        return Err("must not start or end with blanks".into());
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::{check_header_value, check_url};

    #[test]
    fn header_values_are_checked() {
        assert!(check_header_value("org-123").is_ok());
        assert!(check_header_value("").is_ok());
        for bad in ["org\r\nX-Evil: 1", "a\u{0}b", " org", "org ", "caf\u{e9}", "a\tb"] {
            assert!(check_header_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn upstream_urls_are_checked() {
        assert!(check_url("https://api.openai.com/v1", true).is_ok());
        assert!(check_url("http://127.0.0.1:8080/v1", true).is_ok());
        for bad in [
            "ftp://x/v1",
            "file:///etc/passwd",
            "https://user:pw@api.openai.com/v1",
            "https://k@h/v1",
            "no url",
            "https://h/v1?x=1",
            "https://h/v1#f",
            "unix:/run/x.sock",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
        assert!(check_url("https://mcp.example.com/sse?team=1", false).is_ok());
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod ref_trouble_tests {
    use serde_json::json;

    use super::{ref_trouble, MAX_INLINED_DEPTH};

    /// A schema whose one property refers to D0, D0 → D1 → … → D{n-1}, each from `items`.
    fn chain(n: usize) -> serde_json::Value {
        let defs: serde_json::Map<String, serde_json::Value> = (0..n)
            .map(|i| {
                let def = if i + 1 < n {
                    json!({"items": {"$ref": format!("#/$defs/D{}", i + 1)}})
                } else {
                    json!({"type": "string"})
                };
                (format!("D{i}"), def)
            })
            .collect();
        json!({"$defs": defs, "properties": {"X": {"$ref": "#/$defs/D0", "default": []}}})
    }

    #[test]
    fn loops_through_defs_are_named() {
        let own = json!({"$defs": {"A": {"$ref": "#/$defs/A"}}});
        assert_eq!(ref_trouble(&own).as_deref(), Some("$defs refer to themselves (A → A)"));
        let deep = json!({"definitions": {"A": {"type": "array", "items": {"anyOf": [{"type": "null"}, {"$ref": "#/definitions/B"}]}},
            "B": {"properties": {"x": {"$ref": "#/definitions/A"}}}}});
        let found = ref_trouble(&deep).unwrap();
        assert!(found.ends_with("(A → B → A)") || found.ends_with("(B → A → B)"), "{found}");
        let mut long_loop = chain(100_000);
        long_loop["$defs"]["D99999"] = json!({"$ref": "#/$defs/D0"});
        assert!(ref_trouble(&long_loop).unwrap().starts_with("$defs refer to themselves"));
    }

    #[test]
    fn schemas_nesting_deeper_than_the_limit_once_inlined_are_named() {
        // Each link is two levels (`items`, then the hop); the property's reference sits two
        // deep and its hop is one more, the last definition's `type` one: n links are 2n + 2
        // levels, 31 are the limit.
        assert_eq!(ref_trouble(&chain(31)), None);
        let found = ref_trouble(&chain(32)).unwrap();
        assert_eq!(found, format!("it nests more than {MAX_INLINED_DEPTH} levels deep once its $refs are inlined"));
        // Nesting inside a definition counts as much as references do.
        let mut wide = chain(2);
        wide["$defs"]["D1"] = (0..70).fold(json!({"type": "string"}), |acc, _| json!({"type": "array", "items": acc}));
        assert!(ref_trouble(&wide).is_some());
        // A definition both a short and a long path lead to counts on the long one.
        let mut shared = chain(32);
        shared["properties"]["Y"] = json!({"$ref": "#/$defs/D30", "default": []});
        assert!(ref_trouble(&shared).is_some());
        // A hundred thousand links: found without recursion.
        assert!(ref_trouble(&chain(100_000)).is_some());
        // Aliases (`{"$ref": …}` and nothing else) nest nothing but are followed one frame
        // each: they count (found by a reviewer).
        let aliases: serde_json::Map<String, serde_json::Value> =
            (0..100).map(|i| (format!("D{i}"), json!({"$ref": format!("#/$defs/D{}", i + 1)}))).collect();
        let aliased = json!({"$defs": aliases, "properties": {"X": {"$ref": "#/$defs/D0", "default": null}}});
        assert!(ref_trouble(&aliased).is_some());
    }

    #[test]
    fn schemas_without_trouble_pass() {
        assert_eq!(ref_trouble(&json!({"properties": {"X": {"$ref": "#/$defs/Mode", "default": "a"}}})), None);
        let shared = json!({"$defs": {"A": {"anyOf": [{"$ref": "#/$defs/B"}, {"$ref": "#/$defs/B"}]},
            "B": {"items": {"$ref": "#/$defs/C"}}, "C": {"enum": ["x"]}, "D": {"$ref": "#/$defs/Missing"}},
            "properties": {"X": {"$ref": "#/$defs/A", "default": "x"}}});
        assert_eq!(ref_trouble(&shared), None);
    }
}
