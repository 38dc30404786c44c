//! Turns Open WebUI sends no outlet for, reported from their captured inlet and the answer this
//! server gave: background tasks (title, tags, follow-ups...; docs/reporting.md §5.4), and with
//! `REPORT_API_CHATS_FROM_ANSWERS` the chats of API callers on Open WebUI before 0.10 (§5.6).

use std::collections::BTreeSet;

use serde_json::json;
use serde_json::Value;
use sluice_sdk::outbox::KvWrite;
use sluice_sdk::{ServedCompletion, StoreError};

use crate::capture::{task_key, Capture, API_NS, TASK_NS};
use crate::interaction::Interaction;
use crate::report::{Head, Turn};
use crate::runtime::{load, Runtime};
use crate::valves::ReportingValves;
use crate::{blocks, OpenPipeReporting, QUEUE};

impl OpenPipeReporting {
    /// Reports a background task whose inlet was captured, with the answer this server gave.
    pub(crate) async fn report_task(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        served: &ServedCompletion,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let user_id = served.request.get("user").and_then(|u| u.get("id")).and_then(Value::as_str);
        let messages = served.request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let key = task_key(user_id, &served.model, messages);
        let found = match load::<Capture>(rt, TASK_NS, &key).await? {
            Some(capture) => Some((TASK_NS, capture)),
            None if v.REPORT_API_CHATS_FROM_ANSWERS => load::<Capture>(rt, API_NS, &key).await?.map(|c| (API_NS, c)),
            None => None,
        };
        let Some((namespace, capture)) = found else { return Ok(()) };
        let kv = vec![KvWrite::Delete { namespace: namespace.into(), key }];
        let task = capture.task.clone();
        let interaction = match (&task, v.INCLUDE_INTERACTION_CLASSIFICATION) {
            (_, false) => Interaction::Unknown,
            (Some(name), true) => Interaction::Task(name.clone()),
            (None, true) => Interaction::ChatMessage,
        };
        let allowed = v.reports(&interaction);
        if !allowed {
            self.counters.skipped_by_type.fetch_add(1, Relaxed);
            return rt.outbox.enqueue(QUEUE, Vec::new(), kv).await;
        }
        let message = served.response.pointer("/choices/0/message").cloned().unwrap_or(Value::Null);
        let content = message.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
        let message_id = capture.message_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let model = v.reported_model(&capture.model_id, capture.base_model_id.as_deref());
        let head = Head {
            capture: "inlet_completion",
            interaction: interaction.as_str(),
            user_id: capture.user_id.as_deref(),
            chat_id: capture.chat_id.as_deref(),
            message_id: &message_id,
            model_id: &capture.model_id,
            inference_ms: Some(served.finished_at_ms.saturating_sub(capture.requested_at_ms)),
            tools: BTreeSet::new(),
            calls: 0,
        }
        .pairs(v);
        let turn = Turn {
            request: capture.request.clone(),
            model,
            // The chat's own answer uses `chatcmpl-<message id>`; the task gets its own id.
            message_id: match &task {
                Some(task) => format!("{message_id}-{task}"),
                None => message_id.clone(),
            },
            head,
            tail: Vec::new(),
            custom: v.custom(),
            answer: blocks::Answer { texts: vec![content], calls: Vec::new() },
            usage: served.response.get("usage").and_then(|u| crate::request::usage_of(&json!({ "usage": u }))),
            revision: 0,
            requested_at_ms: capture.requested_at_ms,
            received_at_ms: served.finished_at_ms,
            shrunk: capture.shrunk.clone(),
        };
        let count = self.queue_reports(rt, v, &turn, Vec::new(), kv).await?;
        self.counters.task_reports.fetch_add(count, Relaxed);
        Ok(())
    }
}
