//! Filters that want to see an answer this server gave (the reporting filter reports Open
//! WebUI's background tasks, and API chats that get no outlet, from them). A non-streamed
//! answer is shown once it is built; a streamed one is recorded event by event as it goes out
//! and shown when it ends complete (a client that leaves takes its half answer with it).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde_json::{Map, Value};
use sluice_sdk::clock::unix_ms;
use sluice_sdk::{Dialect, PipeEvent, PipeStream, Pipeline, ServedCompletion};

use crate::sse::{self, Envelope};

/// What the observers are shown besides the answer.
pub struct Observation {
    pub observers: Vec<Arc<dyn Pipeline>>,
    pub model: String,
    pub request: Map<String, Value>,
    pub started_at_ms: u64,
    /// Large requests are shown off the runtime's threads (crate::offload).
    pub heavy: bool,
}

impl Observation {
    /// Shows `completion` to every observer, after the answer, off the request path.
    pub fn show(self, completion: Value, streamed: bool) {
        let served = ServedCompletion {
            model: self.model,
            request: self.request,
            response: completion,
            started_at_ms: self.started_at_ms,
            finished_at_ms: unix_ms(),
            streamed,
        };
        let observers = self.observers;
        tokio::spawn(crate::offload::run(self.heavy, async move {
            for f in observers {
                f.observe_completion(&served).await;
            }
        }));
    }

    /// `events` as they are, recorded; shown as one completion when they end.
    pub fn record(self, events: PipeStream, envelope: Envelope, dialect: Dialect) -> PipeStream {
        Box::pin(Recorded { inner: events, seen: Vec::new(), after: Some((self, envelope, dialect)) })
    }
}

struct Recorded {
    inner: PipeStream,
    seen: Vec<PipeEvent>,
    after: Option<(Observation, Envelope, Dialect)>,
}

impl Stream for Recorded {
    type Item = PipeEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<PipeEvent>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(event)) => {
                this.seen.push(event.clone());
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                if let Some((observation, envelope, dialect)) = this.after.take() {
                    let seen = std::mem::take(&mut this.seen);
                    // An answer that ended with an error is no answer to show.
                    if !seen.iter().any(|e| matches!(e, PipeEvent::Error(_))) {
                        tokio::spawn(async move {
                            let events: PipeStream = Box::pin(futures_util::stream::iter(seen));
                            if let Ok(completion) = sse::collect(events, envelope, dialect).await {
                                observation.show(completion, true);
                            }
                        });
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
