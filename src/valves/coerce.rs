//! Turns what Open WebUI's valve editor (or an environment variable) sends into the declared
//! type: numbers and booleans arrive as strings, lists as comma-separated text, `null` from the
//! "None" toggle (docs/open-webui-client.md §5.3).

use serde_json::{Number, Value};
use sluice_sdk::FieldError;

use super::schema::{FieldSpec, FieldType};

/// Longest string a valve takes, in bytes: JSON lists of servers and prices fit many times over.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Most items a list valve takes (model ids, target pipelines).
pub const MAX_ITEMS: usize = 1000;

pub fn coerce(field: &FieldSpec, value: Value) -> Result<Value, FieldError> {
    let err = |message: String| FieldError::new(field.name.clone(), message);
    if value.is_null() {
        return if field.nullable { Ok(Value::Null) } else { Err(err("must not be null".into())) };
    }
    if field.nullable && field.ty != FieldType::String && value.as_str().is_some_and(|s| s.trim().is_empty()) {
        return Ok(Value::Null);
    }
    // A secret sent with the wrong type must not come back in the error.
    let describe = if field.confidential() { hidden } else { describe };
    let coerced = coerce_type(&field.ty, value, describe).map_err(err)?;
    check_size(&coerced).map_err(err)?;
    check_range(field, &coerced).map_err(err)?;
    match &field.choices {
        Some(choices) => choose(field, choices, coerced).map_err(err),
        None => Ok(coerced),
    }
}

/// One of the declared choices. Case does not matter (`Flex` is `flex`), and a near miss is
/// named.
fn choose(field: &FieldSpec, choices: &[Value], value: Value) -> Result<Value, String> {
    if choices.contains(&value) {
        return Ok(value);
    }
    if let Some(text) = value.as_str() {
        if let Some(choice) = choices.iter().find(|c| c.as_str().is_some_and(|c| c.eq_ignore_ascii_case(text))) {
            return Ok(choice.clone());
        }
    }
    let listed = choices.iter().map(display).collect::<Vec<_>>().join(", ");
    if field.confidential() {
        return Err(format!("must be one of {listed}, got {}", hidden(&value)));
    }
    let hint = match value.as_str() {
        Some(text) => crate::suggest::hint(text, choices.iter().filter_map(Value::as_str)),
        None => String::new(),
    };
    Err(format!("must be one of {listed}, got {}{hint}", display(&value)))
}

/// The declared bounds of a number.
fn check_range(field: &FieldSpec, value: &Value) -> Result<(), String> {
    let Some(n) = value.as_f64() else { return Ok(()) };
    let show = |b: f64| if b.fract() == 0.0 { format!("{}", b as i64) } else { b.to_string() };
    match (field.minimum, field.maximum) {
        (Some(min), Some(max)) if n < min || n > max => Err(format!("must be between {} and {}", show(min), show(max))),
        (Some(min), None) if n < min => Err(format!("must be at least {}", show(min))),
        (None, Some(max)) if n > max => Err(format!("must be at most {}", show(max))),
        _ => Ok(()),
    }
}

/// Bounds on what one valve may hold, so an update cannot make every later request carry
/// megabytes (a list of a million model ids is a `/models` answer of 160 MB).
fn check_size(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) if s.len() > MAX_STRING_BYTES => {
            Err(format!("is {} bytes long; at most {MAX_STRING_BYTES} are allowed", s.len()))
        }
        Value::Array(items) if items.len() > MAX_ITEMS => {
            Err(format!("has {} items; at most {MAX_ITEMS} are allowed", items.len()))
        }
        Value::Array(items) => items.iter().try_for_each(check_size),
        Value::Object(map) if map.len() > MAX_ITEMS => {
            Err(format!("has {} keys; at most {MAX_ITEMS} are allowed", map.len()))
        }
        Value::Object(map) => map.values().try_for_each(check_size),
        _ => Ok(()),
    }
}

fn hidden(v: &Value) -> String {
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    format!("{kind} (value not shown)")
}

fn display(v: &Value) -> String {
    if holds_a_key(v) {
        return hidden_key(v);
    }
    match v {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// A key pasted into the wrong field (one that is no secret) came back in the error and went
/// to the log with it (found by a red team): text that looks like one is not shown.
fn holds_a_key(v: &Value) -> bool {
    match v {
        Value::String(s) => looks_like_a_key(s),
        Value::Array(items) => items.iter().any(holds_a_key),
        Value::Object(map) => map.values().any(holds_a_key),
        _ => false,
    }
}

/// Holds a word of sixteen characters or more, made of letters, digits and `-_.+/` only, with
/// letters and digits among them: `sk-...`, `opk-...`, a token, a UUID, also as pasted
/// (`Bearer sk-...`, a line break after it, `NAME=opk-...`; found by a red team). Words end at
/// spaces, quotes and `=,;`. A URL or a time (their `:`) is no key.
pub(crate) fn looks_like_a_key(s: &str) -> bool {
    s.split(|c: char| c.is_whitespace() || matches!(c, '=' | ',' | ';' | '"' | '\'')).any(|word| {
        word.chars().count() >= 16
            && word.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/'))
            && word.chars().any(|c| c.is_ascii_alphabetic())
            && word.chars().any(|c| c.is_ascii_digit())
    })
}

fn hidden_key(v: &Value) -> String {
    let kind = match v {
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        _ => "an object",
    };
    format!("{kind} that holds what looks like a key (not shown)")
}

fn describe(v: &Value) -> String {
    if holds_a_key(v) {
        return hidden_key(v);
    }
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

fn coerce_type(ty: &FieldType, value: Value, describe: fn(&Value) -> String) -> Result<Value, String> {
    match (ty, value) {
        (FieldType::Any, v) => Ok(v),
        (FieldType::String, Value::String(s)) => Ok(Value::String(s)),
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Value::Number(n)),
        (FieldType::Integer, Value::Number(n)) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
            _ => Err(format!("expected an integer, got {n}")),
        },
        (FieldType::Integer, Value::String(s)) => {
            let t = s.trim();
            t.parse::<i64>()
                .map(Value::from)
                .or_else(|_| match t.parse::<f64>() {
                    Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Value::from(f as i64)),
                    _ => Err(()),
                })
                .map_err(|_| format!("expected an integer, got {}", describe(&Value::String(s.clone()))))
        }
        (FieldType::Number, Value::Number(n)) => Ok(Value::Number(n)),
        (FieldType::Number, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) if f.is_finite() => Number::from_f64(f).map(Value::Number).ok_or_else(|| "not a number".into()),
            _ => Err(format!("expected a number, got {}", describe(&Value::String(s)))),
        },
        (FieldType::Boolean, Value::Bool(b)) => Ok(Value::Bool(b)),
        (FieldType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" | "n" | "f" => Ok(Value::Bool(false)),
            _ => Err(format!("expected a boolean, got {}", describe(&Value::String(s)))),
        },
        (FieldType::Boolean, Value::Number(n)) if n.as_f64() == Some(0.0) || n.as_f64() == Some(1.0) => {
            Ok(Value::Bool(n.as_f64() == Some(1.0)))
        }
        (FieldType::Array(item), Value::Array(items)) => items
            .into_iter()
            // The editor splits on commas, so an empty list comes back as [""].
            .filter(|v| !matches!(v, Value::String(s) if s.trim().is_empty()))
            .enumerate()
            .map(|(i, v)| coerce_type(item, v, describe).map_err(|e| format!("item {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (FieldType::Array(item), Value::String(s)) => {
            let trimmed = s.trim();
            if trimmed.starts_with('[') {
                if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(trimmed) {
                    return coerce_type(ty, Value::Array(items), describe);
                }
            }
            let parts = trimmed.split(',').map(|p| Value::String(p.trim().to_string())).collect();
            coerce_type(&FieldType::Array(item.clone()), Value::Array(parts), describe)
        }
        (FieldType::Object, Value::Object(m)) => Ok(Value::Object(m)),
        (FieldType::Object, Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => Ok(Value::Object(m)),
            _ => Err(format!("expected a JSON object, got {}", describe(&Value::String(s)))),
        },
        (ty, v) => Err(format!("expected {}, got {}", expected(ty), describe(&v))),
    }
}

fn expected(ty: &FieldType) -> &'static str {
    match ty {
        FieldType::String => "a string",
        FieldType::Integer => "an integer",
        FieldType::Number => "a number",
        FieldType::Boolean => "a boolean",
        FieldType::Array(_) => "a list",
        FieldType::Object => "a JSON object",
        FieldType::Any => "a value",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(ty: FieldType, nullable: bool) -> FieldSpec {
        FieldSpec {
            name: "F".into(),
            ty,
            nullable,
            choices: None,
            secret: false,
            nested_secrets: Vec::new(),
            minimum: None,
            maximum: None,
        }
    }

    #[test]
    fn a_key_in_the_wrong_field_is_not_shown_in_the_error() {
        let key = "opk-abcdef0123456789abcdef";
        for (ty, value) in [
            (FieldType::Boolean, json!(key)),
            (FieldType::Integer, json!([key])),
            (FieldType::Object, json!(format!("[\"{key}\"]"))),
            // As keys get pasted: with a line break, after `Bearer `, after a space.
            (FieldType::Boolean, json!(format!("{key}\n"))),
            (FieldType::Boolean, json!(format!("Bearer {key}"))),
            (FieldType::Integer, json!(format!(" {key}"))),
        ] {
            let e = coerce(&field(ty, false), value).unwrap_err();
            assert!(e.message.contains("looks like a key") && !e.message.contains("0123456789"), "{}", e.message);
        }
        let mut choice = field(FieldType::String, false);
        choice.choices = Some(vec![json!("low"), json!("high")]);
        let e = coerce(&choice, json!(key)).unwrap_err();
        assert!(!e.message.contains("0123456789"), "{}", e.message);
        // A URL or a time is quoted back, as what is not like a key: it helps to see what was sent.
        for shown in ["https://api.example.com/v1", "2026-01-01T00:00:00.000000Z"] {
            let e = coerce(&field(FieldType::Boolean, false), json!(shown)).unwrap_err();
            assert!(e.message.contains(shown), "{}", e.message);
        }
        // What is not like a key is still quoted back: it helps to see what was sent.
        let e = coerce(&field(FieldType::Boolean, false), json!("yes please")).unwrap_err();
        assert!(e.message.contains("\"yes please\""), "{}", e.message);
    }

    #[test]
    fn open_webui_editor_values_are_coerced() {
        let table = [
            (FieldType::Integer, json!("7"), json!(7)),
            (FieldType::Integer, json!(" 7 "), json!(7)),
            (FieldType::Integer, json!(7.0), json!(7)),
            (FieldType::Number, json!("0.1"), json!(0.1)),
            (FieldType::Number, json!(1), json!(1)),
            (FieldType::Boolean, json!("false"), json!(false)),
            (FieldType::Boolean, json!("True"), json!(true)),
            (FieldType::Array(Box::new(FieldType::String)), json!("a, b,c"), json!(["a", "b", "c"])),
            (FieldType::Array(Box::new(FieldType::String)), json!([""]), json!([])),
            (FieldType::Array(Box::new(FieldType::Integer)), json!(["1", "2"]), json!([1, 2])),
            (FieldType::Object, json!("{\"a\":1}"), json!({"a": 1})),
        ];
        for (ty, input, expected) in table {
            assert_eq!(coerce(&field(ty.clone(), false), input.clone()), Ok(expected), "{ty:?} {input}");
        }
    }

    #[test]
    fn wrong_values_are_refused_with_the_field_name() {
        let table = [
            (FieldType::Integer, json!("abc")),
            (FieldType::Integer, json!(1.5)),
            (FieldType::Number, json!("NaN")),
            (FieldType::Boolean, json!("maybe")),
            (FieldType::String, json!(5)),
            (FieldType::Array(Box::new(FieldType::Integer)), json!("1,x")),
            (FieldType::Object, json!("[1]")),
            (FieldType::String, Value::Null),
        ];
        for (ty, input) in table {
            let result = coerce(&field(ty.clone(), false), input.clone());
            assert!(matches!(&result, Err(e) if e.field == "F"), "{ty:?} {input} -> {result:?}");
        }
    }

    #[test]
    fn secrets_of_the_wrong_type_are_not_echoed() {
        let secret = FieldSpec { secret: true, ..field(FieldType::String, false) };
        let e = coerce(&secret, json!(["sk-live-123456"])).unwrap_err();
        assert!(!e.message.contains("sk-live") && e.message.contains("a list"), "{e:?}");
        let e = coerce(&field(FieldType::String, false), json!(["visible"])).unwrap_err();
        assert!(e.message.contains("visible"), "ordinary values are shown: {e:?}");
    }

    #[test]
    fn sizes_are_bounded() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        assert!(coerce(&field(FieldType::String, false), json!(long)).is_err());
        let many: Vec<Value> = (0..=MAX_ITEMS).map(|i| json!(format!("m{i}"))).collect();
        let list = FieldType::Array(Box::new(FieldType::String));
        assert!(coerce(&field(list.clone(), false), json!(many)).unwrap_err().message.contains("1001 items"));
        assert!(coerce(&field(list, false), json!(vec!["a"; 1000])).is_ok());
    }

    #[test]
    fn optional_fields_take_null_and_blank() {
        assert_eq!(coerce(&field(FieldType::Integer, true), Value::Null), Ok(Value::Null));
        assert_eq!(coerce(&field(FieldType::Integer, true), json!("")), Ok(Value::Null));
        assert_eq!(coerce(&field(FieldType::String, true), json!("")), Ok(json!("")));
    }
}
