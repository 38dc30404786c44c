//! "Add this chat to a dataset" (docs/reporting.md §11.3): what the reference's dataset action
//! did with a button, asked for here through `POST /openpipe_reporting/actions/dataset_add`
//! or `sluice openpipe dataset-add`. The turns come from sluice's own store: with
//! `DATASET_TURNS_KEEP_DAYS` > 0 each reported turn is kept as the entry it would make. The
//! entries go through the durable outbox like reports; a turn already added to a dataset is
//! not added to it again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_sdk::outbox::{KvWrite, NewEntry};
use sluice_sdk::{ErrorKind, PipelineError};

use crate::blocks::{self, Answer};
use crate::runtime::{load, Runtime};
use crate::valves::{DatasetSplit, ReportingValves};
use crate::{delivery, dpo, now_ms, OpenPipeReporting, QUEUE};

/// A reported turn as a dataset entry would hold it, by `chat|message`.
const TURN_NS: &str = "openpipe_reporting.dataset_turn";
/// The kept turns of a chat, oldest first, by chat id.
const CHAT_NS: &str = "openpipe_reporting.dataset_chat";
/// Turns already added, by `dataset|chat|message`.
const ADDED_NS: &str = "openpipe_reporting.dataset_added";
/// Turns of one chat kept at most (the oldest go first).
const MAX_TURNS_PER_CHAT: usize = 500;
/// How long an addition is remembered, so a second request does not duplicate the entry.
const ADDED_TTL: Duration = Duration::from_secs(365 * 86_400);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptTurn {
    pub messages: Vec<Value>,
    pub model: String,
    pub user_id: Option<String>,
    pub reported_at_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ChatTurns {
    turns: Vec<String>,
}

/// The entry's messages: the request, the answer's tool calls and results, the final text
/// (reasoning removed).
pub(crate) fn entry_messages(request_messages: &[Value], answer: &Answer) -> Vec<Value> {
    let mut messages = request_messages.to_vec();
    messages.extend(blocks::call_pairs(answer, answer.calls.len()));
    messages.push(json!({"role": "assistant", "content": dpo::strip_think(answer.final_text())}));
    messages
}

/// What one `dataset_add` asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    chat_id: String,
    message_id: Option<String>,
    dataset: Option<String>,
    split: Option<DatasetSplit>,
}

fn bad(message: impl Into<String>) -> PipelineError {
    PipelineError::bad_request(message)
}

impl OpenPipeReporting {
    /// The writes that keep a reported turn for a later `dataset_add`, with the turn list of
    /// its chat (read here, written with the report).
    pub(crate) async fn keep_for_datasets(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        chat_id: &str,
        message_id: &str,
        turn: KeptTurn,
    ) -> Vec<KvWrite> {
        if v.DATASET_TURNS_KEEP_DAYS == 0 {
            return Vec::new();
        }
        let ttl = Duration::from_secs(u64::from(v.DATASET_TURNS_KEEP_DAYS) * 86_400);
        let mut list: ChatTurns = match load(rt, CHAT_NS, chat_id).await {
            Ok(list) => list.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "openpipe: store unreadable; this turn is not kept for datasets");
                return Vec::new();
            }
        };
        if !list.turns.iter().any(|t| t == message_id) {
            list.turns.push(message_id.to_string());
        }
        if list.turns.len() > MAX_TURNS_PER_CHAT {
            let excess = list.turns.len() - MAX_TURNS_PER_CHAT;
            list.turns.drain(..excess);
        }
        vec![
            KvWrite::Put { namespace: TURN_NS.into(), key: format!("{chat_id}|{message_id}"), value: json!(turn), ttl },
            KvWrite::Put { namespace: CHAT_NS.into(), key: chat_id.to_string(), value: json!(list), ttl },
        ]
    }

    /// `dataset_add`: `{"chat_id", "message_id"?, "dataset"?, "split"?}`. Every kept turn of the
    /// chat (or the one named) becomes an entry; the answer says how many were queued.
    pub(crate) async fn dataset_add(&self, body: Value) -> Result<Value, PipelineError> {
        let v = self.valves.get();
        let request: AddRequest = serde_json::from_value(body).map_err(|e| {
            bad(format!("{e}; expected {{\"chat_id\": ..., \"message_id\"?: ..., \"dataset\"?: ..., \"split\"?: \"TRAIN\" | \"TEST\"}}"))
        })?;
        if request.chat_id.trim().is_empty() {
            return Err(bad("chat_id: must not be empty"));
        }
        let dataset = request.dataset.unwrap_or_else(|| v.DEFAULT_DATASET_NAME.clone());
        if dataset.trim().is_empty() {
            return Err(bad("no dataset: name one in \"dataset\", or set DEFAULT_DATASET_NAME"));
        }
        if v.OPENPIPE_API_KEY.is_empty() {
            return Err(PipelineError::not_configured("no OPENPIPE_API_KEY: nothing can be sent to OpenPipe"));
        }
        if v.DATASET_TURNS_KEEP_DAYS == 0 {
            return Err(PipelineError::not_configured(
                "reported turns are not kept (DATASET_TURNS_KEEP_DAYS = 0): set it, and turns reported from then on can be added",
            ));
        }
        let Some(rt) = self.runtime.get() else {
            return Err(PipelineError::internal("openpipe_reporting has not started"));
        };
        let store_error =
            |e: sluice_sdk::StoreError| PipelineError::new(ErrorKind::Unavailable, format!("the store: {e}"));
        let chat = request.chat_id;
        let ids = match request.message_id {
            Some(id) => vec![id],
            None => load::<ChatTurns>(rt, CHAT_NS, &chat).await.map_err(store_error)?.unwrap_or_default().turns,
        };
        let split = match request.split.unwrap_or(v.DEFAULT_SPLIT) {
            DatasetSplit::TRAIN => "TRAIN",
            DatasetSplit::TEST => "TEST",
        };
        let (mut entries, mut kv, mut already, mut found) = (Vec::new(), Vec::new(), 0, 0);
        for id in &ids {
            let Some(turn) = load::<KeptTurn>(rt, TURN_NS, &format!("{chat}|{id}")).await.map_err(store_error)? else {
                continue;
            };
            found += 1;
            let added_key = format!("{dataset}|{chat}|{id}");
            if rt.store.get(ADDED_NS, &added_key).await.map_err(store_error)?.is_some() {
                already += 1;
                continue;
            }
            let mut metadata = serde_json::Map::new();
            for (k, val) in [
                ("source", Some("open-webui")),
                ("kind", Some("conversation")),
                ("chat_id", Some(chat.as_str())),
                ("message_id", Some(id.as_str())),
                ("model", Some(turn.model.as_str())),
                ("user_id", turn.user_id.as_deref()),
            ] {
                if let Some(val) = val.filter(|s| !s.is_empty()) {
                    metadata.insert(k.into(), Value::String(val.into()));
                }
            }
            entries.push(json!({"messages": turn.messages, "split": split, "metadata": metadata}));
            kv.push(KvWrite::Put {
                namespace: ADDED_NS.into(),
                key: added_key,
                value: json!(now_ms()),
                ttl: ADDED_TTL,
            });
        }
        if found == 0 {
            return Err(PipelineError::new(
                ErrorKind::NotFound,
                format!(
                    "no reported turn of chat {chat:?} is kept (turns reported in the last {} days are)",
                    v.DATASET_TURNS_KEEP_DAYS
                ),
            ));
        }
        let kind = if v.AUTO_CREATE_DATASET { delivery::KIND_DATASET } else { delivery::KIND_DATASET_EXISTING };
        let queued = entries.len();
        let jobs: Vec<NewEntry> = entries
            .chunks(100)
            .map(|chunk| NewEntry {
                id: uuid::Uuid::new_v4().to_string(),
                kind: kind.into(),
                target: dataset.clone(),
                body: json!({"entries": chunk}),
            })
            .collect();
        if !jobs.is_empty() || !kv.is_empty() {
            rt.outbox.enqueue(QUEUE, jobs, kv).await.map_err(store_error)?;
            rt.wake.notify_one();
        }
        self.counters.dataset_entries_queued.fetch_add(queued as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(json!({"dataset": dataset, "chat_id": chat, "queued": queued, "already_added": already}))
    }
}
