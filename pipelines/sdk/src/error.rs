//! Errors a pipeline reports. The server maps each [`ErrorKind`] to one HTTP status before a
//! stream starts, and to an in-stream `{"error": ...}` line after it has.

use std::fmt;

/// What went wrong, as far as the caller needs to know. Decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be served as sent (400).
    BadRequest,
    /// A filter refused the request on purpose, e.g. a rate limit (403).
    Rejected,
    /// What the request names does not exist (404), e.g. a chat an action was asked about.
    NotFound,
    /// The upstream said no too many times (429).
    RateLimited,
    /// The upstream answered with an error or a broken stream (502).
    Upstream,
    /// The upstream or a dependency is not reachable right now (503).
    Unavailable,
    /// The upstream took longer than allowed (504).
    Timeout,
    /// The pipeline cannot serve until the operator sets something (a missing API key): 503,
    /// told apart from an outage by its type so alerts can route it to configuration.
    NotConfigured,
    /// A bug or an unexpected state inside the pipeline (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status used when the error happens before any byte of the answer was sent.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Rejected => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RateLimited => 429,
            ErrorKind::Upstream => 502,
            ErrorKind::Unavailable | ErrorKind::NotConfigured => 503,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// The `error.type` string of an in-stream or JSON error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "invalid_request_error",
            ErrorKind::Rejected => "rejected",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Upstream => "upstream_error",
            ErrorKind::Unavailable => "service_unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotConfigured => "not_configured",
            ErrorKind::Internal => "internal_error",
        }
    }
}

/// An error with a message meant for the person in the chat. Messages must never contain
/// secrets: they are shown to users and logged.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineError {
    pub kind: ErrorKind,
    pub message: String,
    /// A machine-readable code from the upstream (`insufficient_quota`, `server_error`, ...).
    pub code: Option<String>,
    /// How long the upstream asked callers to wait; sent on as `Retry-After` when the error
    /// becomes an HTTP status (Open WebUI passes it on to API callers).
    pub retry_after: Option<std::time::Duration>,
    /// Whether the caller should try again, when the pipe knows better than the status: `false`
    /// once the pipe's own retries are spent (OpenAI clients retry 429 and 5xx themselves, which
    /// would multiply the upstream calls). Sent as `x-should-retry`.
    pub retry: Option<bool>,
}

impl PipelineError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), code: None, retry_after: None, retry: None }
    }

    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// This error with each of `secrets` replaced by `********` in every text a caller sees:
    /// the message and the upstream's code (a red team had an upstream put the key in its
    /// `code`, which went out as it was).
    pub fn redacted(mut self, secrets: &[&str]) -> Self {
        if let std::borrow::Cow::Owned(clean) = crate::secret::redact(&self.message, secrets) {
            self.message = clean;
        }
        if let Some(std::borrow::Cow::Owned(clean)) = self.code.as_deref().map(|c| crate::secret::redact(c, secrets)) {
            self.code = Some(clean);
        }
        self
    }

    /// Says the caller should not retry (see [`PipelineError::retry`]).
    pub fn final_(mut self) -> Self {
        self.retry = Some(false);
        self
    }

    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Rejected, message)
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Upstream, message)
    }

    /// A setting the operator must provide is missing; no client retry can help.
    pub fn not_configured(message: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorKind::NotConfigured, message);
        e.retry = Some(false);
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PipelineError {}

/// Why work handed to another thread or task did not come back, without what a panic said:
/// its message may quote the request (the server's panic hook logs it).
pub fn join_failure(e: &tokio::task::JoinError) -> &'static str {
    if e.is_panic() {
        "it hit a bug (a panic, written to the server's log)"
    } else {
        "it was cancelled"
    }
}

/// An error and its causes, `: `-separated, each said once. Library errors often say little
/// at the top ("builder error") and the reason at the bottom ("no such file").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod join_failure_tests {
    use super::join_failure;

    #[tokio::test]
    async fn a_panic_is_named_without_its_message() {
        let panicked = tokio::spawn(async { panic!("a caller's text") }).await.err().unwrap();
        assert_eq!(join_failure(&panicked), "it hit a bug (a panic, written to the server's log)");
        let task = tokio::spawn(std::future::pending::<()>());
        task.abort();
        assert_eq!(join_failure(&task.await.err().unwrap()), "it was cancelled");
    }
}
