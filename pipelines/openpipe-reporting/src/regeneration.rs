//! Regenerations (docs/reporting.md §10): each answer joins its siblings (the answers to the
//! same message), a later turn that continues from one of them confirms a preference pair, and
//! confirmed pairs can be submitted to a dataset. The pure parts are in `dpo.rs`; this is the
//! bookkeeping in the store.

use std::time::Duration;

use serde_json::{json, Map, Value};
use sluice_sdk::outbox::KvWrite;
use sluice_sdk::StoreError;

use crate::interaction::Interaction;
use crate::runtime::{load, Runtime};
use crate::valves::ReportingValves;
use crate::{blocks, dpo, OpenPipeReporting};

/// One turn as the regeneration bookkeeping sees it.
pub(crate) struct DpoTurn<'a> {
    pub(crate) chat_id: &'a str,
    pub(crate) session: Option<&'a str>,
    pub(crate) messages: &'a [Value],
    pub(crate) history: &'a [Value],
    pub(crate) interaction: &'a Interaction,
    pub(crate) message_id: &'a str,
    pub(crate) answer: &'a blocks::Answer,
    pub(crate) request: &'a Map<String, Value>,
    pub(crate) model: &'a str,
    pub(crate) user_id: Option<&'a str>,
}

/// Metadata to add, dataset entries to submit, records to write.
#[derive(Default)]
pub(crate) struct DpoOutcome {
    pub(crate) tail: Vec<(String, String)>,
    pub(crate) entries: Vec<Value>,
    pub(crate) kv: Vec<KvWrite>,
}

impl OpenPipeReporting {
    /// Regeneration bookkeeping of one turn (§10): confirms open pairs this turn continues
    /// from, adds the answer to its siblings, and says what to tag and what to submit.
    pub(crate) async fn dpo_turn(
        &self,
        rt: &Runtime,
        v: &ReportingValves,
        t: DpoTurn<'_>,
    ) -> Result<DpoOutcome, StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = DpoOutcome::default();
        let chat = dpo::chat_key(t.chat_id, t.session);
        let parent = dpo::parent_key(t.messages).unwrap_or_default();
        let history_ids: Vec<&str> = t.history.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).collect();
        let window = Duration::from_secs(v.DPO_WINDOW_HOURS * 3600);
        let put = |key: String, namespace: &str, value: Value| KvWrite::Put {
            namespace: namespace.into(),
            key,
            value,
            ttl: window,
        };

        // Confirmation: this turn continues from one sibling of an open pair.
        let mut pending: dpo::PendingList = load(rt, dpo::PENDING_NS, &chat).await?.unwrap_or_default();
        let before = pending.parents.len();
        let mut still_open = Vec::new();
        for p in std::mem::take(&mut pending.parents) {
            let list_key = format!("{chat}|{p}");
            let Some(mut list) = load::<dpo::SiblingList>(rt, dpo::SIBLINGS_NS, &list_key).await? else { continue };
            let Some(chosen) = list.chosen(&history_ids).cloned() else {
                still_open.push(p);
                continue;
            };
            self.counters.dpo_pairs_confirmed.fetch_add(1, Relaxed);
            if v.AUTO_SUBMIT_DPO_PAIRS {
                let rejected = list.rejected(&chosen);
                out.entries.extend(dpo::entries(t.chat_id, &p, &chosen, &rejected, v.DPO_SPLIT));
            }
            list.pending = false;
            out.kv.push(put(list_key, dpo::SIBLINGS_NS, json!(list)));
        }
        pending.parents = still_open;

        // Detection: this answer joins its siblings.
        if t.interaction.is_chat() {
            let list_key = format!("{chat}|{parent}");
            let mut list: dpo::SiblingList = load(rt, dpo::SIBLINGS_NS, &list_key).await?.unwrap_or_default();
            let mut final_messages = t.request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
            final_messages.extend(blocks::call_pairs(t.answer, t.answer.calls.len()));
            let sibling = dpo::Sibling {
                message_id: t.message_id.to_string(),
                text: dpo::normalize(&t.answer.texts),
                final_text: dpo::strip_think(t.answer.final_text()),
                has_tool_calls: !t.answer.calls.is_empty(),
                model: t.model.to_string(),
                request_messages: final_messages,
                user_id: t.user_id.map(str::to_string),
            };
            if let Some(regen) = list.add(sibling) {
                self.counters.dpo_pairs_detected.fetch_add(1, Relaxed);
                out.tail.push(("regenerated_from".into(), regen.regenerated_from));
                out.tail.push(("regeneration_index".into(), regen.index.to_string()));
                if !pending.parents.contains(&parent) {
                    pending.parents.push(parent.clone());
                }
            }
            out.kv.push(put(list_key, dpo::SIBLINGS_NS, json!(list)));
        }
        if before > 0 || !pending.parents.is_empty() {
            out.kv.push(put(chat, dpo::PENDING_NS, json!(pending)));
        }
        Ok(out)
    }
}
