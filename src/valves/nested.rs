//! Secrets inside a valve that holds JSON text, such as the `headers` of MCP servers: found by
//! key at any depth, masked for `GET /valves`, collected for redaction.

use serde_json::Value;
use sluice_sdk::secret::texts_under;

use super::mask as mask_secret;

fn is_secret_key(key: &str, keys: &[String]) -> bool {
    keys.iter().any(|k| k.eq_ignore_ascii_case(key))
}

/// `text` with every string under one of `keys` masked; unchanged when it is not JSON or holds
/// no such value.
pub fn mask(text: &str, keys: &[String]) -> String {
    let Ok(mut value) = serde_json::from_str::<Value>(text) else { return text.to_string() };
    if mask_under(&mut value, keys, false) {
        value.to_string()
    } else {
        text.to_string()
    }
}

/// Masks strings under secret keys; whether it masked any.
fn mask_under(value: &mut Value, keys: &[String], inside: bool) -> bool {
    match value {
        Value::String(s) if inside && !s.is_empty() => {
            *s = mask_secret(s);
            true
        }
        // A token written as a number is a token all the same (it was shown in clear).
        Value::Number(n) if inside => {
            *value = Value::String(mask_secret(&n.to_string()));
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |any, v| mask_under(v, keys, inside) | any),
        Value::Object(map) => {
            map.iter_mut().fold(false, |any, (k, v)| mask_under(v, keys, inside || is_secret_key(k, keys)) | any)
        }
        _ => false,
    }
}

/// Pushes every string under one of `keys` in the JSON `text` onto `out`.
pub fn secrets_in(text: &str, keys: &[String], out: &mut Vec<String>) {
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        texts_under(&value, keys, false, out);
    }
}

/// Pushes every string anywhere in `value` onto `out` (a secret field posted with any shape).
pub fn strings_in(value: &Value, out: &mut Vec<String>) {
    texts_under(value, &[] as &[&str], true, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        vec!["headers".into(), "authorization".into()]
    }

    #[test]
    fn nested_secrets_are_masked_and_found() {
        let text = r#"[{"server_label":"a","server_url":"https://m","headers":{"Authorization":"Bearer tok-123456789012345678"},"authorization":"short"}]"#;
        let masked = mask(text, &keys());
        assert!(!masked.contains("tok-123") && !masked.contains("short"), "{masked}");
        assert!(masked.contains("https://m") && masked.contains("********5678"), "{masked}");
        let mut found = Vec::new();
        secrets_in(text, &keys(), &mut found);
        assert_eq!(found, ["Bearer tok-123456789012345678", "short"]);
        assert_eq!(mask("not json", &keys()), "not json");
        assert_eq!(mask(r#"{"server_url":"x"}"#, &keys()), r#"{"server_url":"x"}"#, "nothing to mask: as written");
        let numeric = r#"[{"server_url":"https://m","headers":{"X-Tok":123456789012345678901},"Authorization":12345}]"#;
        let masked = mask(numeric, &keys());
        assert!(!masked.contains("12345"), "{masked}");
        let mut found = Vec::new();
        secrets_in(numeric, &keys(), &mut found);
        assert_eq!(found.len(), 2, "{found:?}");
    }
}
