//! Chat messages as Open WebUI and OpenAI clients send them: `content` is a string, a list of
//! parts (`{"type": "text", "text": ...}`, images, files) or null.

use std::borrow::Cow;

use serde_json::Value;

/// The text of a message's `content`: the string itself, or the `text` of every part that has
/// one, joined with `joiner`. Callers choose the joiner for what the parts are: separate blocks
/// of a chat message (`"\n"`), or fragments of one text (`""`).
pub fn text<'a>(content: Option<&'a Value>, joiner: &str) -> Cow<'a, str> {
    match content {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Array(parts)) => Cow::Owned(
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(joiner),
        ),
        _ => Cow::Borrowed(""),
    }
}

/// The role of a message, `""` when it has none.
pub fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_text_from_strings_and_parts() {
        let parts = json!([{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "b"}]);
        assert_eq!(text(Some(&parts), "\n"), "a\nb");
        assert_eq!(text(Some(&parts), ""), "ab");
        assert_eq!(text(Some(&json!("plain")), "\n"), "plain");
        assert_eq!(text(None, "\n"), "");
        assert_eq!(role(&json!({"role": "user"})), "user");
    }
}
