//! The chat request as the server reads it (docs/protocol.md §6.1, §6.3): the few fields it
//! needs checked and typed, everything else passed through to the pipe in request order.

use actix_web::http::header::HeaderMap;
use serde_json::{Map, Value};
use sluice_sdk::Dialect;

use crate::error::ApiError;

/// A checked `/chat/completions` request.
#[derive(Debug)]
pub struct ChatRequest {
    pub model: String,
    pub dialect: Dialect,
    /// The default applied: `true` for Open WebUI (the reference's default), `false` for other
    /// clients (OpenAI's).
    pub stream: bool,
    /// `stream_options.include_usage`: other clients get the usage chunk only when they ask.
    pub include_usage: bool,
    /// The body as the pipe sees it: `stream`, `model`, `messages`, then the rest in request
    /// order.
    pub body: Map<String, Value>,
    /// Open WebUI's `user` object, when it sent one.
    pub user: Option<Value>,
}

/// How Open WebUI is told apart from other OpenAI clients, by what it sends: a `user` object
/// (`{"id", "name", "email", "role"}`, added to every request for a Pipelines model; OpenAI's
/// `user` is a string), or its `X-OpenWebUI-*` headers (sent when it forwards user info).
pub fn dialect_of(form: &Map<String, Value>, headers: &HeaderMap) -> Dialect {
    let user_object = form.get("user").is_some_and(Value::is_object);
    let owui_header = headers.keys().any(|name| name.as_str().starts_with("x-openwebui-"));
    if user_object || owui_header {
        Dialect::OpenWebUi
    } else {
        Dialect::OpenAi
    }
}

impl ChatRequest {
    pub fn parse(form: Value, headers: &HeaderMap) -> Result<ChatRequest, ApiError> {
        let Value::Object(mut form) = form else {
            return Err(ApiError::Unprocessable("the request body must be a JSON object".into()));
        };
        let dialect = dialect_of(&form, headers);
        let (model, stream) = validate(&form, dialect)?;
        let include_usage = match dialect {
            Dialect::OpenWebUi => true,
            Dialect::OpenAi => {
                form.get("stream_options").and_then(|o| o.get("include_usage")) == Some(&Value::Bool(true))
            }
        };
        let mut body = Map::with_capacity(form.len() + 1);
        body.insert("stream".into(), stream.into());
        for key in ["model", "messages"] {
            if let Some(v) = form.shift_remove(key) {
                body.insert(key.into(), v);
            }
        }
        form.shift_remove("stream");
        body.extend(form);
        let user = body.get("user").filter(|u| u.is_object()).cloned();
        Ok(ChatRequest { model, dialect, stream, include_usage, body, user })
    }
}

/// `stream` as the reference parses it: lax booleans; absent means `true` for Open WebUI (§6.1)
/// and `false` for other clients, as in OpenAI's API.
fn stream_flag(value: Option<&Value>, dialect: Dialect) -> Result<bool, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(dialect == Dialect::OpenWebUi),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
        Some(Value::Number(n)) if n.as_f64() == Some(1.0) => Ok(true),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
            _ => Err(ApiError::Unprocessable(format!("stream: expected a boolean, got {s:?}"))),
        },
        Some(other) => Err(ApiError::Unprocessable(format!("stream: expected a boolean, got {other}"))),
    }
}

/// Checks the few fields the server itself needs; everything else passes through to the pipe.
/// `content: null` and array content are accepted (the reference rejects the former).
fn validate(form: &Map<String, Value>, dialect: Dialect) -> Result<(String, bool), ApiError> {
    let model = match form.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(ApiError::Unprocessable("model: must not be empty".into())),
        Some(_) => return Err(ApiError::Unprocessable("model: must be a string".into())),
        None => return Err(ApiError::Unprocessable("model: field required".into())),
    };
    let messages = match form.get("messages") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::Unprocessable("messages: must be a list".into())),
        None => return Err(ApiError::Unprocessable("messages: field required".into())),
    };
    crate::body::check_messages(messages)?;
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(message) = message else {
            return Err(ApiError::Unprocessable(format!("messages[{i}]: must be an object")));
        };
        match message.get("role") {
            Some(Value::String(_)) => {}
            Some(_) => return Err(ApiError::Unprocessable(format!("messages[{i}].role: must be a string"))),
            None => return Err(ApiError::Unprocessable(format!("messages[{i}].role: field required"))),
        }
        match message.get("content") {
            None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "messages[{i}].content: must be a string, a list of parts or null"
                )))
            }
        }
    }
    if let Some(user) = form.get("user") {
        if !user.is_object() && !user.is_null() && !user.is_string() {
            return Err(ApiError::Unprocessable("user: must be an object".into()));
        }
    }
    Ok((model, stream_flag(form.get("stream"), dialect)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_defaults_by_dialect_and_parses_laxly() {
        assert!(matches!(stream_flag(None, Dialect::OpenAi), Ok(false)));
        assert!(matches!(stream_flag(None, Dialect::OpenWebUi), Ok(true)));
        assert!(matches!(stream_flag(Some(&json!("no")), Dialect::OpenWebUi), Ok(false)));
        assert!(matches!(stream_flag(Some(&json!(0)), Dialect::OpenWebUi), Ok(false)));
        assert!(stream_flag(Some(&json!("maybe")), Dialect::OpenWebUi).is_err());
        assert!(stream_flag(Some(&json!([])), Dialect::OpenWebUi).is_err());
    }
}
