//! Reshapes the schema schemars derives into the one pydantic v2 emits and Open WebUI's valve
//! editor renders (docs/protocol.md §5.9): properties in declaration order, a `title` per
//! field, keys sorted inside each property, `anyOf` with null for optional fields, `enum` for
//! choices, refs inlined. It also yields each field's type for coercing updates.

use serde_json::{Map, Value};

/// What a field accepts, read from its schema.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Array(Box<FieldType>),
    Object,
    Any,
}

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub ty: FieldType,
    pub nullable: bool,
    pub choices: Option<Vec<Value>>,
    /// `format: password`: masked in `GET /valves`, never logged.
    pub secret: bool,
    /// For a field holding JSON text: keys whose values are secrets, at any depth
    /// ([`sluice_sdk::Valves::nested_secrets`]).
    pub nested_secrets: Vec<String>,
    /// Bounds of a number (`#[schemars(range(min, max))]`), checked for every value from a
    /// file, a variable or the editor, all fields at once.
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
}

impl FieldSpec {
    /// Whether a value of this field must never appear in an error or a log: a secret, or JSON
    /// text with secrets inside.
    pub fn confidential(&self) -> bool {
        self.secret || !self.nested_secrets.is_empty()
    }
}

/// The reshaped schema plus the fields, in declaration order.
#[derive(Debug, Clone)]
pub struct ValvesSchema {
    pub spec: Value,
    pub fields: Vec<FieldSpec>,
}

impl ValvesSchema {
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Replaces pydantic's default labels with the pipeline's own (`Valves::titles`).
    pub fn set_titles(&mut self, titles: &[(&str, &str)]) {
        let Some(properties) = self.spec.get_mut("properties").and_then(Value::as_object_mut) else { return };
        for (field, title) in titles {
            if let Some(Value::Object(property)) = properties.get_mut(*field) {
                property.insert("title".into(), Value::from(*title));
            }
        }
    }
}

/// pydantic's default title: words split on `_`, each capitalised (`OPENAI_API_KEY` →
/// `Openai Api Key`).
pub fn title_of(name: &str) -> String {
    name.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn normalize(raw: &Value) -> ValvesSchema {
    // Definitions that loop, or lead too deep, would overflow the stack as they are inlined,
    // which aborts the process: a guest's are refused when it is loaded; here they are left
    // out, their fields untyped.
    let defs = match sluice_sdk::valves::ref_trouble(raw) {
        Some(_) => Value::Null,
        None => raw.get("$defs").or_else(|| raw.get("definitions")).cloned().unwrap_or(Value::Null),
    };
    let mut properties = Map::new();
    let mut fields = Vec::new();
    if let Some(props) = raw.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let (out, field) = normalize_property(name, prop, &defs);
            properties.insert(name.clone(), out);
            fields.push(field);
        }
    }
    let mut top = Map::new();
    if let Some(description) = raw.get("description") {
        top.insert("description".into(), description.clone());
    }
    top.insert("properties".into(), Value::Object(properties));
    if let Some(required) = raw.get("required").and_then(Value::as_array).filter(|r| !r.is_empty()) {
        top.insert("required".into(), Value::Array(required.clone()));
    }
    top.insert("title".into(), raw.get("title").cloned().unwrap_or_else(|| "Valves".into()));
    top.insert("type".into(), "object".into());
    ValvesSchema { spec: Value::Object(top), fields }
}

fn resolve(schema: &Value, defs: &Value) -> Map<String, Value> {
    let mut map = schema.as_object().cloned().unwrap_or_default();
    if let Some(reference) = map.remove("$ref").and_then(|r| r.as_str().map(str::to_owned)) {
        let name = reference.rsplit('/').next().unwrap_or_default();
        let mut target = defs.get(name).map(|d| resolve(d, defs)).unwrap_or_default();
        // Keys on the referring schema (default, description) win over the definition's.
        target.extend(map);
        map = target;
    }
    map
}

/// `oneOf`/`anyOf` made only of constants (a documented Rust enum) becomes `enum`.
fn constants(variants: &[Value], defs: &Value) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for variant in variants {
        let v = resolve(variant, defs);
        if let Some(c) = v.get("const") {
            out.push(c.clone());
        } else if let Some(e) = v.get("enum").and_then(Value::as_array) {
            out.extend(e.iter().cloned());
        } else {
            return None;
        }
    }
    Some(out)
}

fn is_null_schema(schema: &Value, defs: &Value) -> bool {
    resolve(schema, defs).get("type").and_then(Value::as_str) == Some("null")
}

/// Splits a schema into its non-null part and whether null is allowed.
fn split_nullable(mut map: Map<String, Value>, defs: &Value) -> (Map<String, Value>, bool) {
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let non_null: Vec<Value> = types.iter().filter(|t| t.as_str() != Some("null")).cloned().collect();
        let nullable = non_null.len() != types.len();
        if non_null.len() == 1 {
            map.insert("type".into(), non_null[0].clone());
        }
        if let Some(Value::Array(e)) = map.get_mut("enum") {
            e.retain(|v| !v.is_null());
        }
        return (map, nullable);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(variants)) = map.get(key).cloned() {
            let non_null: Vec<&Value> = variants.iter().filter(|v| !is_null_schema(v, defs)).collect();
            let nullable = non_null.len() != variants.len();
            if nullable && non_null.len() == 1 {
                map.remove(key);
                let inner = resolve(non_null[0], defs);
                let (mut inner, _) = split_nullable(inner, defs);
                for k in ["default", "description", "title"] {
                    if let Some(v) = map.remove(k) {
                        inner.insert(k.into(), v);
                    }
                }
                return (inner, true);
            }
        }
    }
    (map, false)
}

fn field_type(map: &Map<String, Value>, defs: &Value) -> FieldType {
    match map.get("type").and_then(Value::as_str) {
        Some("string") => FieldType::String,
        Some("integer") => FieldType::Integer,
        Some("number") => FieldType::Number,
        Some("boolean") => FieldType::Boolean,
        Some("object") => FieldType::Object,
        Some("array") => {
            let items = map.get("items").map(|i| resolve(i, defs)).unwrap_or_default();
            let (items, _) = split_nullable(items, defs);
            FieldType::Array(Box::new(field_type(&items, defs)))
        }
        _ if map.contains_key("enum") => FieldType::String,
        _ => FieldType::Any,
    }
}

/// Only the keys Open WebUI or a person reading the spec can use; schemars' `format: int64`
/// and `additionalProperties` are dropped, as pydantic does not emit them.
fn clean(map: Map<String, Value>, defs: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        match k.as_str() {
            "type" | "enum" | "writeOnly" | "minimum" | "maximum" | "minLength" | "maxLength" | "minItems"
            | "maxItems" | "pattern" | "description" | "default" | "title" | "examples" => {
                out.insert(k, v);
            }
            "format" if v == "password" => {
                out.insert(k, v);
            }
            "items" => {
                let items = resolve(&v, defs);
                let (items, nullable) = split_nullable(items, defs);
                let items = clean(with_constants(items, defs), defs);
                let items = if nullable { any_of_null(items) } else { items };
                out.insert(k, Value::Object(sorted(items)));
            }
            _ => {}
        }
    }
    out
}

fn with_constants(mut map: Map<String, Value>, defs: &Value) -> Map<String, Value> {
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(variants)) = map.get(key) {
            if let Some(values) = constants(variants, defs) {
                map.remove(key);
                map.insert("enum".into(), Value::Array(values));
                map.entry("type").or_insert_with(|| "string".into());
            }
        }
    }
    if map.contains_key("const") && !map.contains_key("enum") {
        if let Some(c) = map.remove("const") {
            map.insert("enum".into(), Value::Array(vec![c]));
        }
    }
    map
}

fn any_of_null(inner: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    let mut base = Map::new();
    for (k, v) in inner {
        match k.as_str() {
            "default" | "description" | "title" | "readOnly" => {
                out.insert(k, v);
            }
            _ => {
                base.insert(k, v);
            }
        }
    }
    let null = Value::Object(Map::from_iter([("type".to_string(), Value::from("null"))]));
    out.insert("anyOf".into(), Value::Array(vec![Value::Object(sorted(base)), null]));
    out
}

fn sorted(map: Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.into_iter().collect()
}

fn normalize_property(name: &str, prop: &Value, defs: &Value) -> (Value, FieldSpec) {
    let map = with_constants(resolve(prop, defs), defs);
    let (mut map, nullable) = split_nullable(map, defs);
    map = with_constants(map, defs);
    // schemars turns a multi-paragraph doc comment's first line into `title`; Open WebUI uses
    // `title` as the label, so keep pydantic's label and fold that line into the description.
    if let Some(Value::String(doc_title)) = map.remove("title") {
        let description = match map.remove("description") {
            Some(Value::String(d)) => format!("{doc_title}\n\n{d}"),
            _ => doc_title,
        };
        map.insert("description".into(), description.into());
    }
    map.insert("title".into(), title_of(name).into());
    let ty = field_type(&map, defs);
    let choices = map.get("enum").and_then(Value::as_array).cloned();
    let secret = map.get("format").and_then(Value::as_str) == Some("password");
    let minimum = map.get("minimum").and_then(Value::as_f64);
    let maximum = map.get("maximum").and_then(Value::as_f64);
    let mut cleaned = clean(map, defs);
    if secret {
        // Open WebUI's editor renders a plain string as a required text area, so an empty key
        // on a fresh install blocks saving every other valve, and shows a key as it is typed.
        // This is the input it masks and lets stay empty.
        cleaned.insert("input".into(), serde_json::json!({"type": "password"}));
    }
    let out = if nullable { any_of_null(cleaned) } else { cleaned };
    let field = FieldSpec {
        name: name.to_string(),
        ty,
        nullable,
        choices,
        secret,
        nested_secrets: Vec::new(),
        minimum,
        maximum,
    };
    (Value::Object(sorted(out)), field)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn definitions_that_loop_are_left_out_instead_of_inlined_for_ever() {
        let looped = serde_json::json!({"$defs": {"A": {"type": "array", "items": {"$ref": "#/$defs/A"}},
            "B": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/B"}]}},
            "properties": {"X": {"$ref": "#/$defs/A", "default": []}, "Y": {"$ref": "#/$defs/B", "default": null},
                "Z": {"type": "integer", "default": 1}}});
        let schema = normalize(&looped);
        let types: Vec<&FieldType> = schema.fields.iter().map(|f| &f.ty).collect();
        assert_eq!(types, [&FieldType::Any, &FieldType::Any, &FieldType::Integer]);
    }

    #[test]
    fn the_deepest_schema_a_guest_may_send_is_reshaped_on_a_small_stack() {
        // As deep as a guest's schema may nest once inlined, half in references and half in
        // arrays inside each definition: on the 2 MiB stack of a spawned thread (a test
        // build's frames are the larger ones).
        let limit = sluice_sdk::valves::MAX_INLINED_DEPTH;
        let links = 8;
        let arrays = (limit - 3) / links - 2;
        let nested =
            |inner: Value| (0..arrays).fold(inner, |acc, _| serde_json::json!({"type": "array", "items": acc}));
        let defs: Map<String, Value> = (0..links)
            .map(|i| {
                let next = if i + 1 < links {
                    serde_json::json!({"$ref": format!("#/$defs/D{}", i + 1)})
                } else {
                    serde_json::json!({"type": "string"})
                };
                (format!("D{i}"), nested(next))
            })
            .collect();
        let raw = serde_json::json!({"$defs": defs, "properties": {"X": {"$ref": "#/$defs/D0", "default": []}}});
        assert_eq!(sluice_sdk::valves::ref_trouble(&raw), None, "the test must stay within the limit");
        let reshaped =
            std::thread::Builder::new().stack_size(2 << 20).spawn(move || normalize(&raw).fields.len()).unwrap();
        assert_eq!(reshaped.join().unwrap(), 1);
    }

    #[test]
    fn titles_follow_pydantic() {
        assert_eq!(title_of("OPENAI_API_BASE_URL"), "Openai Api Base Url");
        assert_eq!(title_of("pipelines"), "Pipelines");
        assert_eq!(title_of("max_tokens"), "Max Tokens");
    }
}
