//! The inlet or outlet of a pipeline whose hook would change nothing: the body goes back as the
//! bytes that came, and no tree is built (for a long chat, building and writing it again was
//! most of the request's cost). Broken JSON, a form that is not an object, a missing or
//! non-object `body` and a `user` that is neither an object nor null get the parsed path's
//! errors. What is never built is not judged: the value count, nesting depth and repeated keys
//! inside `body` (the caller's own bytes come back); a repeated top-level `body`, which the
//! parsed path resolves to the last one, is refused here (422).

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::body::RawBody;
use crate::error::ApiError;

/// The request's two fields, as text; any other field is ignored as the parsed path does.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'a"))]
struct Form<'a> {
    #[serde(default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    user: Option<&'a RawValue>,
}

impl Form<'_> {
    const NONE: Self = Form { body: None, user: None };
}

/// `Some` for a field that is there, `null` included (an `Option` would make `null` absent).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Answers `raw`'s `body` field, or the error the parsed path would give.
pub async fn answer(raw: RawBody) -> Result<HttpResponse, ApiError> {
    let (bytes, _reservation) = raw.into_parts();
    let body = crate::body::read_off_thread_if_large(bytes, "read", body_of).await?;
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// The `body` field of the request, a slice of the same buffer.
fn body_of(bytes: &Bytes) -> Result<Bytes, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the request body is empty".into()));
    }
    let object = bytes.trim_ascii_start().starts_with(b"{");
    // serde reads a struct from an array too: only an object is a form.
    let form: Result<Form<'_>, _> = if object {
        serde_json::from_slice(bytes)
    } else {
        serde_json::from_slice::<&RawValue>(bytes).map(|_| Form::NONE)
    };
    let form = match form {
        Ok(form) if object => form,
        Ok(_) => {
            return Err(ApiError::Unprocessable("the request must be a JSON object with a \"body\" object".into()))
        }
        // An object of the wrong shape (a field given twice).
        Err(e) if e.is_data() => return Err(ApiError::Unprocessable(e.to_string())),
        Err(e) => return Err(ApiError::MalformedJson(e.to_string())),
    };
    let body = match form.body {
        Some(body) if body.get().starts_with('{') => body,
        Some(_) => return Err(ApiError::Unprocessable("body: must be a JSON object".into())),
        None => return Err(ApiError::Unprocessable("body: field required".into())),
    };
    if form.user.is_some_and(|u| u.get() != "null" && !u.get().starts_with('{')) {
        return Err(ApiError::Unprocessable("user: must be a JSON object or null".into()));
    }
    Ok(bytes.slice_ref(body.get().as_bytes()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<String, ApiError> {
        body_of(&Bytes::copy_from_slice(text.as_bytes())).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn the_body_goes_back_byte_for_byte() {
        let body = r#"{"model": "m", "messages": [{"role":"user","content":"caf\u00e9 \"x\""}], "n": 1.50}"#;
        let got = check(&format!(r#"{{"user": null, "body": {body}, "other": [1]}}"#)).unwrap();
        assert_eq!(got, body, "numbers, escapes and spacing are kept as sent");
        assert!(check(&format!(r#"{{"body": {body}, "user": {{"id": "u"}}}}"#)).is_ok());
    }

    #[test]
    fn wrong_shapes_get_the_parsed_paths_errors() {
        let unprocessable = |text: &str, want: &str| match check(text) {
            Err(ApiError::Unprocessable(m)) => assert!(m.contains(want), "{text}: {m}"),
            other => panic!("{text}: {other:?}"),
        };
        unprocessable(r#"{"user": null}"#, "body: field required");
        unprocessable(r#"{"body": null}"#, "body: must be a JSON object");
        unprocessable(r#"{"body": [1]}"#, "body: must be a JSON object");
        unprocessable(r#"{"body": {}, "user": "u"}"#, "user: must be a JSON object or null");
        unprocessable(r#"[{"body": {}}]"#, "JSON object with a \"body\" object");
        unprocessable(r#"{"body": {}, "body": {}}"#, "duplicate field `body`");
        for broken in ["", "  ", r#"{"body": {"a": }"#, r#"{"body": {}"#, "{\"body\": {\"a\": \"\\x\"}}"] {
            assert!(matches!(check(broken), Err(ApiError::MalformedJson(_))), "{broken:?}");
        }
    }
}
