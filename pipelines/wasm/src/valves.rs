//! Valves of a WebAssembly pipeline: declared by the guest as a JSON schema (its `describe`),
//! handled by the server like any pipeline's (file, environment, editor, masking of
//! `format: password` fields). Values are checked against the declared types here.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::{Map, Value};
use sluice_sdk::valves::PreparedValves;
use sluice_sdk::{DynValves, FieldError};

pub struct JsonValves {
    schema: Value,
    defaults: Map<String, Value>,
    live: Arc<ArcSwap<Map<String, Value>>>,
}

impl JsonValves {
    pub fn new(schema: Value) -> Self {
        let defaults: Map<String, Value> = properties(&schema)
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.get("default").cloned().unwrap_or(Value::Null))).collect())
            .unwrap_or_default();
        JsonValves { live: Arc::new(ArcSwap::from_pointee(defaults.clone())), schema, defaults }
    }

    /// The live values; hold the `Arc` for one call.
    pub fn get(&self) -> Arc<Map<String, Value>> {
        self.live.load_full()
    }

    /// The current values of the valves marked `format: password`.
    pub fn secrets(&self) -> Vec<String> {
        let Some(props) = properties(&self.schema) else { return Vec::new() };
        let live = self.get();
        props
            .iter()
            .filter(|(_, spec)| spec.get("format").and_then(Value::as_str) == Some("password"))
            .filter_map(|(name, _)| live.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned))
            .collect()
    }

    fn check(&self, values: &Map<String, Value>) -> Vec<FieldError> {
        let Some(props) = properties(&self.schema) else { return Vec::new() };
        let mut errors = Vec::new();
        for (name, value) in values {
            match props.get(name) {
                None => errors.push(FieldError::new(name, "unknown valve")),
                Some(spec) => {
                    if let Err(message) = check_type(spec, value) {
                        errors.push(FieldError::new(name, message));
                    }
                }
            }
        }
        errors
    }
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

fn check_type(spec: &Value, value: &Value) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let ok = match spec.get("type").and_then(Value::as_str) {
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => match (value.as_array(), spec.get("items")) {
            (Some(items), Some(item_spec)) => return items.iter().try_for_each(|item| check_type(item_spec, item)),
            (Some(_), None) => true,
            (None, _) => false,
        },
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("must be of type {}", spec.get("type").and_then(Value::as_str).unwrap_or("?")))
    }
}

impl DynValves for JsonValves {
    fn schema(&self) -> Value {
        self.schema.clone()
    }

    fn defaults(&self) -> Value {
        Value::Object(self.defaults.clone())
    }

    fn current(&self) -> Value {
        Value::Object((*self.get()).clone())
    }

    fn env_aliases(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn sent_to(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn nested_secrets(&self) -> &'static [(&'static str, &'static [&'static str])] {
        &[]
    }

    fn titles(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    fn prepare(&self, values: Value) -> Result<PreparedValves, Vec<FieldError>> {
        let Value::Object(given) = values else { return Err(vec![FieldError::new("", "valves must be an object")]) };
        let errors = self.check(&given);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut merged = self.defaults.clone();
        merged.extend(given);
        let live = Arc::clone(&self.live);
        Ok(Box::new(move || live.store(Arc::new(merged))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use sluice_sdk::DynValves;

    use super::JsonValves;

    #[test]
    fn values_are_checked_against_the_declared_types() {
        let valves = JsonValves::new(json!({"type": "object", "properties": {
            "N": {"type": "integer", "default": 1},
            "L": {"type": "array", "items": {"type": "string"}, "default": []},
        }}));
        assert_eq!(valves.current(), json!({"N": 1, "L": []}));
        assert!(valves.prepare(json!({"N": "x"})).is_err());
        assert!(valves.prepare(json!({"L": [1]})).is_err());
        assert!(valves.prepare(json!({"Z": 1})).is_err());
        valves.prepare(json!({"L": ["a"]})).unwrap()();
        assert_eq!(valves.current(), json!({"N": 1, "L": ["a"]}));
    }
}
