//! [`Secret`]: a valve value that must never reach a log line or a response in clear.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string (API keys). `Debug` and `Display` redact it; serialisation keeps the value
/// so it can be persisted. Its schema is pydantic's `SecretStr` shape
/// (`format: password`, `writeOnly: true`), which is how the server knows to mask it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the one place that needs it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a secret is replaced with wherever text might carry it (error messages, logs).
pub const REDACTED: &str = "********";

/// Pushes onto `out` every secret text in `value`: each string or number under a key named in
/// `keys` (any case, at any depth), or every one when `inside`. For valves holding JSON with
/// tokens inside (MCP servers' `headers`); a token written as a number is a token too.
pub fn texts_under(value: &serde_json::Value, keys: &[impl AsRef<str>], inside: bool, out: &mut Vec<String>) {
    use serde_json::Value;
    match value {
        Value::String(s) if inside => out.push(s.clone()),
        Value::Number(n) if inside => out.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| texts_under(v, keys, inside, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            let secret = keys.iter().any(|key| key.as_ref().eq_ignore_ascii_case(k));
            texts_under(v, keys, inside || secret, out)
        }),
        _ => {}
    }
}

/// `text` with every occurrence of each secret replaced by [`REDACTED`]. For texts sluice does
/// not write itself, such as an upstream's error message that may echo the key it was sent.
/// Secrets shorter than 4 characters are left alone (they would match ordinary words).
pub fn redact<'a>(text: &'a str, secrets: &[&str]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(secret) {
            out = Cow::Owned(out.replace(secret, REDACTED));
        }
    }
    out
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(\"\")" } else { "Secret(****)" })
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Secret")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "password", "writeOnly": true})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_texts() {
        let text = "Incorrect API key provided: sk-abc123. Bearer sk-abc123";
        assert_eq!(redact(text, &["sk-abc123", ""]), "Incorrect API key provided: ********. Bearer ********");
        assert!(matches!(redact("nothing here", &["sk-abc123"]), Cow::Borrowed(_)));
        assert_eq!(redact("a b c", &["a"]), "a b c", "too short to redact");
    }
}
