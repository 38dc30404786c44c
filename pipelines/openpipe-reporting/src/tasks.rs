//! Background tasks (title, tags, follow-ups...; docs/reporting.md §5.4): Open WebUI sends no
//! outlet for them, so a task's captured inlet is reported with the answer this server gave.

use std::collections::BTreeSet;

use serde_json::json;
use serde_json::Value;
use sluice_sdk::outbox::KvWrite;
use sluice_sdk::{ServedCompletion, StoreError};

use crate::capture::{task_key, Capture, TASK_NS};
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
        let Some(capture) = load::<Capture>(rt, TASK_NS, &key).await? else { return Ok(()) };
        let kv = vec![KvWrite::Delete { namespace: TASK_NS.into(), key }];
        let task = capture.task.clone().unwrap_or_else(|| "unknown".into());
        let interaction =
            if v.INCLUDE_INTERACTION_CLASSIFICATION { Interaction::Task(task.clone()) } else { Interaction::Unknown };
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
            message_id: format!("{message_id}-{task}"),
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
