//! What a component says it is (`describe`), checked before it is accepted.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value};
use sluice_sdk::{PipelineKind, SubModel};

#[derive(Debug, Clone)]
pub struct Manifest {
    pub id: String,
    pub name: String,
    pub kind: PipelineKind,
    pub models: Arc<[SubModel]>,
    /// A JSON schema of an object; each property has its default.
    pub valves: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: String,
    name: Option<String>,
    kind: String,
    #[serde(default)]
    models: Vec<RawModel>,
    #[serde(default)]
    valves: Option<Value>,
}

#[derive(Deserialize)]
struct RawModel {
    id: String,
    name: Option<String>,
}

const MAX_MODELS: usize = 256;

/// The valve every WebAssembly pipeline has, set by the admin: where its HTTP may go.
pub const ALLOWED_HOSTS: &str = "ALLOWED_HOSTS";

impl Manifest {
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| format!("describe() returned no valid description: {e}"))?;
        let kind = match raw.kind.as_str() {
            "pipe" => PipelineKind::Pipe,
            "filter" => PipelineKind::Filter,
            "manifold" => PipelineKind::Manifold,
            other => return Err(format!("kind {other:?} is none of pipe, filter, manifold")),
        };
        // Lower case, digits and '_' only: the id names the valves file and, upper-cased, the
        // environment variables of its valves, so two ids must never map to one name (a
        // pipeline called `openai-responses` would read the built-in's key).
        if raw.id.is_empty()
            || raw.id.len() > 64
            || !raw.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("id {:?} must have 1 to 64 lower-case letters, digits or '_'", raw.id));
        }
        if kind == PipelineKind::Manifold && raw.models.is_empty() {
            return Err("a manifold must list its models".into());
        }
        if raw.models.len() > MAX_MODELS {
            return Err(format!("at most {MAX_MODELS} models"));
        }
        let models = raw
            .models
            .into_iter()
            .map(|m| {
                if m.id.is_empty() || m.id.len() > 128 || m.id.chars().any(|c| c.is_control() || c == '/') {
                    return Err(format!("model id {:?} must have 1 to 128 characters, no '/'", m.id));
                }
                Ok(SubModel { name: m.name.unwrap_or_else(|| m.id.clone()), id: m.id, info: None })
            })
            .collect::<Result<Arc<[_]>, _>>()?;
        let valves = Self::valves_schema(raw.valves)?;
        Ok(Manifest { name: raw.name.unwrap_or_else(|| raw.id.clone()), id: raw.id, kind, models, valves })
    }

    /// The guest's schema with the host's `ALLOWED_HOSTS` added last.
    fn valves_schema(raw: Option<Value>) -> Result<Value, String> {
        let mut schema = match raw {
            None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => return Err("valves must be a JSON schema object".into()),
        };
        let properties = schema
            .as_object_mut()
            .and_then(|s| {
                s.insert("type".into(), "object".into());
                s.entry("properties").or_insert_with(|| Value::Object(Map::new())).as_object_mut()
            })
            .ok_or("valves.properties must be an object")?;
        for (name, property) in properties.iter() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("valve {name:?} must use only letters, digits and '_'"));
            }
            let Some(property) = property.as_object() else {
                return Err(format!("valve {name} must be a schema object"));
            };
            if !property.contains_key("default") {
                return Err(format!("valve {name} has no default"));
            }
        }
        if let Some(trouble) = sluice_sdk::valves::ref_trouble(&schema) {
            return Err(format!("valves: {trouble}; Open WebUI's editor could not show them"));
        }
        let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            return Err("valves.properties must be an object".into());
        };
        if properties.contains_key(ALLOWED_HOSTS) {
            return Err(format!("{ALLOWED_HOSTS} is the host's valve; a pipeline cannot declare it"));
        }
        properties.insert(
            ALLOWED_HOSTS.into(),
            serde_json::json!({
                "type": "array",
                "items": {"type": "string"},
                "default": [],
                "description": "Hosts this pipeline may send HTTP requests to (host or host:port); none when empty",
            }),
        );
        Ok(schema)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::Manifest;

    #[test]
    fn descriptions_are_checked() {
        let m = Manifest::parse(r#"{"id":"f","kind":"filter","valves":{"type":"object","properties":{"priority":{"type":"integer","default":0}}}}"#)
            .unwrap();
        assert_eq!(m.name, "f");
        assert!(m.valves["properties"]["ALLOWED_HOSTS"].is_object());
        for bad in [
            r#"{"id":"a b","kind":"pipe"}"#,
            r#"{"id":"openai-responses","kind":"pipe"}"#,
            r#"{"id":"OPENAI_RESPONSES","kind":"pipe"}"#,
            r#"{"id":"a","kind":"tool"}"#,
            r#"{"id":"a","kind":"manifold"}"#,
            r#"{"id":"a","kind":"pipe","valves":{"properties":{"X":{"type":"string"}}}}"#,
            r#"{"id":"a","kind":"pipe","valves":{"properties":{"ALLOWED_HOSTS":{"default":[]}}}}"#,
            r#"{"id":"a","kind":"pipe","extra":1}"#,
            "not json",
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn valves_whose_defs_loop_are_refused() {
        // Inlining them for the editor never ended: the server's stack overflowed and the
        // process aborted, on every start (found by a reviewer).
        let looped = r##"{"id":"a","kind":"pipe","valves":{"$defs":{"A":{"type":"array","items":{"$ref":"#/$defs/A"}}},
            "properties":{"X":{"$ref":"#/$defs/A","default":[]}}}}"##;
        let error = Manifest::parse(looped).err().unwrap();
        assert!(error.contains("$defs refer to themselves (A → A)"), "{error}");
        let shared = r##"{"id":"a","kind":"pipe","valves":{"$defs":{"Mode":{"enum":["a","b"]}},
            "properties":{"X":{"$ref":"#/$defs/Mode","default":"a"},"Y":{"$ref":"#/$defs/Mode","default":"b"}}}}"##;
        assert!(Manifest::parse(shared).is_ok());
        // No loop, but a chain of 70 definitions: as deep a recursion, refused the same way.
        let defs: Vec<String> =
            (0..70).map(|i| format!(r##""D{i}":{{"items":{{"$ref":"#/$defs/D{}"}}}}"##, i + 1)).collect();
        let deep = format!(
            r##"{{"id":"a","kind":"pipe","valves":{{"$defs":{{{}}},"properties":{{"X":{{"$ref":"#/$defs/D0","default":[]}}}}}}}}"##,
            defs.join(",")
        );
        let error = Manifest::parse(&deep).err().unwrap();
        assert!(error.contains("nests more than 64 levels deep"), "{error}");
    }
}
