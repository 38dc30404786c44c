//! One error type for every route. Each variant maps to one status and a JSON body with a
//! `detail` string, which Open WebUI displays (pipelines-protocol.md §2, §11 item 4).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};
use sluice_sdk::{FieldError, PipelineError};

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
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    #[error("Malformed JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("Request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("Invalid valves: {}", join_fields(.0))]
    InvalidValves(Vec<FieldError>),
    #[error("{}", join_fields(.0))]
    PinnedValves(Vec<FieldError>),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    /// Something on the server side failed (a file that cannot be written). The message is for
    /// the operator; it names files, never secrets.
    #[error("{0}")]
    Internal(String),
}

fn join_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    pub fn pipeline_not_found(id: &str) -> Self {
        ApiError::NotFound(format!("Pipeline {id} not found"))
    }

    fn body(&self) -> Value {
        let detail = self.to_string();
        match self {
            ApiError::InvalidValves(errors) | ApiError::PinnedValves(errors) => {
                json!({"detail": detail, "errors": errors})
            }
            // Both shapes: `detail` for Pipelines clients, `error` for OpenAI clients; Open WebUI
            // reads either (open-webui-client.md §4.7).
            ApiError::Pipeline(e) => json!({
                "detail": detail,
                "error": {"message": e.message, "type": e.kind.as_str(), "code": e.code},
            }),
            _ => json!({"detail": detail}),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotAuthenticated | ApiError::InvalidCredentials => StatusCode::FORBIDDEN,
            ApiError::InvalidKey => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) | ApiError::InvalidValves(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PinnedValves(_) => StatusCode::CONFLICT,
            ApiError::NotSupported(_) => StatusCode::NOT_IMPLEMENTED,
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
        HttpResponse::build(status).json(self.body())
    }
}
