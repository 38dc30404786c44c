//! The HTTP side of `POST {BASE_URL}/responses`: status and error mapping, retry decisions
//! (docs/manifold.md §8), and the event reader with its idle timeout.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::Value;
use sluice_sdk::{ErrorKind, PipelineError};
use tokio::time::{Instant, Sleep};

use crate::convert::upstream_message;
use crate::sse::SseReader;
use crate::valves::ResponsesValves;

/// A failed attempt, with what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub error: PipelineError,
    pub retryable: bool,
    /// The delay the server asked for.
    pub delay: Option<Duration>,
    /// The upstream refused replayed items: retry once without them (§7.5 "Recovery").
    pub replay: bool,
    /// What went wrong below the message (the URL, the error chain): logged, and shown to
    /// admins only with `ERROR_DETAILS_FOR_ADMINS`.
    pub detail: Option<String>,
}

/// Longest server-asked delay we wait for before giving up.
const MAX_ASKED_DELAY: Duration = Duration::from_secs(60);

/// The wait before retry `attempt`: what the upstream asked for, else 0.5 s doubling up to 8 s,
/// less up to a quarter (a user is waiting: never much less than the bound).
pub fn backoff(attempt: u32, asked: Option<Duration>) -> Duration {
    asked.unwrap_or_else(|| {
        sluice_sdk::backoff::backoff(Duration::from_millis(500), Duration::from_secs(8), attempt, 0.25)
    })
}

pub async fn send(
    client: &reqwest::Client,
    valves: &ResponsesValves,
    body: &Value,
) -> Result<reqwest::Response, Failure> {
    let url = format!("{}/responses", valves.BASE_URL.trim_end_matches('/'));
    let mut req = client
        .post(&url)
        .bearer_auth(valves.API_KEY.expose())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(body);
    if let Some(org) = valves.ORGANIZATION.as_deref().filter(|s| !s.is_empty()) {
        req = req.header("OpenAI-Organization", org);
    }
    if let Some(project) = valves.PROJECT.as_deref().filter(|s| !s.is_empty()) {
        req = req.header("OpenAI-Project", project);
    }
    // Waiting for the status line is waiting for the first event: the idle bound applies, or an
    // upstream that accepts the connection and never answers would hold the chat forever.
    let idle = Duration::from_secs(valves.STREAM_IDLE_TIMEOUT_S);
    let resp = match tokio::time::timeout(idle, req.send()).await {
        Err(_) => {
            let seconds = valves.STREAM_IDLE_TIMEOUT_S;
            let detail = format!("no answer from {url} for {seconds} s");
            tracing::warn!(detail = %detail, "OpenAI did not answer");
            let error = PipelineError::new(ErrorKind::Timeout, format!("OpenAI did not answer within {seconds} s"));
            return Err(Failure { error, retryable: true, delay: None, replay: false, detail: Some(detail) });
        }
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            // Chat users get a short message; the URL and the error chain (reqwest names the
            // URL, never headers, so no key) go to the log, and to admins if a valve says so.
            let detail = format!("{url}: {}", sluice_sdk::error_chain(&e));
            tracing::warn!(detail = %detail, "OpenAI could not be reached");
            let (kind, message) = if e.is_timeout() {
                (ErrorKind::Timeout, "OpenAI did not answer in time; try again in a moment")
            } else {
                (ErrorKind::Unavailable, "OpenAI could not be reached; try again in a moment")
            };
            let error = PipelineError::new(kind, message);
            return Err(Failure { error, retryable: true, delay: None, replay: false, detail: Some(detail) });
        }
    };
    let status = resp.status().as_u16();
    if resp.status().is_success() {
        let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
        if ct.contains("text/event-stream") {
            return Ok(resp);
        }
        let error = PipelineError::upstream(format!("OpenAI: answered {ct:?} instead of an event stream"));
        return Err(Failure { error, retryable: false, delay: None, replay: false, detail: None });
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let request_id = header("x-request-id");
    let should_retry = header("x-should-retry");
    // `try_`: a negative, infinite or NaN wait (the upstream's text) is no wait, not a panic.
    let seconds = |v: String, per_second: f64| {
        v.parse::<f64>().ok().and_then(|n| Duration::try_from_secs_f64(n / per_second).ok())
    };
    let asked = header("retry-after-ms")
        .and_then(|v| seconds(v, 1000.0))
        .or_else(|| header("retry-after").and_then(|v| seconds(v, 1.0)));
    let text = error_body(resp, idle).await;
    let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let err = parsed.get("error").unwrap_or(&Value::Null);
    let code = err.get("code").and_then(Value::as_str).map(str::to_owned);
    let message = err.get("message").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| {
        // Redacted before it is cut: a key across the cut would leave its first characters.
        let text = valves.redact_text(&text);
        format!(
            "HTTP {status}{}",
            if text.trim().is_empty() { String::new() } else { format!(": {}", truncate(&text, 200)) }
        )
    });
    let kind = match status {
        400 | 404 | 413 | 422 => ErrorKind::BadRequest,
        429 => ErrorKind::RateLimited,
        _ => ErrorKind::Upstream,
    };
    let quota = code.as_deref() == Some("insufficient_quota");
    let mut retryable = match should_retry.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => matches!(status, 408 | 409 | 429) || status >= 500,
    } && !quota;
    if asked.is_some_and(|d| d > MAX_ASKED_DELAY) {
        retryable = false;
    }
    let replay = (status == 400
        && (code.as_deref() == Some("invalid_encrypted_content") || message.contains("without its required")))
        || (status == 404 && message.starts_with("Item with id"));
    let prefix =
        if matches!(status, 401 | 403) { format!("the API key was refused (HTTP {status}): ") } else { String::new() };
    let message = upstream_message(&format!("{prefix}{message}"), code.as_deref(), request_id.as_deref());
    let mut error = valves.redact(PipelineError { code, ..PipelineError::new(kind, message) });
    error.retry_after = asked.filter(|_| matches!(status, 429 | 503));
    Err(Failure { error, retryable, delay: asked, replay, detail: None })
}

/// Largest error body read; OpenAI's are a few hundred bytes, a misbehaving proxy's need not be.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The most an error answer's body may take to arrive, whatever the idle timeout: it is one
/// small write.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);

/// The text of an error answer, at most [`MAX_ERROR_BODY`] bytes, all of it within `idle` (at
/// most [`ERROR_BODY_TIME`]): whatever arrived by then. With `idle` between reads only, a body
/// sent a byte at a time held the chat for the idle timeout per byte (15 minutes each by
/// default; found by a red team).
async fn error_body(resp: reqwest::Response, idle: Duration) -> String {
    let deadline = tokio::time::Instant::now() + idle.min(ERROR_BODY_TIME);
    let mut body = resp.bytes_stream();
    let mut out = Vec::new();
    while out.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => out.extend_from_slice(&chunk),
            _ => break,
        }
    }
    out.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&out).into_owned()
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Parsed upstream events, one at a time, with an idle timeout.
pub struct Events {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    reader: SseReader,
    /// What is left of the last read: split into events one at a time, as they are asked for.
    unread: Bytes,
    /// The event the reader held when the stream ended without a blank line after it.
    last: Option<String>,
    idle: Duration,
    /// The idle timer, moved on lazily: a wait or a read only notes the time; the timer is set
    /// again when it fires early, not once per read.
    timer: Pin<Box<Sleep>>,
    malformed: u32,
    ended: bool,
    /// Bytes of event data handed out so far.
    pub data_bytes: usize,
}

/// One upstream event as the answer reads it.
#[derive(Debug)]
pub enum Upstream {
    /// A `response.output_text.delta` (most of a stream): its text alone, parsed without
    /// building its other fields (ids, logprobs, obfuscation) into a tree only to drop them.
    Text(String),
    /// Any other event, parsed whole.
    Event(Value),
}

impl Upstream {
    /// The event as a tree: the text delta as `type` and `delta`, all the converter reads.
    pub fn into_value(self) -> Value {
        match self {
            Upstream::Text(text) => serde_json::json!({"type": TEXT_DELTA, "delta": text}),
            Upstream::Event(event) => event,
        }
    }
}

const TEXT_DELTA: &str = "response.output_text.delta";

/// The text of a `response.output_text.delta` event. `None` for any other event, or one that
/// does not read so; those take the full parse.
fn text_delta(data: &str) -> Option<String> {
    const PREFIX: &str = r#"{"type":"response.output_text.delta","#;
    #[derive(serde::Deserialize)]
    struct Delta<'a> {
        // Read so that an event naming its type twice is refused here (serde refuses a
        // duplicate field) and takes the full parse, whose last `type` wins, as before.
        #[serde(rename = "type", borrow)]
        _kind: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        delta: std::borrow::Cow<'a, str>,
    }
    if !data.starts_with(PREFIX) {
        return None;
    }
    let parsed: Delta<'_> = serde_json::from_str(data).ok()?;
    Some(parsed.delta.into_owned())
}

/// Malformed lines tolerated before the stream counts as broken.
const MAX_MALFORMED: u32 = 5;

/// Values one event may hold, counted before it is parsed when it is large: an event of
/// 60 MB of small numbers (under the size limit, which generated images need) became about
/// 3 GB as a parsed tree (found by a red team). A whole response of a long answer holds a few
/// thousand.
const MAX_EVENT_VALUES: usize = 250_000;
/// Events shorter than this cannot hold more values than the bound: the count is skipped.
const COUNT_FROM_BYTES: usize = MAX_EVENT_VALUES;

impl Events {
    pub fn new(resp: reqwest::Response, idle: Duration) -> Self {
        let now = Instant::now();
        Events {
            body: resp.bytes_stream().boxed(),
            reader: SseReader::default(),
            unread: Bytes::new(),
            last: None,
            idle,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            malformed: 0,
            ended: false,
            data_bytes: 0,
        }
    }

    /// The next event as a tree; `Ok(None)` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Value>, PipelineError> {
        Ok(self.next_read().await?.map(Upstream::into_value))
    }

    /// The next event, a text delta read for its text alone; `Ok(None)` when the stream ended.
    pub async fn next_read(&mut self) -> Result<Option<Upstream>, PipelineError> {
        // Idle is counted from the start of this wait: from the last event. Reads do not move
        // it on, or bytes that never make an event (comments, a line that never ends) would
        // hold the answer open for as long as they come (found by a red team).
        let since = Instant::now();
        loop {
            while let Some(data) = self.take()? {
                self.data_bytes += data.len();
                if let Some(text) = text_delta(&data) {
                    return Ok(Some(Upstream::Text(text)));
                }
                if data.len() > COUNT_FROM_BYTES
                    && sluice_sdk::json_values::count_values(data.as_bytes()) > MAX_EVENT_VALUES
                {
                    return Err(PipelineError::upstream("OpenAI: an event held too many values"));
                }
                match serde_json::from_str::<Value>(&data) {
                    Ok(v) if v.is_object() => return Ok(Some(Upstream::Event(v))),
                    _ => {
                        self.malformed += 1;
                        tracing::warn!(bytes = data.len(), "skipped a malformed upstream event");
                        if self.malformed > MAX_MALFORMED {
                            return Err(PipelineError::upstream("OpenAI: the event stream is malformed"));
                        }
                    }
                }
            }
            if self.ended {
                return Ok(None);
            }
            let read = tokio::select! {
                biased;
                read = self.body.next() => Ok(read),
                _ = self.timer.as_mut() => Err(()),
            };
            match read {
                Err(()) if since + self.idle > Instant::now() => self.timer.as_mut().reset(since + self.idle),
                Err(()) => {
                    return Err(PipelineError::new(
                        ErrorKind::Timeout,
                        format!("OpenAI: no event for {} s; the answer was cut short", self.idle.as_secs()),
                    ))
                }
                Ok(None) => {
                    self.ended = true;
                    self.last = self.reader.flush();
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(detail = %sluice_sdk::error_chain(&e), "the connection to OpenAI broke");
                    return Err(PipelineError::upstream("OpenAI: the connection broke; the answer was cut short"));
                }
                Ok(Some(Ok(bytes))) => self.unread = bytes,
            }
        }
    }

    /// The `data` of the next event already read, if there is one.
    fn take(&mut self) -> Result<Option<String>, PipelineError> {
        if self.unread.is_empty() {
            return Ok(self.last.take());
        }
        let mut rest: &[u8] = &self.unread;
        let event = self.reader.next_event(&mut rest);
        let used = self.unread.len() - rest.len();
        self.unread = self.unread.slice(used..);
        event.map_err(|_| PipelineError::upstream("OpenAI: an event exceeded the size limit"))
    }

    /// The answer is over (finished, or failed in an event of its own): reads what is left of
    /// the body (the chunked body's end, a comment) on a task of its own, so the connection
    /// goes back to the pool for the next chat or the retry. A body dropped before its end
    /// closes the connection, and the next chat pays a new connection (a TLS handshake)
    /// whenever that end comes in a write of its own, as from HTTP/1.1 servers that flush each
    /// event (found by a reviewer). Bounded in bytes and time: a body that goes on is dropped.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let mut body = std::mem::replace(&mut self.body, futures_util::stream::empty().boxed());
        tokio::spawn(tokio::time::timeout(MAX_REST_WAIT, async move {
            let mut left = MAX_REST_BYTES;
            while let Some(Ok(bytes)) = body.next().await {
                left = left.saturating_sub(bytes.len());
                if left == 0 {
                    return;
                }
            }
        }));
    }
}

/// What [`Events::finish`] reads at most after an answer's last event, and how long it waits.
const MAX_REST_BYTES: usize = 64 * 1024;
const MAX_REST_WAIT: Duration = Duration::from_secs(2);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_text_delta_reads_as_its_full_parse_does_for_the_converter() {
        let data = r#"{"type":"response.output_text.delta","sequence_number":7,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"caf\u00e9 \"x\"\n","logprobs":[],"obfuscation":"abc"}"#;
        let fast = Upstream::Text(text_delta(data).unwrap()).into_value();
        let full: Value = serde_json::from_str(data).unwrap();
        assert_eq!(fast, serde_json::json!({"type": full["type"], "delta": full["delta"]}));
        // Anything else, or a delta that does not read, takes the full parse.
        assert!(text_delta(r#"{"type":"response.output_text.done","text":"x"}"#).is_none());
        assert!(text_delta(r#"{"type":"response.output_text.delta","delta":7}"#).is_none());
        assert!(text_delta(r#"{"type":"response.output_text.delta","delta":"x""#).is_none());
        // A second `type` is the one the full parse keeps: not a text delta then.
        assert!(text_delta(r#"{"type":"response.output_text.delta","type":"error","delta":"x"}"#).is_none());
    }

    /// The events of a body that arrives in exactly these reads.
    fn events_of(reads: Vec<Vec<u8>>) -> Events {
        let chunks = futures_util::stream::iter(reads.into_iter().map(Ok::<_, std::io::Error>));
        let resp = reqwest::Response::from(http::Response::new(reqwest::Body::wrap_stream(chunks)));
        Events::new(resp, Duration::from_secs(5))
    }

    async fn types(events: &mut Events) -> Result<Vec<String>, PipelineError> {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await? {
            seen.push(event["type"].as_str().unwrap_or("?").to_owned());
        }
        Ok(seen)
    }

    fn event(kind: &str) -> String {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\",\"delta\":\"x\"}}\n\n")
    }

    #[tokio::test]
    async fn events_come_out_whole_and_in_order_however_the_reads_cut_them() {
        let stream = [event("a"), event("response.output_text.delta"), event("b"), event("c")].concat().into_bytes();
        let want = ["a", "response.output_text.delta", "b", "c"];
        // Everything in one read; then every cut into two reads; then a byte per read.
        let mut cuts: Vec<Vec<Vec<u8>>> = vec![vec![stream.clone()]];
        cuts.extend((1..stream.len()).map(|at| vec![stream[..at].to_vec(), stream[at..].to_vec()]));
        cuts.push(stream.iter().map(|b| vec![*b]).collect());
        for reads in cuts {
            let shape: Vec<usize> = reads.iter().map(Vec::len).collect();
            assert_eq!(types(&mut events_of(reads)).await.unwrap(), want, "reads of {shape:?}");
        }
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_a_blank_line_keeps_its_last_event() {
        let mut text = [event("a"), event("b")].concat();
        text.truncate(text.len() - 2);
        assert_eq!(types(&mut events_of(vec![text.into_bytes()])).await.unwrap(), ["a", "b"]);
    }

    #[tokio::test]
    async fn an_oversized_event_after_good_ones_is_refused_after_they_are_handed_on() {
        let mut big = event("a").into_bytes();
        big.extend_from_slice(b"data: ");
        big.resize(big.len() + crate::sse::MAX_EVENT_BYTES + 1, b'x');
        let mut events = events_of(vec![big]);
        assert_eq!(events.next().await.unwrap().unwrap()["type"], "a");
        let refused = events.next().await.unwrap_err();
        assert!(refused.to_string().contains("exceeded the size limit"), "{refused}");
    }

    #[tokio::test]
    async fn an_event_of_too_many_values_is_refused_before_it_is_parsed() {
        let zeros =
            |n: usize| format!("data: {{\"type\":\"response.created\",\"junk\":[{}]}}\n\n", vec!["0"; n].join(","));
        let mut events =
            events_of(vec![zeros(MAX_EVENT_VALUES - 10).into_bytes(), zeros(MAX_EVENT_VALUES + 1).into_bytes()]);
        assert_eq!(events.next().await.unwrap().unwrap()["type"], "response.created");
        let refused = events.next().await.unwrap_err();
        assert_eq!(refused.to_string(), "OpenAI: an event held too many values");
        // A large event of few values (a generated image) is parsed as before.
        let image = format!(
            "data: {{\"type\":\"response.image_generation_call.partial_image\",\"partial_image_b64\":\"{}\"}}\n\n",
            "A".repeat(8 << 20)
        );
        assert_eq!(
            types(&mut events_of(vec![image.into_bytes()])).await.unwrap(),
            ["response.image_generation_call.partial_image"]
        );
    }

    #[tokio::test]
    async fn a_few_malformed_events_are_skipped_and_many_end_the_stream() {
        let bad = "data: {not json\n\n".to_string();
        let few = [bad.repeat(MAX_MALFORMED as usize), event("a")].concat();
        assert_eq!(types(&mut events_of(vec![few.into_bytes()])).await.unwrap(), ["a"]);
        let many = [bad.repeat(MAX_MALFORMED as usize + 1), event("a")].concat();
        let broken = types(&mut events_of(vec![many.into_bytes()])).await.unwrap_err();
        assert!(broken.to_string().contains("malformed"), "{broken}");
    }
}
