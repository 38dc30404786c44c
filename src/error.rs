//! One error type for every route. Each variant maps to one status and a JSON body with a
//! `detail` string, which Open WebUI displays (docs/protocol.md §2, §11 item 4).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};
use sluice_sdk::valves::join_errors;
use sluice_sdk::{FieldError, PipelineError};

mod reason_phrase;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Not authenticated")]
    NotAuthenticated,
    #[error("Invalid authentication credentials")]
    InvalidCredentials,
    #[error("Invalid API key")]
    InvalidKey,
    #[error("{0}")]
    NotFound(String),
    /// With the methods the route takes (its `Allow` header).
    #[error("Method Not Allowed")]
    MethodNotAllowed(&'static str),
    #[error("Malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// A body within the byte limit with too many values, messages or parts.
    #[error("{0}")]
    TooComplex(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("The request body did not arrive within {0} s")]
    BodyTimeout(u64),
    /// Refused for now, to keep the server responsive; worth retrying.
    #[error("{0}")]
    Busy(String),
    #[error("More than one Authorization header")]
    DuplicateAuthorization,
    #[error("Invalid valves: {}", join_errors(.0))]
    InvalidValves(Vec<FieldError>),
    #[error("{}", join_errors(.0))]
    PinnedValves(Vec<FieldError>),
    #[error("{0}")]
    NotSupported(String),
    /// The request names something it may not change (a built-in pipeline).
    #[error("{0}")]
    Conflict(String),
    /// What was sent cannot be used, and the message says why (a component that is no pipeline).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    /// Something on the server side failed (a file that cannot be written). The message is for
    /// the operator; it names files, never secrets.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::valves::ValvesError> for ApiError {
    fn from(e: crate::valves::ValvesError) -> Self {
        use crate::valves::ValvesError as V;
        match e {
            V::PipelineNotFound(id) => ApiError::pipeline_not_found(&id),
            V::NoValves(id) => ApiError::NotFound(format!("Valves for {id} not found")),
            V::Invalid(errors) => ApiError::InvalidValves(errors),
            V::Pinned(errors) => ApiError::PinnedValves(errors),
            V::Reload(e) => ApiError::Unprocessable(e.to_string()),
            e @ (V::Io(_) | V::NotShared(_) | V::Hook { .. }) => ApiError::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// A panic, caught: its message may quote the request, so the caller gets these words and
    /// the log the rest (telemetry::log_panics).
    pub fn bug() -> Self {
        ApiError::Internal("the server hit a bug; it is in the server's log".into())
    }

    pub fn pipeline_not_found(id: &str) -> Self {
        ApiError::NotFound(format!("Pipeline {id} not found"))
    }

    /// OpenAI's `error.type` and `error.code` for this error (the SDKs build their exception's
    /// class from the status and its text from `error.message`).
    fn openai_kind(&self) -> (&'static str, Option<&'static str>) {
        match self {
            ApiError::NotAuthenticated | ApiError::InvalidCredentials => ("permission_error", None),
            ApiError::InvalidKey => ("authentication_error", Some("invalid_api_key")),
            ApiError::NotFound(_) => ("not_found_error", Some("not_found")),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", Some("method_not_allowed")),
            ApiError::MalformedJson(_) => ("invalid_request_error", Some("invalid_json")),
            ApiError::Unprocessable(_) | ApiError::InvalidValves(_) => ("invalid_request_error", None),
            ApiError::PayloadTooLarge(_) | ApiError::TooComplex(_) => {
                ("invalid_request_error", Some("request_too_large"))
            }
            ApiError::UnsupportedMediaType(_) => ("invalid_request_error", Some("unsupported_media_type")),
            ApiError::BodyTimeout(_) => ("timeout", None),
            ApiError::Busy(_) => ("service_unavailable", None),
            ApiError::DuplicateAuthorization => ("invalid_request_error", None),
            ApiError::PinnedValves(_) => ("conflict_error", None),
            ApiError::NotSupported(_) => ("invalid_request_error", Some("not_supported")),
            ApiError::Conflict(_) => ("conflict_error", None),
            ApiError::BadRequest(_) => ("invalid_request_error", None),
            ApiError::Pipeline(e) => (e.kind.as_str(), None),
            ApiError::Internal(_) => ("server_error", None),
        }
    }

    /// The field an error is about, when its message starts with one (`model: field required`).
    fn param(&self) -> Option<String> {
        let message = match self {
            ApiError::Unprocessable(m) | ApiError::TooComplex(m) => m,
            ApiError::InvalidValves(errors) | ApiError::PinnedValves(errors) => {
                return errors.first().map(|e| e.field.clone()).filter(|f| !f.is_empty())
            }
            ApiError::Pipeline(e) => &e.message,
            _ => return None,
        };
        let (head, _) = message.split_once(": ")?;
        // Request parameters are snake_case paths (`messages[0].content`); a capitalised head is
        // a speaker ("OpenAI: Rate limit reached…"), not a parameter.
        let is_path = !head.is_empty()
            && head.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c));
        is_path.then(|| head.to_string())
    }

    /// Both shapes in one body: `detail` for Pipelines clients (Open WebUI reads it) and
    /// OpenAI's `error` for every OpenAI client (docs/open-webui-client.md §4.7).
    fn body(&self) -> Value {
        let detail = self.to_string();
        let (kind, code) = self.openai_kind();
        let (message, code) = match self {
            ApiError::Pipeline(e) => (e.message.clone(), e.code.clone()),
            _ => (detail.clone(), code.map(str::to_owned)),
        };
        let error = json!({"message": message, "type": kind, "param": self.param(), "code": code});
        match self {
            ApiError::InvalidValves(errors) | ApiError::PinnedValves(errors) => {
                json!({"detail": detail, "errors": errors, "error": error})
            }
            _ => json!({"detail": detail, "error": error}),
        }
    }

    /// `x-should-retry`, which OpenAI's SDKs obey: `false` where trying again cannot help (the key
    /// was refused, the quota is spent, the pipe already retried), or where the pipe says so.
    fn should_retry(&self) -> Option<bool> {
        match self {
            ApiError::NotAuthenticated | ApiError::InvalidCredentials | ApiError::InvalidKey => Some(false),
            ApiError::Pipeline(e) if e.code.as_deref() == Some("insufficient_quota") => Some(false),
            ApiError::Pipeline(e) => e.retry,
            _ => None,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotAuthenticated | ApiError::InvalidCredentials => StatusCode::FORBIDDEN,
            ApiError::InvalidKey => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) | ApiError::InvalidValves(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) | ApiError::TooComplex(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DuplicateAuthorization => StatusCode::BAD_REQUEST,
            ApiError::PinnedValves(_) => StatusCode::CONFLICT,
            ApiError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Pipeline(e) => StatusCode::from_u16(e.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
        }
        let mut response = HttpResponse::build(status);
        // Open WebUI shows only the reason phrase of a failed inlet and logs only the reason
        // phrase of a failed valves update (it reads the body too late): put the message there
        // too. Auth refusals keep the standard phrase, as the reference does.
        if !matches!(
            self,
            ApiError::NotAuthenticated
                | ApiError::InvalidCredentials
                | ApiError::InvalidKey
                | ApiError::DuplicateAuthorization
        ) {
            if let Some(phrase) = reason_phrase::of(self) {
                response.reason(phrase);
            }
        }
        if let ApiError::Busy(_) = self {
            response.insert_header(("retry-after", "5"));
        }
        if let ApiError::MethodNotAllowed(allowed) = self {
            response.insert_header((actix_web::http::header::ALLOW, *allowed));
        }
        if let Some(retry) = self.should_retry() {
            response.insert_header(("x-should-retry", if retry { "true" } else { "false" }));
        }
        if let ApiError::Pipeline(PipelineError { retry_after: Some(wait), .. }) = self {
            // A pipeline passes on what its upstream asked; `retry-after-ms: 9e18` is no wait a
            // client can keep (a red team).
            let ms = (*wait).min(MAX_RETRY_AFTER).as_millis();
            response.insert_header(("retry-after", ms.div_ceil(1000).to_string()));
            response.insert_header(("retry-after-ms", ms.to_string()));
        }
        response.json(self.body())
    }
}

/// The longest wait a client is told to make before it tries again.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_passed_on_is_at_most_a_day() {
        for (asked, seconds) in [(2, "2"), (86_400, "86400"), (9_000_000_000_000_000, "86400")] {
            let error = PipelineError {
                retry_after: Some(std::time::Duration::from_secs(asked)),
                ..PipelineError::new(sluice_sdk::ErrorKind::RateLimited, "slow down")
            };
            let response = actix_web::ResponseError::error_response(&ApiError::Pipeline(error));
            assert_eq!(
                response.headers().get("retry-after").map(|v| v.as_bytes()),
                Some(seconds.as_bytes()),
                "{asked}"
            );
        }
    }

    #[test]
    fn param_names_a_request_parameter_only() {
        let param = |e: ApiError| e.body()["error"]["param"].clone();
        assert_eq!(param(ApiError::Unprocessable("messages[0]: must be an object".into())), "messages[0]");
        let upstream = sluice_sdk::PipelineError::new(sluice_sdk::ErrorKind::RateLimited, "OpenAI: Rate limit reached");
        assert_eq!(param(ApiError::Pipeline(upstream)), Value::Null, "the speaker is not a parameter");
        let refused = sluice_sdk::PipelineError::new(sluice_sdk::ErrorKind::BadRequest, "seed: not supported");
        assert_eq!(param(ApiError::Pipeline(refused)), "seed");
    }
}
