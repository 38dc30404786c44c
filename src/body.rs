//! Request bodies, read within bounds: size, time, shape and how many large ones at once. Every
//! route that takes JSON goes through [`json_body`], so no route can be made to hold a
//! connection forever, build an unbounded tree, or starve the health check.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::HttpRequest;
use futures_util::StreamExt;
use serde_json::Value;
use sluice_sdk::json_values::count_values;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Bodies above this are parsed or checked on the blocking pool, not on an HTTP worker thread.
const PARSE_INLINE_BYTES: usize = 64 * 1024;
/// Bodies above this take their size from the shared budget ([`BodyConfig::budget`]).
const LARGE_BYTES: usize = 1024 * 1024;
/// How long a large body may wait for room in the budget before it is refused.
const BUDGET_WAIT: Duration = Duration::from_secs(30);
/// The budget counts KiB, so a semaphore's permit range covers any size.
const BUDGET_UNIT: usize = 1024;

/// How request bodies are read. One for the app; a resource may register a smaller one (the
/// valves editor sends kilobytes).
#[derive(Clone)]
pub struct BodyConfig {
    /// Largest body in bytes (413 above).
    pub limit: usize,
    /// Most JSON values in one body (413 above): a 20 MB body of `{}` is 8 million values and
    /// 600 MB of tree.
    pub max_nodes: usize,
    /// The whole body must arrive within this (408 after): a body sent a byte a second would
    /// otherwise hold its connection and its task forever.
    pub timeout: Duration,
    /// Bytes of large bodies being read or handled at once (in KiB), shared by every resource.
    budget: Arc<Semaphore>,
    budget_total: u32,
}

impl BodyConfig {
    /// `budget_bytes`: how much of large bodies may be in flight at once.
    pub fn new(limit: usize, max_nodes: usize, timeout: Duration, budget_bytes: usize) -> Self {
        let total = u32::try_from(budget_bytes / BUDGET_UNIT).unwrap_or(u32::MAX).max(1);
        BodyConfig { limit, max_nodes, timeout, budget: Arc::new(Semaphore::new(total as usize)), budget_total: total }
    }

    /// The same budget and bounds with another size limit.
    pub fn with_limit(&self, limit: usize) -> Self {
        BodyConfig { limit, ..self.clone() }
    }

    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        // Never more than the whole budget, or a body larger than it would wait forever.
        let wanted = u32::try_from(bytes.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX).min(self.budget_total);
        let acquire = Arc::clone(&self.budget).acquire_many_owned(wanted);
        match tokio::time::timeout(BUDGET_WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::Busy("too many large requests are being handled; try again shortly".into())),
        }
    }
}

/// A parsed body and its share of the large-body budget.
pub struct JsonBody {
    value: Value,
    /// Bytes as received.
    pub len: usize,
    budget: Option<OwnedSemaphorePermit>,
}

/// A large body's share of the budget; the handler holds it until it is done with the body.
pub struct Reservation(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl JsonBody {
    pub fn into_parts(self) -> (Value, Reservation) {
        (self.value, Reservation(self.budget))
    }

    /// Whether the work on this body belongs on the blocking pool ([`crate::offload`]).
    pub fn is_heavy(&self) -> bool {
        self.len > crate::offload::HEAVY_BYTES
    }
}

/// A body as received, within the bounds of the resource's [`BodyConfig`], not yet parsed.
pub struct RawBody {
    bytes: Bytes,
    max_nodes: usize,
    budget: Option<OwnedSemaphorePermit>,
}

impl RawBody {
    /// The bytes and their share of the budget, for a handler that does not parse them.
    pub fn into_parts(self) -> (Bytes, Reservation) {
        (self.bytes, Reservation(self.budget))
    }

    /// Parses it (off the HTTP thread when large).
    pub async fn parse(self) -> Result<JsonBody, ApiError> {
        let RawBody { bytes, max_nodes, budget } = self;
        let len = bytes.len();
        let value = read_off_thread_if_large(bytes, "parsed", move |b| parse_bounded(b, max_nodes)).await?;
        Ok(JsonBody { value, len, budget })
    }
}

/// Runs `read` over a body's bytes: here for a small body, on the blocking pool for a large one,
/// whose reading would hold the HTTP thread. `doing` names the work in the error of a pool that
/// failed ("the request body could not be {doing}").
pub async fn read_off_thread_if_large<T: Send + 'static>(
    bytes: Bytes,
    doing: &'static str,
    read: impl FnOnce(&Bytes) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    if bytes.len() <= PARSE_INLINE_BYTES {
        return read(&bytes);
    }
    web::block(move || read(&bytes))
        .await
        .map_err(|e| ApiError::Internal(format!("the request body could not be {doing}: {e}")))?
}

/// The body of a request as JSON, within the bounds of the resource's [`BodyConfig`].
pub async fn json_body(req: &HttpRequest, payload: web::Payload) -> Result<JsonBody, ApiError> {
    raw_body(req, payload).await?.parse().await
}

/// The body of a request as JSON, within the bounds of `config`.
pub async fn json_body_within(
    req: &HttpRequest,
    payload: web::Payload,
    config: &BodyConfig,
) -> Result<JsonBody, ApiError> {
    raw_body_within(req, payload, config.clone()).await?.parse().await
}

/// The bytes of a request body, within the bounds of the resource's [`BodyConfig`]: encoding,
/// size, arrival time and the large-body budget are checked; the JSON is not.
pub async fn raw_body(req: &HttpRequest, payload: web::Payload) -> Result<RawBody, ApiError> {
    let config = match req.app_data::<web::Data<BodyConfig>>() {
        Some(c) => c.get_ref().clone(),
        None => return Err(ApiError::Internal("no body configuration".into())),
    };
    raw_body_within(req, payload, config).await
}

async fn raw_body_within(req: &HttpRequest, payload: web::Payload, config: BodyConfig) -> Result<RawBody, ApiError> {
    // Every header and every coding listed in one (`identity, br`): the first header alone let
    // a second `Content-Encoding: br` through as plain JSON (red team).
    for value in req.headers().get_all(header::CONTENT_ENCODING) {
        let codings = value.to_str().unwrap_or("?");
        if let Some(coding) =
            codings.split(',').map(str::trim).find(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
        {
            return Err(ApiError::UnsupportedMediaType(format!(
                "request bodies must not be compressed (Content-Encoding: {})",
                coding.chars().take(40).collect::<String>()
            )));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|len| len > config.limit) {
        return Err(ApiError::PayloadTooLarge(config.limit));
    }
    let mut budget = None;
    let bytes = {
        let mut read = std::pin::pin!(read_body(payload, declared, &config, &mut budget));
        // Most bodies came with the head: read at once, they need no timer (arming and
        // clearing one was a visible share of a small request).
        match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
            Poll::Ready(result) => result?,
            Poll::Pending => match tokio::time::timeout(config.timeout, read).await {
                Ok(result) => result?,
                Err(_) => return Err(ApiError::BodyTimeout(config.timeout.as_secs())),
            },
        }
    };
    Ok(RawBody { bytes, max_nodes: config.max_nodes, budget })
}

/// Reads a body up to the limit; larger ones are refused before they are buffered whole. A body
/// takes its share of the budget (its declared length, or the limit without one) once more
/// than [`LARGE_BYTES`] of it have arrived, and is buffered at its declared length only then:
/// taken from the declared length before any byte came, four connections that declared 32 MB
/// and sent nothing held the whole budget, and every large chat waited 30 s for a 503 (found
/// by a red team). A body that came in one chunk (most: a request read in one go) is kept as
/// that chunk, not copied.
async fn read_body(
    mut payload: web::Payload,
    declared: Option<usize>,
    config: &BodyConfig,
    budget: &mut Option<OwnedSemaphorePermit>,
) -> Result<Bytes, ApiError> {
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| unread(e, config.limit))?;
        let held = first.as_ref().map_or(0, Bytes::len) + joined.as_ref().map_or(0, BytesMut::len);
        let held_after = held + chunk.len();
        if held_after > config.limit {
            return Err(ApiError::PayloadTooLarge(config.limit));
        }
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(earlier)) => {
                // Room for what is declared, up to what may be held before the budget is asked.
                let room = declared.unwrap_or(0).min(config.limit).min(LARGE_BYTES).max(held_after);
                let mut both = BytesMut::with_capacity(room);
                both.extend_from_slice(&earlier);
                both.extend_from_slice(&chunk);
                joined = Some(both);
            }
        }
        if budget.is_none() && held_after > LARGE_BYTES {
            let share = declared.unwrap_or(config.limit).min(config.limit);
            *budget = Some(config.reserve(share).await?);
            if let Some(joined) = &mut joined {
                joined.reserve(share.saturating_sub(joined.len()));
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}

/// Why a body could not be read, in the caller's terms: actix-web's own text named Rust's
/// `None` and was answered as broken JSON (a red team).
fn unread(error: actix_web::error::PayloadError, limit: usize) -> ApiError {
    use actix_web::error::PayloadError;
    match error {
        PayloadError::Overflow => ApiError::PayloadTooLarge(limit),
        PayloadError::Incomplete(_) => ApiError::BadRequest(
            "the request body ended before all of it came (the connection closed, or its chunked encoding is broken)"
                .into(),
        ),
        PayloadError::EncodingCorrupted => ApiError::BadRequest("the request body's encoding is broken".into()),
        _ => ApiError::BadRequest("the request body could not be read".into()),
    }
}

/// Parses JSON with a message that says where it is broken, refusing bodies with more values
/// than `max_nodes` before building anything.
pub fn parse_bounded(bytes: &[u8], max_nodes: usize) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson("the request body is empty".into()));
    }
    let nodes = count_values(bytes);
    if nodes > max_nodes {
        return Err(ApiError::TooComplex(format!(
            "the request body holds about {nodes} JSON values; at most {max_nodes} are accepted"
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Most messages in one conversation, and most content parts in one message. Open WebUI
/// forwards whatever its users post; a chat that long is an attack, not a chat.
pub const MAX_MESSAGES: usize = 10_000;
pub const MAX_PARTS: usize = 1_000;

/// Bounds the work a pipeline does per message: counts of messages and of content parts.
pub fn check_messages(messages: &[Value]) -> Result<(), ApiError> {
    if messages.len() > MAX_MESSAGES {
        return Err(ApiError::TooComplex(format!(
            "messages: {} messages; at most {MAX_MESSAGES} are accepted",
            messages.len()
        )));
    }
    for (i, message) in messages.iter().enumerate() {
        if let Some(Value::Array(parts)) = message.get("content") {
            if parts.len() > MAX_PARTS {
                return Err(ApiError::TooComplex(format!(
                    "messages[{i}].content: {} parts; at most {MAX_PARTS} are accepted",
                    parts.len()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_with_too_many_values_are_refused_before_parsing() {
        let many = format!("[{}]", vec!["{}"; 5000].join(","));
        assert!(matches!(parse_bounded(many.as_bytes(), 1000), Err(ApiError::TooComplex(_))));
        assert!(parse_bounded(many.as_bytes(), 20_000).is_ok());
    }
}
