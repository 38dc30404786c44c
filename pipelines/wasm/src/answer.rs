//! One answer of a WebAssembly pipe: the host pulls events from the guest's `answer` resource
//! one call at a time (each under the deadline), turning them into [`PipeEvent`]s.

use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use sluice_sdk::{ErrorKind, FinishReason, PipeEvent, PipeRequest, PipeStream, PipelineError, Status, ToolCallDelta};
use wasmtime::component::ResourceAny;

use crate::bindings::types::{self, Event};
use crate::bindings::Pipeline as Bindings;
use crate::runtime::{Call, Compiled};

pub(crate) fn guest_error(error: types::Error) -> PipelineError {
    let kind = match error.kind {
        types::ErrorKind::BadRequest => ErrorKind::BadRequest,
        types::ErrorKind::Rejected => ErrorKind::Rejected,
        types::ErrorKind::NotFound => ErrorKind::NotFound,
        types::ErrorKind::RateLimited => ErrorKind::RateLimited,
        types::ErrorKind::Upstream => ErrorKind::Upstream,
        types::ErrorKind::Unavailable => ErrorKind::Unavailable,
        types::ErrorKind::Timeout => ErrorKind::Timeout,
        types::ErrorKind::NotConfigured => ErrorKind::NotConfigured,
        types::ErrorKind::Internal => ErrorKind::Internal,
    };
    let message: String = error.message.chars().take(2000).collect();
    PipelineError::new(kind, message)
}

/// What each event costs from the answer's budget at least: an endless run of empty events
/// (`text("")`) ends like an endless text does.
const EVENT_COST: usize = 64;
/// Events pulled before the stream lets the runtime run other work: a guest answers `next()`
/// without ever waiting, and a thread that only polls it would starve its neighbours (and
/// never notice the client leave).
const EVENTS_PER_TURN: u32 = 64;

struct Live {
    call: Call,
    bindings: Bindings,
    answer: ResourceAny,
    /// Bytes of text the guest may still send in this answer.
    budget: usize,
    /// When the whole answer must be over.
    until: tokio::time::Instant,
    pulled: u32,
}

/// Instantiates the component and asks it to start; the stream pulls the rest.
pub(crate) async fn start(
    mut call: Call,
    compiled: Arc<Compiled>,
    request: &PipeRequest,
    valves: String,
    budget: usize,
    answer_timeout: std::time::Duration,
) -> Result<PipeStream, PipelineError> {
    let body = Value::Object(request.body.clone()).to_string();
    let user = request.user.as_ref().map(Value::to_string);
    let deadline = call.arm();
    let store = &mut call.store;
    let (bindings, started) = deadline
        .run(async {
            let bindings = compiled.pre.instantiate_async(&mut *store).await?;
            let started = bindings
                .sluice_pipeline_guest()
                .call_pipe(&mut *store, &request.model_id, &body, user.as_deref(), &valves)
                .await?;
            Ok((bindings, started))
        })
        .await?;
    let answer = started.map_err(guest_error)?;
    let until = tokio::time::Instant::now() + answer_timeout;
    let pipeline = Arc::clone(&call.store.data().pipeline);
    let live = Live { call, bindings, answer, budget, until, pulled: 0 };
    let slot = Arc::new(Mutex::new(Some(live)));
    // A client that stops reading stops the pulls, and the answer with its instance would wait
    // for them as long as the connection stays open: at `until` the instance goes back to the
    // pool whether it is pulled or not (a pull under way puts it back only before `until`).
    let watched = Arc::downgrade(&slot);
    tokio::spawn(async move {
        tokio::time::sleep_until(until).await;
        if let Some(slot) = watched.upgrade() {
            drop(take(&slot));
        }
    });
    Ok(Box::pin(futures_util::stream::unfold(Some(Answer { slot, pipeline }), next)))
}

/// An answer as the stream holds it: its instance in a slot the timer may empty.
struct Answer {
    slot: Arc<Mutex<Option<Live>>>,
    pipeline: Arc<str>,
}

fn take(slot: &Mutex<Option<Live>>) -> Option<Live> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn too_long(pipeline: &str) -> PipeEvent {
    PipeEvent::Error(PipelineError::new(
        ErrorKind::Timeout,
        format!("pipeline {pipeline} answered for longer than allowed"),
    ))
}

async fn next(state: Option<Answer>) -> Option<(PipeEvent, Option<Answer>)> {
    let answer = state?;
    // Emptied by the timer, or found past its time here: ended either way.
    let Some(live) = take(&answer.slot).filter(|live| tokio::time::Instant::now() < live.until) else {
        return Some((too_long(&answer.pipeline), None));
    };
    let (event, live) = pull(live).await;
    if let Some(live) = live {
        if tokio::time::Instant::now() < live.until {
            *answer.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(live);
        }
        // Else dropped here: the timer found the slot empty while this pull ran.
        return Some((event?, Some(answer)));
    }
    event.map(|event| (event, None))
}

/// One event of the answer and the answer again, or `None` in its place once it has ended.
async fn pull(mut live: Live) -> (Option<PipeEvent>, Option<Live>) {
    live.pulled = live.pulled.wrapping_add(1);
    if live.pulled.is_multiple_of(EVENTS_PER_TURN) {
        tokio::task::yield_now().await;
    }
    let deadline = live.call.arm();
    let store = &mut live.call.store;
    let answer = live.answer;
    let pulled = deadline.run(live.bindings.sluice_pipeline_guest().answer().call_next(&mut *store, answer)).await;
    let event = match pulled {
        Ok(None) => return (None, None),
        Ok(Some(event)) => event,
        Err(error) => return (Some(PipeEvent::Error(error)), None),
    };
    let size = event_size(&event).max(EVENT_COST);
    if size > live.budget {
        let error = PipelineError::new(
            ErrorKind::Internal,
            format!("pipeline {} sent more text than an answer may hold", live.call.store.data().pipeline),
        );
        return (Some(PipeEvent::Error(error)), None);
    }
    live.budget -= size;
    match convert(event) {
        PipeEvent::Error(error) => (Some(PipeEvent::Error(error)), None),
        event => (Some(event), Some(live)),
    }
}

fn event_size(event: &Event) -> usize {
    match event {
        Event::Text(s) | Event::Reasoning(s) | Event::Source(s) | Event::Usage(s) => s.len(),
        Event::ToolCall(t) => {
            t.arguments.len() + t.name.as_ref().map_or(0, String::len) + t.id.as_ref().map_or(0, String::len)
        }
        Event::Status(s) => s.description.len(),
        Event::Notification((a, b)) => a.len() + b.len(),
        Event::Finish(_) => 0,
        Event::Error(e) => e.message.len(),
    }
}

fn convert(event: Event) -> PipeEvent {
    let bad_json = |what: &str| {
        PipeEvent::Error(PipelineError::new(
            ErrorKind::Internal,
            format!("the pipeline sent a {what} that is no JSON object"),
        ))
    };
    match event {
        Event::Text(text) => PipeEvent::Text(text),
        Event::Reasoning(text) => PipeEvent::Reasoning(text),
        Event::ToolCall(t) => {
            PipeEvent::ToolCall(ToolCallDelta { index: t.index, id: t.id, name: t.name, arguments: t.arguments })
        }
        Event::Status(s) => PipeEvent::Status(Status::new(s.description, s.done)),
        Event::Source(json) => match serde_json::from_str::<Value>(&json) {
            Ok(value @ Value::Object(_)) => PipeEvent::Source(value),
            _ => bad_json("source"),
        },
        Event::Notification((level, content)) => match level.as_str() {
            "info" | "success" | "warning" | "error" => PipeEvent::Notification { level, content },
            _ => PipeEvent::Notification { level: "info".into(), content },
        },
        Event::Usage(json) => match serde_json::from_str::<Value>(&json) {
            Ok(Value::Object(map)) => PipeEvent::Usage(map),
            _ => bad_json("usage"),
        },
        Event::Finish(reason) => PipeEvent::Finish(match reason {
            types::FinishReason::Stop => FinishReason::Stop,
            types::FinishReason::Length => FinishReason::Length,
            types::FinishReason::ToolCalls => FinishReason::ToolCalls,
            types::FinishReason::ContentFilter => FinishReason::ContentFilter,
        }),
        Event::Error(error) => PipeEvent::Error(guest_error(error)),
    }
}
