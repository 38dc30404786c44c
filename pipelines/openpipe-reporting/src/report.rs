//! Building the OpenPipe reports of one finished turn (docs/reporting.md §7–§8): the flat
//! metadata map, the rebuilt `chat.completion`, one step per tool call, and the size cap. The
//! request half is `request.rs`, shrinking `shrink.rs`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::blocks::{call_json, call_pairs, text_or_null, Answer};
use crate::shrink::{omit_images, serialized_len, truncate_message};
use crate::valves::ReportingValves;

/// The reserved metadata keys up to `tool_call_count` (§7.3), for a turn or a task.
pub struct Head<'a> {
    /// `inlet_outlet`, `outlet_only` or `inlet_completion`.
    pub capture: &'static str,
    pub interaction: &'a str,
    pub user_id: Option<&'a str>,
    pub chat_id: Option<&'a str>,
    pub message_id: &'a str,
    pub model_id: &'a str,
    pub inference_ms: Option<u64>,
    /// Tool names seen in the request and the answer.
    pub tools: BTreeSet<String>,
    /// Tool calls in the answer.
    pub calls: usize,
}

impl Head<'_> {
    /// The pairs in §7.3 order, as the valves select them.
    pub fn pairs(&self, v: &ReportingValves) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = vec![
            ("source".into(), "open-webui".into()),
            ("capture".into(), self.capture.into()),
            ("interaction_type".into(), self.interaction.into()),
        ];
        if let Some(u) = self.user_id.filter(|u| !u.is_empty()) {
            out.push(("user_id".into(), u.into()));
        }
        if let Some(c) = self.chat_id.filter(|c| !c.is_empty()) {
            out.push(("chat_id".into(), c.into()));
        }
        out.push(("message_id".into(), self.message_id.into()));
        out.push(("model_id".into(), self.model_id.into()));
        if let (true, Some(ms)) = (v.INCLUDE_TIMING_METRICS, self.inference_ms) {
            out.push(("inference_time_ms".into(), ms.to_string()));
        }
        if v.INCLUDE_TOOL_METRICS {
            if !self.tools.is_empty() {
                out.push(("tools_used".into(), self.tools.iter().cloned().collect::<Vec<_>>().join(",")));
            }
            let has = !self.tools.is_empty() || self.calls > 0;
            out.push(("has_tool_calls".into(), has.to_string()));
            out.push(("tool_call_count".into(), self.calls.to_string()));
        }
        out
    }
}

/// Everything one turn's reports are made of.
pub struct Turn {
    pub request: Map<String, Value>,
    pub model: String,
    pub message_id: String,
    /// Reserved keys up to `tool_call_count`, in §7.3 order.
    pub head: Vec<(String, String)>,
    /// `regenerated_from`, `regeneration_index` when they apply.
    pub tail: Vec<(String, String)>,
    pub custom: Vec<(String, String)>,
    pub answer: Answer,
    pub usage: Option<Value>,
    /// Above 0: the id gets `-r<revision>` and the metadata `revision` (§5.5).
    pub revision: u32,
    pub requested_at_ms: u64,
    pub received_at_ms: u64,
    /// `images_omitted` / `truncated` when the request was shrunk already at capture time.
    pub shrunk: Vec<(String, String)>,
}

/// A report ready for the outbox, or the reason it cannot be sent.
pub struct Built {
    pub body: Value,
    pub too_large: bool,
}

fn meta_object(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

impl Turn {
    fn response_id(&self, step: Option<usize>) -> String {
        let mut id = format!("chatcmpl-{}", self.message_id);
        if let Some(s) = step {
            id.push_str(&format!("-s{s}"));
        }
        if self.revision > 0 {
            id.push_str(&format!("-r{}", self.revision));
        }
        id
    }

    fn metadata(&self, step: Option<(usize, usize)>, cap: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = self.head.clone();
        if let Some((index, count)) = step {
            out.push(("step_index".into(), index.to_string()));
            out.push(("step_count".into(), count.to_string()));
        }
        if self.revision > 0 {
            out.push(("revision".into(), self.revision.to_string()));
        }
        out.extend(self.tail.iter().cloned());
        out.extend(cap.iter().cloned());
        out.extend(self.custom.iter().cloned());
        out
    }

    fn report(&self, k: usize, cap: &[(String, String)], messages: Vec<Value>) -> Value {
        let n = self.answer.calls.len();
        let (step, message, finish) = if k < n {
            let call = &self.answer.calls[k];
            (
                Some((k, n + 1)),
                json!({"role": "assistant", "content": text_or_null(&self.answer.texts[k]), "tool_calls": [call_json(call)]}),
                "tool_calls",
            )
        } else {
            let step = (n > 0).then_some((n, n + 1));
            (step, json!({"role": "assistant", "content": self.answer.final_text()}), "stop")
        };
        let metadata = meta_object(&self.metadata(step, cap));
        let mut req = self.request.clone();
        req.insert("model".into(), Value::String(self.model.clone()));
        req.insert("messages".into(), Value::Array(messages));
        req.insert("metadata".into(), metadata.clone());
        let mut resp = json!({
            "id": self.response_id(step.map(|s| s.0)),
            "object": "chat.completion",
            "created": self.received_at_ms / 1000,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        });
        if k == n {
            if let (Some(usage), Some(obj)) = (&self.usage, resp.as_object_mut()) {
                obj.insert("usage".into(), usage.clone());
            }
        }
        json!({
            "requestedAt": self.requested_at_ms,
            "receivedAt": self.received_at_ms,
            "reqPayload": req,
            "respPayload": resp,
            "statusCode": 200,
            "tags": metadata,
        })
    }

    fn base_messages(&self) -> Vec<Value> {
        self.request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

/// Most steps of one answer reported one by one (see [`Turn::reports`]).
pub const MAX_STEPS: usize = 64;

impl Turn {
    /// One report per step (N tool calls ⇒ N + 1), each within `max_bytes` if it can be (§7.6):
    /// images go first, then long texts one message at a time until it fits. Sizes are kept
    /// up to date by difference (a JSON list is its items' bytes plus separators), so a report
    /// of thousands of long messages is serialised a few times, not once per message.
    ///
    /// Past [`MAX_STEPS`] steps in one answer only the last step is reported (it holds
    /// every call in its messages), marked `steps_omitted`: each step repeats the calls before
    /// it, so N calls made N²/2 call pairs, and 1,000 tool blocks in a 160 KB outlet took
    /// 97 s and 4 GB (found by a reviewer).
    pub fn reports(&self, max_bytes: usize) -> Vec<Built> {
        let n = self.answer.calls.len();
        let first = if n + 1 > MAX_STEPS { n } else { 0 };
        (first..=n)
            .map(|k| {
                let mut messages = self.base_messages();
                messages.extend(call_pairs(&self.answer, k));
                let mut cap = self.shrunk.clone();
                if first > 0 {
                    cap.push(("steps_omitted".to_string(), first.to_string()));
                }
                let body = self.report(k, &cap, messages.clone());
                let mut size = serialized_len(&body);
                if size <= max_bytes {
                    return Built { body, too_large: false };
                }
                let omitted = omit_images(&mut messages);
                if omitted > 0 {
                    cap.retain(|(key, _)| key != "images_omitted");
                    cap.push(("images_omitted".to_string(), omitted.to_string()));
                    let body = self.report(k, &cap, messages.clone());
                    size = serialized_len(&body);
                    if size <= max_bytes {
                        return Built { body, too_large: false };
                    }
                }
                if !cap.iter().any(|(key, _)| key == "truncated") {
                    cap.push(("truncated".to_string(), "true".to_string()));
                    size += r#","truncated":"true""#.len() * 2;
                }
                for message in messages.iter_mut() {
                    let before = serialized_len(message);
                    if truncate_message(message) {
                        size = size.saturating_sub(before.saturating_sub(serialized_len(message)));
                        if size <= max_bytes {
                            break;
                        }
                    }
                }
                let body = self.report(k, &cap, messages);
                let too_large = serialized_len(&body) > max_bytes;
                Built { body, too_large }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_report_of_many_long_messages_is_shrunk_in_a_few_passes() {
        // 600 messages of 40,000 characters (24 MB), cut to 20,000 one at a time until the
        // report fits 15 MB: one serialisation per cut message would be 450 serialisations of
        // megabytes; sizes kept by difference make it a few.
        let messages: Vec<Value> =
            (0..600).map(|i| json!({"role": "user", "content": format!("{i}{}", "y".repeat(40_000))})).collect();
        let turn = Turn {
            request: json!({"messages": messages}).as_object().unwrap().clone(),
            model: "m".into(),
            message_id: "m2".into(),
            head: vec![],
            tail: vec![],
            custom: vec![],
            answer: Answer { texts: vec!["ok".into()], calls: vec![] },
            usage: None,
            revision: 0,
            requested_at_ms: 1,
            received_at_ms: 2,
            shrunk: vec![("images_omitted".into(), "2".into())],
        };
        let built = turn.reports(15_000_000);
        assert!(!built[0].too_large);
        assert!(serialized_len(&built[0].body) <= 15_000_000);
        assert_eq!(built[0].body["tags"]["truncated"], "true");
        assert_eq!(built[0].body["tags"]["images_omitted"], "2", "what the capture lost is said");
        let untouched = built[0].body["reqPayload"]["messages"][599]["content"].as_str().unwrap().len();
        assert!(untouched > 40_000, "only as many messages as needed are cut");
    }

    /// Each step repeats the calls before it: past MAX_STEPS only the last step is reported,
    /// with every call in it.
    #[test]
    fn many_tool_calls_make_one_report_past_the_cap() {
        let turn_with = |calls: usize| Turn {
            request: json!({"messages": [{"role": "user", "content": "hi"}]}).as_object().unwrap().clone(),
            model: "m".into(),
            message_id: "m2".into(),
            head: vec![],
            tail: vec![],
            custom: vec![],
            answer: Answer {
                texts: (0..=calls).map(|i| format!("text {i}")).collect(),
                calls: (0..calls)
                    .map(|i| crate::blocks::ToolCall {
                        id: format!("c{i}"),
                        name: "f".into(),
                        arguments: "{}".into(),
                        result: Some("r".into()),
                    })
                    .collect(),
            },
            usage: None,
            revision: 0,
            requested_at_ms: 1,
            received_at_ms: 2,
            shrunk: vec![],
        };
        let stepped = turn_with(MAX_STEPS - 1).reports(1 << 20);
        assert_eq!(stepped.len(), MAX_STEPS);
        assert!(stepped.iter().all(|b| b.body["tags"].get("steps_omitted").is_none()));
        let calls = 2_000;
        let built = turn_with(calls).reports(1 << 30);
        assert_eq!(built.len(), 1);
        assert_eq!(built[0].body["tags"]["steps_omitted"], calls.to_string());
        let messages = built[0].body["reqPayload"]["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 1 + 2 * calls, "the question, then each call and its result");
        assert_eq!(built[0].body["respPayload"]["choices"][0]["message"]["content"], format!("text {calls}"));
    }

    #[test]
    fn images_go_first_then_long_texts() {
        let big_image = format!("data:image/png;base64,{}", "A".repeat(30_000));
        let long_text = "x".repeat(25_000);
        let turn = Turn {
            request: json!({"messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": big_image}}]},
                {"role": "user", "content": long_text}
            ]})
            .as_object()
            .unwrap()
            .clone(),
            model: "m".into(),
            message_id: "m1".into(),
            head: vec![],
            tail: vec![],
            custom: vec![("env".into(), "p".into())],
            answer: Answer { texts: vec!["ok".into()], calls: vec![] },
            usage: None,
            revision: 0,
            requested_at_ms: 1,
            received_at_ms: 2,
            shrunk: vec![],
        };
        let built = turn.reports(40_000);
        assert!(!built[0].too_large);
        let meta = &built[0].body["tags"];
        assert_eq!(meta["images_omitted"], "1");
        assert!(meta.get("truncated").is_none());
        let url = &built[0].body["reqPayload"]["messages"][0]["content"][0]["image_url"]["url"];
        assert_eq!(url, "data:image/png;omitted");

        let built = turn.reports(22_000);
        assert!(!built[0].too_large);
        assert_eq!(built[0].body["tags"]["truncated"], "true");
        let text = built[0].body["reqPayload"]["messages"][1]["content"].as_str().unwrap();
        assert!(text.ends_with("…[truncated]") && text.chars().count() == 20_000 + 12);
        // Custom keys stay last.
        let keys: Vec<_> = built[0].body["tags"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["images_omitted", "truncated", "env"]);

        assert!(turn.reports(5_000)[0].too_large);
    }
}
