//! A streamed answer once the upstream stream is open: each upstream event becomes the
//! client's events when the response body asks for the next one, on the connection's own task.
//! No task or channel sits between the upstream and the client: each hand-off per event was
//! CPU the answer did not need (docs/performance.md, 2026-12-03).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use sluice_sdk::{KvStore, PipeEvent, PipeStream, PipelineError};

use crate::convert::{Converter, Outcome};
use crate::replay;
use crate::request_log::RequestLog;
use crate::upstream::{Events, Upstream};
use crate::valves::ResponsesValves;

/// What an answer needs once the upstream stream is open.
pub struct Answer {
    pub events: Events,
    /// Events read before the answer started (to retry a failure no client has seen).
    pub prefetched: Vec<Value>,
    pub converter: Converter,
    /// The first events are a failure sluice already retried.
    pub retries_spent: bool,
    /// For redacting failure texts of the stream.
    pub valves: Arc<ResponsesValves>,
    /// Where the finished response's items are kept for a later request.
    pub record: Option<RecordPlan>,
    /// The answer's own log (`LOG_LEVEL`), sent as a citation before the end.
    pub log: Option<RequestLog>,
}

pub struct RecordPlan {
    pub store: Arc<dyn KvStore>,
    pub ttl: Duration,
    pub owner: String,
    pub chat_id: Option<String>,
    pub owui_model: String,
    pub model: String,
    pub encrypted_reasoning: bool,
    pub tool_outputs: Vec<Value>,
}

impl RecordPlan {
    /// Keeps a finished response's items under the keys a later request finds them by.
    async fn write(&self, response: &Value) {
        let output = response.get("output").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let keys = replay::keys_of(&self.owner, output);
        if keys.is_empty() {
            return;
        }
        let mut items = self.tool_outputs.clone();
        items.extend(output.iter().cloned());
        let status = response.get("status").and_then(Value::as_str).unwrap_or("completed");
        let value = replay::record_value(
            &self.owner,
            self.chat_id.as_deref(),
            &self.owui_model,
            &self.model,
            response.get("id").and_then(Value::as_str),
            status,
            self.encrypted_reasoning,
            items,
        );
        for key in &keys {
            if let Err(e) = self.store.put(replay::NAMESPACE, key, &value, self.ttl).await {
                tracing::warn!(error = %e, "replay record not written; the next turn replays degraded");
            }
        }
    }
}

/// The answer's events, converted as they are asked for. Dropping the stream (the client
/// left) drops the upstream request with it; a record already being written is finished.
pub fn stream(mut answer: Answer) -> PipeStream {
    let prefetched = std::mem::take(&mut answer.prefetched).into_iter();
    let turn = Turn { answer, prefetched, ready: VecDeque::new(), ended: false };
    futures_util::stream::unfold(turn, |mut turn| async move {
        loop {
            if let Some(event) = turn.ready.pop_front() {
                return Some((event, turn));
            }
            if turn.ended {
                return None;
            }
            turn.step().await;
        }
    })
    .boxed()
}

struct Turn {
    answer: Answer,
    prefetched: std::vec::IntoIter<Value>,
    /// Converted, not yet taken.
    ready: VecDeque<PipeEvent>,
    /// Nothing comes after `ready`.
    ended: bool,
}

impl Turn {
    /// Reads one upstream event and queues what it means for the client.
    async fn step(&mut self) {
        let a = &mut self.answer;
        let next = match self.prefetched.next() {
            Some(event) => Ok(Some(Upstream::Event(event))),
            None => a.events.next_read().await,
        };
        let event = match next {
            // Most of a stream: no tree, no list.
            Ok(Some(Upstream::Text(text))) => return self.ready.push_back(a.converter.on_text(text)),
            Ok(Some(Upstream::Event(event))) => event,
            Ok(None) => {
                return self.end(PipeEvent::Error(PipelineError::upstream("OpenAI: the stream ended unexpectedly")))
            }
            Err(e) => return self.end(PipeEvent::Error(e)),
        };
        match a.converter.on_event(&event) {
            Outcome::Continue(events) => self.ready.extend(events),
            Outcome::Finished { response, tail } => {
                a.events.finish();
                // Stored before the finish goes out: Open WebUI sends the tool results at once.
                let response = match a.record.take() {
                    Some(plan) => written(plan, response).await,
                    None => response,
                };
                if let Some(mut log) = a.log.take() {
                    log.finish(&response);
                    self.ready.push_back(log.into_event(&a.valves));
                }
                self.ready.extend(tail);
                self.ended = true;
            }
            Outcome::Failed(e) => {
                a.events.finish();
                let e = if a.retries_spent { e.final_() } else { e };
                // The log matters most when the answer failed (the Function's "Error Logs").
                if let Some(mut log) = a.log.take() {
                    log.info(format!("the answer failed: {}", e.message));
                    self.ready.push_back(log.into_event(&a.valves));
                }
                let e = a.valves.redact(e);
                self.end(PipeEvent::Error(e));
            }
        }
    }

    fn end(&mut self, last: PipeEvent) {
        self.ready.push_back(last);
        self.ended = true;
    }
}

/// Writes the record on a task of its own, so that a client leaving at this moment (the
/// stream dropped) does not cut the write short; gives the response back.
async fn written(plan: RecordPlan, response: Value) -> Value {
    let response = Arc::new(response);
    let writing = {
        let response = Arc::clone(&response);
        tokio::spawn(async move { plan.write(&response).await })
    };
    if let Err(e) = writing.await {
        tracing::warn!(error = %e, "replay record not written; the next turn replays degraded");
    }
    Arc::try_unwrap(response).unwrap_or_else(|shared| (*shared).clone())
}
