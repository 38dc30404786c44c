//! The only place that knows the wire format of answers. A pipe's [`PipeEvent`]s become
//! `data: <chat.completion.chunk>` lines (Python `json.dumps` style, as the reference writes
//! them, docs/protocol.md §6.5), Open WebUI `{"event": ...}` lines, one finish chunk, one
//! usage chunk, `data: [DONE]`; or, for `stream: false`, one `chat.completion` object.
//!
//! Departures from the reference, each harmless to Open WebUI and fixing a weakness it lists
//! (§11): one chunk id per answer instead of one per chunk, `role` on the first delta, usage
//! once after the finish chunk, errors after the 200 as an `{"error": ...}` line followed by a
//! clean end instead of a cut connection, and `data: [DONE]` terminated by a blank line like
//! every other SSE event.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde_json::{Map, Value};
use sluice_sdk::{Dialect, ErrorKind, FinishReason, PipeEvent, PipeStream, PipelineError, Status, ToolCallDelta};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::json::write_python;
use crate::telemetry::AnswerEnd;

mod collect;
mod frame;

pub use collect::{collect, MAX_COLLECTED_BYTES};
use frame::{DeltaFrame, TextField};

/// The stream terminator.
pub const DONE: &[u8] = b"data: [DONE]\n\n";
/// Sent when a pipe is silent for a while, so proxies and clients with idle limits keep the
/// connection; Open WebUI ignores comment lines (docs/open-webui-client.md §4.1).
pub const PING: &[u8] = b": ping\n\n";

/// `id`, `created` and `model` shared by every chunk of one answer.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Envelope {
    /// `id` is `<requested model>-<uuid4>` as in the reference.
    pub fn new(model: &str) -> Self {
        Self {
            id: format!("{model}-{}", uuid::Uuid::new_v4()),
            created: sluice_sdk::clock::unix_secs(),
            model: model.to_string(),
        }
    }
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
}

impl<'a> Chunk<'a> {
    /// The answer's one chunk shape: `delta` as its only choice.
    fn of(envelope: &'a Envelope, delta: Delta<'a>, finish_reason: Option<&'a str>) -> Self {
        Chunk {
            id: &envelope.id,
            object: "chat.completion.chunk",
            created: envelope.created,
            model: &envelope.model,
            choices: [Choice { index: 0, delta, logprobs: None, finish_reason }],
        }
    }
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallOut<'a>; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    images: Option<Vec<ImageOut<'a>>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Serialize)]
struct ImageOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    image_url: ImageUrl<'a>,
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: &'a str,
}

#[derive(Serialize)]
struct UsageChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
    usage: &'a Map<String, Value>,
}

fn data_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    out.extend_from_slice(b"data: ");
    // Serialising our own structs and JSON values into memory cannot fail.
    let _ = write_python(out, value);
    out.extend_from_slice(b"\n\n");
}

fn status_value(status: &Status) -> Value {
    let mut data = Map::new();
    // Some Open WebUI status kinds carry no text (`sources_retrieved`): no empty description.
    if !status.description.is_empty() {
        data.insert("description".into(), status.description.clone().into());
    }
    data.insert("done".into(), status.done.into());
    if status.hidden {
        data.insert("hidden".into(), true.into());
    }
    for (k, v) in &status.extra {
        data.insert(k.clone(), v.clone());
    }
    event_value("status", Value::Object(data))
}

fn event_value(kind: &str, data: Value) -> Value {
    serde_json::json!({"event": {"type": kind, "data": data}})
}

/// The in-stream error line Open WebUI shows (docs/open-webui-client.md §4.7).
pub fn error_value(error: &PipelineError) -> Value {
    serde_json::json!({"error": {"message": error.message, "type": error.kind.as_str(), "code": error.code}})
}

/// What a stream carries besides the answer, by who asked (docs/protocol.md §6.5).
#[derive(Debug, Clone, Copy)]
pub struct Form {
    /// Open WebUI's `{"event": ...}` lines (status, sources, notifications). Other OpenAI
    /// clients read every `data:` line as a chunk and fail on these.
    pub events: bool,
    /// The usage chunk (`"choices": []`): always for Open WebUI, for other clients only when
    /// they set `stream_options.include_usage`, as OpenAI does.
    pub usage: bool,
}

impl Form {
    pub fn of(dialect: Dialect, include_usage: bool) -> Form {
        match dialect {
            Dialect::OpenWebUi => Form { events: true, usage: true },
            Dialect::OpenAi => Form { events: false, usage: include_usage },
        }
    }
}

/// Turns events into SSE bytes, one answer at a time.
pub struct StreamEncoder {
    envelope: Envelope,
    form: Form,
    role_sent: bool,
    tool_calls_seen: bool,
    finish: Option<FinishReason>,
    usage: Option<Map<String, Value>>,
    /// The last status, if it was not `done`: the end of the stream closes it, or Open WebUI
    /// keeps a spinner (docs/manifold.md §5.7).
    open_status: Option<String>,
    /// The bytes around a text delta's one field, made once per answer: most chunks of an
    /// answer differ only in that field, and escaping the rest for each was a measurable share
    /// of a streamed event's CPU (docs/performance.md, 2026-12-03, late).
    frame: Option<DeltaFrame>,
}

impl StreamEncoder {
    pub fn new(envelope: Envelope, form: Form) -> Self {
        Self {
            envelope,
            form,
            role_sent: false,
            tool_calls_seen: false,
            finish: None,
            usage: None,
            open_status: None,
            frame: None,
        }
    }

    /// A delta of one text field: through the answer's frame once the role went out (the
    /// first delta carries it and takes the general way).
    fn text_delta(&mut self, out: &mut Vec<u8>, field: TextField, text: &str) {
        if self.role_sent && self.frame.is_none() {
            self.frame = DeltaFrame::of(&self.envelope);
        }
        match &self.frame {
            Some(frame) if self.role_sent => frame.write(out, field, text),
            _ => self.delta(out, field.delta(text), None),
        }
    }

    fn delta(&mut self, out: &mut Vec<u8>, mut delta: Delta<'_>, finish_reason: Option<&str>) {
        if !self.role_sent && finish_reason.is_none() {
            delta.role = Some("assistant");
            self.role_sent = true;
        }
        data_line(out, &Chunk::of(&self.envelope, delta, finish_reason));
    }

    /// Encodes one event. Returns `false` when the answer is over (an error was written).
    pub fn encode(&mut self, event: PipeEvent, out: &mut Vec<u8>) -> bool {
        match event {
            PipeEvent::Text(text) => self.text_delta(out, TextField::Content, &text),
            PipeEvent::Reasoning(text) => self.text_delta(out, TextField::Reasoning, &text),
            PipeEvent::ToolCall(call) => {
                self.tool_calls_seen = true;
                let ToolCallDelta { index, id, name, arguments } = &call;
                let out_call = ToolCallOut {
                    index: *index,
                    id: id.as_deref(),
                    kind: (id.is_some() || name.is_some()).then_some("function"),
                    function: FunctionOut { name: name.as_deref(), arguments },
                };
                self.delta(out, Delta { tool_calls: Some([out_call]), ..Delta::default() }, None)
            }
            PipeEvent::Annotations(list) => {
                self.delta(out, Delta { annotations: Some(&list), ..Delta::default() }, None)
            }
            PipeEvent::Images(urls) => {
                let images =
                    urls.iter().map(|u| ImageOut { kind: "image_url", image_url: ImageUrl { url: u } }).collect();
                self.delta(out, Delta { images: Some(images), ..Delta::default() }, None)
            }
            PipeEvent::Status(_) | PipeEvent::Source(_) | PipeEvent::Notification { .. } if !self.form.events => {}
            PipeEvent::Status(status) => {
                self.open_status = (!status.done).then(|| status.description.clone());
                data_line(out, &status_value(&status));
            }
            PipeEvent::Source(data) => data_line(out, &event_value("source", data)),
            PipeEvent::Notification { level, content } => {
                data_line(out, &event_value("notification", serde_json::json!({"type": level, "content": content})))
            }
            PipeEvent::Usage(usage) => self.usage = Some(usage),
            PipeEvent::Finish(reason) => self.finish = Some(reason),
            PipeEvent::Error(error) => {
                self.fail(&error, out);
                return false;
            }
        }
        true
    }

    fn close_status(&mut self, out: &mut Vec<u8>) {
        if let Some(description) = self.open_status.take() {
            data_line(out, &status_value(&Status::new(description, true)));
        }
    }

    /// The end of a successful answer: finish chunk, usage chunk, `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.close_status(out);
        let reason =
            self.finish.unwrap_or(if self.tool_calls_seen { FinishReason::ToolCalls } else { FinishReason::Stop });
        self.delta(out, Delta::default(), Some(reason.as_str()));
        if let Some(usage) = self.usage.take().filter(|_| self.form.usage) {
            let chunk = UsageChunk {
                id: &self.envelope.id,
                object: "chat.completion.chunk",
                created: self.envelope.created,
                model: &self.envelope.model,
                choices: [],
                usage: &usage,
            };
            data_line(out, &chunk);
        }
        out.extend_from_slice(DONE);
    }

    /// The end of a failed answer: the error line, then `[DONE]`.
    pub fn fail(&mut self, error: &PipelineError, out: &mut Vec<u8>) {
        self.close_status(out);
        data_line(out, &error_value(error));
        out.extend_from_slice(DONE);
    }
}

/// Upper bound of one write when several events are ready at once.
const BATCH_BYTES: usize = 16 * 1024;

/// How a stream is driven besides the pipe's own events.
#[derive(Clone)]
pub struct StreamOptions {
    /// Silence after which a `: ping` comment is sent.
    pub keepalive: Option<Duration>,
    /// Cancelled when the server's shutdown grace is over: the answer ends with an error line.
    pub deadline: CancellationToken,
}

/// How far the answer's first write is. It goes out alone and is written before anything
/// more is asked of the pipe: a pipe whose events are all ready at once (a burst from the
/// upstream) would otherwise fill the connection's whole buffer before its first byte left.
#[derive(PartialEq)]
enum Opening {
    NothingOut,
    FirstOut,
    Flowing,
}

struct Driver {
    events: PipeStream,
    encoder: StreamEncoder,
    /// Resolves when the server's shutdown grace is over. Made once per answer: a fresh
    /// `cancelled()` per event registers and unregisters a waiter each time.
    deadline: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The keep-alive interval and its timer, moved on lazily: an event only notes the time
    /// ([`Driver::last_out`]); the timer is set again when it fires, not per event.
    keepalive: Option<(Duration, Pin<Box<Sleep>>)>,
    last_out: Instant,
    opening: Opening,
    done: bool,
    log: crate::telemetry::AnswerLog,
    /// Dropped with the response body (client gone, or answer over): cancels the pipe's token.
    _cancel_on_drop: DropGuard,
}

impl Driver {
    fn encode(&mut self, event: PipeEvent, out: &mut Vec<u8>) {
        if !self.encoder.encode(event, out) {
            self.done = true;
            self.log.end = Some(AnswerEnd::Failed);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.encoder.finish(out);
        self.done = true;
        self.log.end = Some(AnswerEnd::Completed);
    }

    /// The keep-alive timer fired: a ping if nothing went out for a whole interval, else the
    /// timer moves to an interval after the last output.
    fn keepalive_fired(&mut self, out: &mut Vec<u8>) {
        let Some((every, timer)) = &mut self.keepalive else { return };
        let now = Instant::now();
        let due = self.last_out + *every;
        if due <= now {
            out.extend_from_slice(PING);
            timer.as_mut().reset(now + *every);
        } else {
            timer.as_mut().reset(due);
        }
    }
}

/// Waits for the keep-alive timer, or forever without one.
async fn keepalive_timer(keepalive: &mut Option<(Duration, Pin<Box<Sleep>>)>) {
    match keepalive {
        Some((_, timer)) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// The response body of a streamed answer. Dropping it (actix does when the client leaves)
/// drops the pipe's stream and cancels its token, so upstream requests stop too.
pub fn body(
    events: PipeStream,
    envelope: Envelope,
    form: Form,
    options: StreamOptions,
    cancel: CancellationToken,
    log: crate::telemetry::AnswerLog,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let now = Instant::now();
    let driver = Driver {
        events,
        encoder: StreamEncoder::new(envelope, form),
        deadline: Box::pin(options.deadline.cancelled_owned()),
        keepalive: options.keepalive.map(|every| (every, Box::pin(tokio::time::sleep_until(now + every)))),
        last_out: now,
        opening: Opening::NothingOut,
        done: false,
        log,
        _cancel_on_drop: cancel.drop_guard(),
    };
    futures_util::stream::unfold(driver, |mut d| async move {
        if d.done {
            return None;
        }
        if d.opening == Opening::FirstOut {
            // Pending once: the connection writes what it holds before polling again.
            d.opening = Opening::Flowing;
            tokio::task::yield_now().await;
        }
        let mut out = Vec::new();
        while out.is_empty() {
            tokio::select! {
                biased;
                _ = d.deadline.as_mut() => {
                    let error = PipelineError::new(ErrorKind::Unavailable, "sluice is shutting down; the answer was cut short");
                    d.encoder.fail(&error, &mut out);
                    d.done = true;
                    d.log.end = Some(AnswerEnd::CutByShutdown);
                }
                event = d.events.next() => {
                    match event {
                        Some(event) => d.encode(event, &mut out),
                        None => d.finish(&mut out),
                    }
                    // The pipe's first output is the answer's first write; a ping before it is not.
                    if !out.is_empty() && d.opening == Opening::NothingOut {
                        d.opening = Opening::FirstOut;
                    }
                }
                _ = keepalive_timer(&mut d.keepalive) => d.keepalive_fired(&mut out),
            }
        }
        // Events that are already waiting go out in the same write: one syscall and one TCP
        // segment for a burst instead of one per token.
        while !d.done && d.opening == Opening::Flowing && out.len() < BATCH_BYTES {
            match d.events.next().now_or_never() {
                Some(Some(event)) => d.encode(event, &mut out),
                Some(None) => d.finish(&mut out),
                None => break,
            }
        }
        d.log.bytes += out.len() as u64;
        if d.keepalive.is_some() {
            d.last_out = Instant::now();
        }
        Some((Ok(Bytes::from(out)), d))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::telemetry::AnswerLog;

    /// The body's items, as text: each item is one write of the connection.
    async fn writes(events: PipeStream, keepalive: Option<Duration>) -> Vec<String> {
        let options = StreamOptions { keepalive, deadline: CancellationToken::new() };
        let form = Form { events: false, usage: false };
        let body = body(events, Envelope::new("m"), form, options, CancellationToken::new(), AnswerLog::detached());
        body.map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap()).collect().await
    }

    /// `n` text events, all ready at once (an upstream's burst).
    fn burst(n: usize) -> impl futures_util::Stream<Item = PipeEvent> {
        futures_util::stream::iter((0..n).map(|i| PipeEvent::text(format!("t{i}."))))
    }

    #[tokio::test]
    async fn a_bursts_first_event_is_written_alone_and_the_rest_together() {
        let w = writes(burst(50).boxed(), None).await;
        assert!(w[0].contains("t0.") && !w[0].contains("t1."), "{w:?}");
        assert!(w[1].contains("t1.") && w[1].contains("t49.") && w[1].ends_with("data: [DONE]\n\n"), "{w:?}");
        assert_eq!(w.len(), 2, "{w:?}");
    }

    #[tokio::test]
    async fn a_ping_before_the_answer_is_not_its_first_write() {
        let late = futures_util::stream::once(tokio::time::sleep(Duration::from_millis(300))).flat_map(|_| burst(50));
        let w = writes(late.boxed(), Some(Duration::from_millis(100))).await;
        let first = w.iter().position(|w| !w.starts_with(": ping")).unwrap();
        assert!(first >= 1 && w[..first].iter().all(|w| w == ": ping\n\n"), "{w:?}");
        assert!(w[first].contains("t0.") && !w[first].contains("t1."), "{w:?}");
        assert!(w[first + 1].contains("t1.") && w[first + 1].contains("t49."), "{w:?}");
    }
}
