//! Open WebUI's display blocks in an assistant message (docs/reporting.md §7.5): reasoning
//! as `<details type="reasoning">`, executed tools as `<details type="tool_calls" ...>` with
//! HTML-escaped attributes. Parsed back into text and tool calls so a report looks like what
//! the model produced. Anything that does not parse is left in the text.

use serde_json::{json, Value};

/// One executed tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Compact JSON when the arguments are a JSON object, else the text as found.
    pub arguments: String,
    pub result: Option<String>,
}

impl ToolCall {
    /// A call without its result yet: a missing id becomes `call_<message id>_<index>`, and
    /// arguments that are a JSON object are re-serialised compactly (§7.5).
    fn new(id: Option<String>, name: String, arguments: String, message_id: &str, index: usize) -> ToolCall {
        let id = id.filter(|i| !i.is_empty()).unwrap_or_else(|| format!("call_{message_id}_{index}"));
        let arguments = match serde_json::from_str::<Value>(&arguments) {
            Ok(v @ Value::Object(_)) => v.to_string(),
            _ => arguments,
        };
        ToolCall { id, name, arguments, result: None }
    }
}

/// Text (reasoning already turned into `<think>` blocks) interleaved with tool calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// `texts.len() == calls.len() + 1`: `texts[k]` comes before `calls[k]`, the last one after all.
    pub texts: Vec<String>,
    pub calls: Vec<ToolCall>,
}

impl Answer {
    fn verbatim(text: &str) -> Self {
        Answer { texts: vec![text.to_string()], calls: Vec::new() }
    }

    /// The final text (after the last tool call).
    pub fn final_text(&self) -> &str {
        self.texts.last().map(String::as_str).unwrap_or_default()
    }
}

/// Decodes the entities Python's `html.escape` produces, plus numeric references.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Searched as bytes: the 12th byte may fall inside a character (a caller's text).
        let Some(end) = rest.as_bytes()[..rest.len().min(12)].iter().position(|&b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// `key="value"` pairs of an opening tag (values still escaped).
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].rsplit(|c: char| c.is_whitespace()).next().unwrap_or_default().to_string();
        let after = &rest[eq + 2..];
        let Some(close) = after.find('"') else { break };
        out.push((key, after[..close].to_string()));
        rest = &after[close + 1..];
    }
    out
}

/// Finds the `</details>` closing the block whose body starts at `from`, allowing nesting.
/// One pass over the tags in order: looking for the next opening and the next closing tag
/// from each tag in turn read the rest of the text again each time, and 10,000 nested blocks
/// (190 KB in a chat's history) took 9 s of a worker (found by a red team).
fn closing(text: &str, from: usize) -> Option<usize> {
    let mut depth = 1usize;
    let mut pos = from;
    while let Some(i) = text[pos..].find('<') {
        let at = pos + i;
        let tag = &text[at..];
        if tag.starts_with("</details>") {
            depth -= 1;
            if depth == 0 {
                return Some(at);
            }
            pos = at + "</details>".len();
        } else if tag.starts_with("<details") {
            depth += 1;
            pos = at + "<details".len();
        } else {
            pos = at + 1;
        }
    }
    None
}

fn strip_summary(body: &str) -> &str {
    match (body.find("<summary>"), body.find("</summary>")) {
        (Some(s), Some(e)) if s < e => &body[e + "</summary>".len()..],
        _ => body,
    }
}

/// The reasoning of a block, without its summary line and quote marks. Open WebUI 0.6 writes
/// the block HTML-escaped, quote marks included (`&gt; `): decoded first.
fn reasoning_inner(body: &str) -> String {
    let body = unescape(strip_summary(body));
    let lines: Vec<&str> = body
        .lines()
        .map(|l| {
            let l = l.trim_start();
            match l.strip_prefix('>') {
                Some(rest) => rest.strip_prefix(' ').unwrap_or(rest),
                None => l,
            }
        })
        .collect();
    lines.join("\n").trim().to_string()
}

/// A decoded attribute that is itself a JSON string is unwrapped once (Open WebUI escapes
/// `json.dumps(value)`).
fn unwrap_json_string(text: String) -> String {
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::String(inner)) => inner,
        _ => text,
    }
}

fn tool_call(attrs: &[(String, String)], body: &str, index: usize, message_id: &str) -> Option<ToolCall> {
    let get = |k: &str| attrs.iter().find(|(key, _)| key == k).map(|(_, v)| unescape(v));
    let name = get("name").filter(|n| !n.is_empty())?;
    let raw_args = unwrap_json_string(get("arguments").unwrap_or_default());
    let mut call = ToolCall::new(get("id"), name, raw_args, message_id, index);
    call.result = if get("done").as_deref() == Some("false") {
        None
    } else {
        match get("result") {
            Some(r) => Some(unwrap_json_string(r)),
            None => {
                let text = unescape(strip_summary(body).trim());
                (!text.is_empty()).then(|| unwrap_json_string(text))
            }
        }
    };
    Some(call)
}

/// Removes sluice's markers (see [`sluice_sdk::marker`]) and the line breaks after them:
/// invisible in Open WebUI, noise in a report.
pub fn strip_markers(text: &str) -> std::borrow::Cow<'_, str> {
    // The Function manifold's markers too: chats made with it before sluice carry them.
    if sluice_sdk::marker::present(text) {
        std::borrow::Cow::Owned(sluice_sdk::marker::strip(text, true))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Splits an assistant message's display text into text and tool calls.
pub fn parse(content: &str, message_id: &str) -> Answer {
    let content = &*strip_markers(content);
    if !content.contains("<details") {
        return Answer::verbatim(content);
    }
    let mut answer = Answer { texts: vec![String::new()], calls: Vec::new() };
    let mut rest = content;
    let mut parsed_any = false;
    while let Some(start) = rest.find("<details") {
        let current = answer.texts.last_mut();
        let Some(current) = current else { break };
        current.push_str(&rest[..start]);
        let tail = &rest[start..];
        let Some(tag_end) = tail.find('>') else {
            current.push_str(tail);
            rest = "";
            break;
        };
        let tag = &tail[..tag_end];
        let body_start = tag_end + 1;
        let Some(close) = closing(tail, body_start) else {
            current.push_str(tail);
            rest = "";
            break;
        };
        let body = &tail[body_start..close];
        let block_end = close + "</details>".len();
        let attrs = attributes(tag);
        let kind = attrs.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str());
        match kind {
            Some("reasoning") => {
                let inner = reasoning_inner(body);
                if !inner.is_empty() {
                    current.push_str(&format!("<think>{inner}</think>"));
                }
                parsed_any = true;
            }
            Some("tool_calls") => match tool_call(&attrs, body, answer.calls.len(), message_id) {
                Some(call) => {
                    answer.calls.push(call);
                    answer.texts.push(String::new());
                    parsed_any = true;
                }
                None => current.push_str(&tail[..block_end]),
            },
            _ => current.push_str(&tail[..block_end]),
        }
        rest = &tail[block_end..];
    }
    if let Some(last) = answer.texts.last_mut() {
        last.push_str(rest);
    }
    if parsed_any {
        for t in &mut answer.texts {
            *t = t.trim().to_string();
        }
    }
    answer
}

/// The `text` of every part in the array at `key`, joined (message content, output items).
pub fn parts_text(item: &Value, key: &str) -> String {
    match item.get(key) {
        parts @ Some(Value::Array(_)) => sluice_sdk::message::text(parts, "").into_owned(),
        _ => String::new(),
    }
}

/// The answer's text in `output` items: their message items' text, in order.
pub fn output_text(output: &[Value]) -> String {
    let texts: Vec<String> = output
        .iter()
        .filter(|i| i.get("type").and_then(Value::as_str) == Some("message"))
        .map(|i| strip_markers(&parts_text(i, "content")).trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    texts.join("\n\n")
}

/// Open WebUI 0.12 also keeps a reply as `output` items. When its tool calls or reasoning are
/// there but not in the text (no `<details>` blocks), the items are the only record of them.
pub fn parse_output(output: &[Value], message_id: &str) -> Option<Answer> {
    let informative =
        output.iter().any(|i| matches!(i.get("type").and_then(Value::as_str), Some("function_call" | "reasoning")));
    if !informative {
        return None;
    }
    let mut answer = Answer { texts: vec![String::new()], calls: Vec::new() };
    for item in output {
        let str_of = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let mut inner = parts_text(item, "content");
                if inner.is_empty() {
                    inner = parts_text(item, "summary");
                }
                if !inner.trim().is_empty() {
                    if let Some(t) = answer.texts.last_mut() {
                        t.push_str(&format!("<think>{}</think>", inner.trim()));
                    }
                }
            }
            Some("message") => {
                if let Some(t) = answer.texts.last_mut() {
                    t.push_str(&strip_markers(&parts_text(item, "content")));
                }
            }
            Some("function_call") => {
                let index = answer.calls.len();
                let call =
                    ToolCall::new(Some(str_of("call_id")), str_of("name"), str_of("arguments"), message_id, index);
                answer.calls.push(call);
                answer.texts.push(String::new());
            }
            Some("function_call_output") => {
                let call_id = str_of("call_id");
                let result = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(_)) => parts_text(item, "output"),
                    Some(other) => other.to_string(),
                    None => String::new(),
                };
                if let Some(call) = answer.calls.iter_mut().find(|c| c.id == call_id) {
                    call.result = Some(result);
                }
            }
            _ => {}
        }
    }
    for t in &mut answer.texts {
        *t = t.trim().to_string();
    }
    Some(answer)
}

pub fn call_json(call: &ToolCall) -> Value {
    json!({"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}})
}

pub fn text_or_null(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_string())
    }
}

/// The assistant/tool message pairs that precede step `k` (§7.5).
pub fn call_pairs(answer: &Answer, upto: usize) -> Vec<Value> {
    let mut out = Vec::with_capacity(upto * 2);
    for (j, call) in answer.calls.iter().take(upto).enumerate() {
        out.push(
            json!({"role": "assistant", "content": text_or_null(&answer.texts[j]), "tool_calls": [call_json(call)]}),
        );
        out.push(json!({"role": "tool", "tool_call_id": call.id, "content": call.result.clone().unwrap_or_default()}));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// How Open WebUI writes an executed tool call: `html.escape(json.dumps(...))` attributes.
    pub fn tool_block(id: &str, name: &str, args: &str, result: &str) -> String {
        let esc = |s: &str| {
            let json = serde_json::to_string(s).unwrap();
            json.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#x27;")
        };
        format!(
            "<details type=\"tool_calls\" done=\"true\" id=\"{id}\" name=\"{name}\" arguments=\"{}\" result=\"{}\" files=\"\" embeds=\"\">\n<summary>Tool Executed</summary>\n</details>\n",
            esc(args),
            esc(result)
        )
    }

    #[test]
    fn nested_blocks_close_where_they_balance() {
        let text = "<details>a<details>b</details><b>c</b></details>tail</details>";
        assert_eq!(closing(text, "<details>".len()), text.find("</details>tail"));
        assert_eq!(closing("<details><details></details>", "<details>".len()), None, "unbalanced");
        let odd = "<details><detailsx></details></details>";
        assert_eq!(closing(odd, 9), odd.rfind("</details>"), "any <details… opens");
        // 100,000 deep, balanced and not: one pass each (the search from every tag took
        // minutes at this depth).
        let n = 100_000;
        let deep = format!("{}x{}", "<details>".repeat(n), "</details>".repeat(n));
        assert_eq!(parse(&deep, "m").texts, [deep]);
        let open = format!("{}x", "<details>".repeat(n));
        assert_eq!(parse(&open, "m").texts, [open]);
        let closed_early = format!("{}x{}", "<details>".repeat(n), "</details>".repeat(n - 1));
        assert_eq!(parse(&closed_early, "m").texts, [closed_early]);
    }

    #[test]
    fn plain_text_is_kept_verbatim() {
        assert_eq!(parse("Hobart.\n", "m"), Answer { texts: vec!["Hobart.\n".into()], calls: vec![] });
    }

    #[test]
    fn reasoning_becomes_think_and_tool_blocks_become_calls() {
        let content = format!(
            "<details type=\"reasoning\" done=\"true\" duration=\"2\">\n<summary>Thought for 2 seconds</summary>\n> Need weather.\n> Use the tool.\n</details>\nChecking.\n{}It is 14 °C in Hobart.",
            tool_block("call_1", "get_weather", "{\"city\": \"Hobart\"}", "{\"temp_c\": 14}")
        );
        let a = parse(&content, "m-789");
        assert_eq!(a.texts, ["<think>Need weather.\nUse the tool.</think>\nChecking.", "It is 14 °C in Hobart."]);
        assert_eq!(
            a.calls,
            [ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Hobart\"}".into(),
                result: Some("{\"temp_c\": 14}".into()),
            }]
        );
    }

    #[test]
    fn escaped_reasoning_of_open_webui_0_6_is_decoded() {
        let content = "<details type=\"reasoning\" done=\"true\" duration=\"0\">\n<summary>Thought for 0 seconds</summary>\n&gt; **Checking** 2 &lt; 3\n&gt; \n&gt; done &amp; dusted\n</details>\n17 × 23 = **391**.";
        assert_eq!(
            parse(content, "m").texts,
            ["<think>**Checking** 2 < 3\n\ndone & dusted</think>\n17 × 23 = **391**."]
        );
    }

    #[test]
    fn odd_blocks_stay_in_the_text() {
        let unclosed = "before <details type=\"tool_calls\" name=\"x\"> never closed";
        assert_eq!(parse(unclosed, "m").texts, [unclosed]);
        let nameless = "<details type=\"tool_calls\" id=\"c\">\n<summary>x</summary>\n</details>\nafter";
        assert_eq!(parse(nameless, "m").calls.len(), 0);
        assert!(parse(nameless, "m").final_text().contains("<details"));
        let code = "<details type=\"code_interpreter\">\n<summary>Code</summary>\nx\n</details>";
        assert_eq!(parse(code, "m").texts, [code]);
    }

    #[test]
    fn replay_markers_are_removed() {
        let text = "[sluice:v1:turn:0123456789ABCDEF]: #\n\nHello [sluice:v1:x y";
        assert_eq!(parse(text, "m").texts, ["Hello [sluice:v1:x y"]);
        assert_eq!(strip_markers("plain"), "plain");
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            unescape("a &amp; b &lt;c&gt; &quot;d&quot; &#x27;e&#39; &#233; &bogus; & x"),
            "a & b <c> \"d\" 'e' é &bogus; & x"
        );
    }

    #[test]
    fn an_entity_search_ending_inside_a_character_does_not_panic() {
        // The search for `;` looks 12 bytes ahead; a caller's text put a two-, three- or
        // four-byte character across that edge and the slice panicked (found by a reviewer).
        for wide in ["é", "€", "𝄞"] {
            for pad in 0..14 {
                let text = format!("&{}{wide}{wide};x &amp;", "a".repeat(pad));
                assert_eq!(unescape(&text), format!("&{}{wide}{wide};x &", "a".repeat(pad)));
            }
        }
        assert_eq!(unescape("&#233;&#x20AC;"), "é€");
    }

    #[test]
    fn markers_of_sluice_and_of_the_function_are_stripped() {
        let text = "[openai_responses:v2:reasoning:01HX0000000000000000000000]: #\nHello.";
        assert!(!strip_markers(text).contains("openai_responses:v2"), "{}", strip_markers(text));
        assert!(!strip_markers("[sluice:v1:turn:0123456789ABCDEF]: #\n\nHi").contains("sluice:v1"));
        assert_eq!(strip_markers("plain"), "plain");
    }

    #[test]
    fn output_items_give_calls_when_the_text_has_none() {
        let output = serde_json::json!([
            {"type": "message", "content": [{"type": "output_text", "text": "[sluice:v1:turn:0123456789ABCDEF]: #\n\nChecking."}]},
            {"type": "function_call", "call_id": "call_9", "name": "lookup", "arguments": "{\"q\": 1}"},
            {"type": "function_call_output", "call_id": "call_9", "output": "found"},
            {"type": "message", "content": [{"type": "output_text", "text": "Done."}]}
        ]);
        let a = parse_output(output.as_array().unwrap(), "m").unwrap();
        assert_eq!(a.texts, ["Checking.", "Done."]);
        assert_eq!(a.calls[0].arguments, "{\"q\":1}");
        assert_eq!(a.calls[0].result.as_deref(), Some("found"));
        assert!(parse_output(&[], "m").is_none());
        let only_text = serde_json::json!([{"type": "message", "content": [{"type": "output_text", "text": "x"}]}]);
        assert!(parse_output(only_text.as_array().unwrap(), "m").is_none(), "plain replies keep their content");
        let reasoning = serde_json::json!([
            {"type": "reasoning", "content": [{"type": "output_text", "text": "hmm"}], "summary": null},
            {"type": "message", "content": [{"type": "output_text", "text": "391."}]}
        ]);
        assert_eq!(parse_output(reasoning.as_array().unwrap(), "m").unwrap().texts, ["<think>hmm</think>391."]);
    }
}
