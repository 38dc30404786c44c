//! The outlet's half of a turn (docs/reporting.md §5.2): the finished exchange becomes its
//! reports, written to the outbox with every record that changes with them in one write.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_sdk::digest::sha256_hex;
use sluice_sdk::outbox::{KvWrite, NewEntry};

use crate::capture::{message_text, Capture, CAPTURE_NS};
use crate::interaction::Interaction;
use crate::regeneration::{DpoOutcome, DpoTurn};
use crate::report::{Head, Turn};
use crate::runtime::{degrade, load, Runtime};
use crate::valves::ReportingValves;
use crate::{blocks, delivery, str_at, OpenPipeReporting, QUEUE};

const REPORTED_NS: &str = "openpipe_reporting.reported";
/// How long a reported turn's content hash is kept for dedupe (§4.4).
const REPORTED_TTL: Duration = Duration::from_secs(7 * 86_400);

/// Dedupe record (§4.4).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reported {
    hash: String,
    revision: u32,
}

impl OpenPipeReporting {
    /// Builds and queues the reports of one finished turn (§5.2). Errors are the store's.
    pub(crate) async fn report_turn(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        body: &Value,
        user: Option<&Value>,
        received_at_ms: u64,
        received_mono: u64,
    ) -> Result<(), sluice_sdk::StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(obj) = body.as_object() else { return Ok(()) };
        let messages = obj.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let Some((last, history)) =
            messages.split_last().filter(|(m, _)| m.get("role").and_then(Value::as_str) == Some("assistant"))
        else {
            self.counters.outlet_without_answer.fetch_add(1, Relaxed);
            return Ok(());
        };
        let chat_id = str_at(obj, "chat_id").unwrap_or_default().to_string();
        let given_id = str_at(obj, "id").map(str::to_string);
        let ids_known = !chat_id.is_empty() && given_id.is_some();
        let message_id = given_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let key = format!("{chat_id}|{message_id}");

        let _serial = rt.stripe(&chat_id).lock().await;
        let mut kv = Vec::new();
        // A store that cannot be read (a shared database away) costs the timing and the dedupe,
        // not the report: it goes out as an outlet-only report, deduplicated by its id.
        let capture: Option<Capture> =
            if ids_known { degrade(load(rt, CAPTURE_NS, &key).await, "capture") } else { None };
        if capture.is_some() {
            kv.push(KvWrite::Delete { namespace: CAPTURE_NS.into(), key: key.clone() });
        }

        // The answer as the model produced it. Open WebUI 0.10 saves a web-UI reply as `output`
        // items with an empty `content`: the text is then in their message items.
        let output = last.get("output").and_then(Value::as_array);
        let mut content = blocks::strip_markers(&message_text(last)).into_owned();
        if content.trim().is_empty() {
            if let Some(items) = output {
                content = blocks::output_text(items);
            }
        }
        let answer = if v.PARSE_OPENWEBUI_BLOCKS {
            let parsed = blocks::parse(&content, &message_id);
            match output {
                Some(items) if !content.contains("<details") => {
                    blocks::parse_output(items, &message_id).unwrap_or(parsed)
                }
                _ => parsed,
            }
        } else {
            blocks::Answer { texts: vec![content.clone()], calls: Vec::new() }
        };

        // Dedupe and revisions (§5.5).
        let hash = sha256_hex(
            format!("{content}\n{}", output.map(|o| Value::Array(o.clone())).unwrap_or_default()).as_bytes(),
        );
        let mut revision = 0;
        if ids_known {
            let previous: Option<Reported> = degrade(load(rt, REPORTED_NS, &key).await, "dedupe record");
            if let Some(prev) = previous {
                if prev.hash == hash {
                    self.counters.duplicates.fetch_add(1, Relaxed);
                    if !kv.is_empty() {
                        rt.outbox.enqueue(QUEUE, Vec::new(), kv).await?;
                    }
                    return Ok(());
                }
                revision = prev.revision + 1;
            }
        }

        // The request: captured at the inlet, or rebuilt from the outlet (§5.3).
        let (request, requested_at_ms, inference_ms) = match &capture {
            Some(c) => {
                let elapsed = if c.run_id == rt.run_id {
                    Some(received_mono.saturating_sub(c.mono_ms))
                } else {
                    received_at_ms.checked_sub(c.requested_at_ms).filter(|d| *d <= 86_400_000)
                };
                (c.request.clone(), c.requested_at_ms, elapsed)
            }
            None => {
                let mut req = Map::new();
                if let Some(m) = obj.get("model") {
                    req.insert("model".into(), m.clone());
                }
                req.insert("messages".into(), Value::Array(history.to_vec()));
                let started = last
                    .get("timestamp")
                    .and_then(Value::as_f64)
                    .filter(|t| *t > 0.0)
                    .map(|t| (t * 1000.0) as u64)
                    .unwrap_or(received_at_ms);
                (crate::request::sanitize_request(&req, v.PARSE_OPENWEBUI_BLOCKS), started, None)
            }
        };
        let model_id = str_at(obj, "model")
            .map(str::to_string)
            .or_else(|| capture.as_ref().map(|c| c.model_id.clone()))
            .unwrap_or_else(|| "unknown".into());
        let model = v.reported_model(&model_id, capture.as_ref().and_then(|c| c.base_model_id.as_deref()));

        // Classification and selective reporting (§6).
        let task = capture.as_ref().and_then(|c| c.task.clone());
        let interaction =
            Interaction::classify(v.INCLUDE_INTERACTION_CLASSIFICATION, task.as_deref(), &request, &answer);
        let allowed = v.reports(&interaction);
        if !allowed {
            self.counters.skipped_by_type.fetch_add(1, Relaxed);
            if !kv.is_empty() {
                rt.outbox.enqueue(QUEUE, Vec::new(), kv).await?;
            }
            return Ok(());
        }
        if ids_known {
            let record = json!(Reported { hash, revision });
            kv.push(KvWrite::Put { namespace: REPORTED_NS.into(), key: key.clone(), value: record, ttl: REPORTED_TTL });
        }

        // Metadata (§7.3).
        let user_id = user
            .and_then(|u| u.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| capture.as_ref().and_then(|c| c.user_id.clone()));
        let mut tools: BTreeSet<String> = crate::request::request_tools(&request);
        tools.extend(answer.calls.iter().map(|c| c.name.clone()));
        let head = Head {
            capture: if capture.is_some() { "inlet_outlet" } else { "outlet_only" },
            interaction: interaction.as_str(),
            user_id: user_id.as_deref(),
            chat_id: Some(&chat_id),
            message_id: &message_id,
            model_id: &model_id,
            inference_ms,
            tools,
            calls: answer.calls.len(),
        }
        .pairs(v);

        // DPO bookkeeping (§10).
        let dpo = if v.ENABLE_DPO_DETECTION && ids_known {
            let session =
                capture.as_ref().and_then(|c| c.session_id.clone()).or(str_at(obj, "session_id").map(str::to_string));
            let turn = DpoTurn {
                chat_id: &chat_id,
                session: session.as_deref(),
                messages,
                history,
                interaction: &interaction,
                message_id: &message_id,
                answer: &answer,
                request: &request,
                model: &model,
                user_id: user_id.as_deref(),
            };
            // Sibling lists are rewritten whole: unreadable, they are left alone this turn.
            self.dpo_turn(rt, v, turn).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "openpipe: store unreadable; regeneration bookkeeping skipped this turn");
                DpoOutcome::default()
            })
        } else {
            DpoOutcome::default()
        };
        kv.extend(dpo.kv);
        if ids_known {
            let request_messages =
                request.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let kept = crate::dataset::KeptTurn {
                messages: crate::dataset::entry_messages(request_messages, &answer),
                model: model.to_string(),
                user_id: user_id.clone(),
                reported_at_ms: received_at_ms,
            };
            kv.extend(self.keep_for_datasets(rt, v, &chat_id, &message_id, kept).await);
        }

        // Reports (§7) and the one write that makes them durable (§5.2 step 8).
        let turn = Turn {
            request,
            model,
            message_id: message_id.clone(),
            head,
            tail: dpo.tail,
            custom: v.custom(),
            answer,
            usage: crate::request::usage_of(last),
            revision,
            requested_at_ms,
            received_at_ms,
            shrunk: capture.as_ref().map(|c| c.shrunk.clone()).unwrap_or_default(),
        };
        let dataset_jobs: Vec<NewEntry> = dpo
            .entries
            .chunks(100)
            .map(|chunk| NewEntry {
                id: uuid::Uuid::new_v4().to_string(),
                kind: delivery::KIND_DATASET.into(),
                target: v.DPO_DATASET_NAME.clone(),
                body: json!({"entries": chunk}),
            })
            .collect();
        self.queue_reports(rt, v, &turn, dataset_jobs, kv).await?;
        self.counters.reported.fetch_add(1, Relaxed);
        Ok(())
    }
}
