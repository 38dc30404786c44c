//! Each switch of the manifold's valves, seen where it acts: in the request that reaches the
//! mock OpenAI (body and headers) or in the stream Open WebUI receives.

use serde_json::{json, Value};

use crate::helpers::json_of;
use crate::manifold::{chat, manifold_app, system_and, upstream_bodies, weather_tool};

async fn sent_with(valves: &str, extra: Value) -> (Value, wiremock::Request) {
    let mock = crate::manifold::openai_answering("1_plain_text.sse").await;
    let app = manifold_app(&mock, valves).await;
    let res = app.post_json("/v1/chat/completions", &chat("gpt-4.1", system_and("hi"), extra)).await;
    assert_eq!(res.status().as_u16(), 200);
    let _ = res.text().await.unwrap();
    let request = mock.received_requests().await.unwrap().remove(0);
    (upstream_bodies(&mock).await.remove(0), request)
}

#[tokio::test]
async fn request_switches_reach_openai() {
    let tools = json!({"tools": weather_tool()});
    let (body, _) = sent_with("", tools.clone()).await;
    assert_eq!(body["parallel_tool_calls"], json!(true));
    assert!(body.get("service_tier").is_none());

    let (body, _) = sent_with("PARALLEL_TOOL_CALLS = false\n", tools.clone()).await;
    assert_eq!(body["parallel_tool_calls"], json!(false));

    let (body, _) = sent_with("SERVICE_TIER = \"flex\"\n", json!({})).await;
    assert_eq!(body["service_tier"], json!("flex"));

    let mcp =
        "REMOTE_MCP_SERVERS_JSON = '[{\"server_label\": \"docs\", \"server_url\": \"https://example.com/mcp\", \"authorization\": \"mcp-oauth-token-1\"}]'\n";
    let (body, _) = sent_with(mcp, json!({})).await;
    let mcp_tool = body["tools"].as_array().unwrap().iter().find(|t| t["type"] == "mcp").cloned().unwrap();
    assert_eq!(
        (mcp_tool["server_label"].clone(), mcp_tool["server_url"].clone(), mcp_tool["require_approval"].clone()),
        (json!("docs"), json!("https://example.com/mcp"), json!("never"))
    );
    assert_eq!(mcp_tool["authorization"], json!("mcp-oauth-token-1"), "the OAuth token reaches OpenAI");

    let format = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "strict": true,
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": false}}}});
    let (body, _) = sent_with("", format).await;
    assert_eq!(body["text"]["format"]["type"], json!("json_schema"));
    assert_eq!(body["text"]["format"]["name"], json!("answer"));
    assert_eq!(body["text"]["format"]["strict"], json!(true));

    let (_, request) = sent_with("ORGANIZATION = \"org-test\"\nPROJECT = \"proj_test\"\n", json!({})).await;
    assert_eq!(request.headers.get("openai-organization").unwrap(), "org-test");
    assert_eq!(request.headers.get("openai-project").unwrap(), "proj_test");
    let (_, request) = sent_with("", json!({})).await;
    assert!(request.headers.get("openai-organization").is_none());
}

/// Open WebUI's Web Search switch, as it sends it through the model's inlet: taken over for
/// a model with hosted search (Open WebUI's own search switched off, OpenAI's web_search tool
/// sent), left alone with WEB_SEARCH_FROM_TOGGLE off.
#[tokio::test]
async fn the_web_search_switch_as_open_webui_sends_it() {
    for (from_toggle, taken) in [(true, true), (false, false)] {
        let mock = crate::manifold::openai_answering("1_plain_text.sse").await;
        let app = manifold_app(&mock, &format!("WEB_SEARCH_FROM_TOGGLE = {from_toggle}\n")).await;
        let user = json!({"id": "u-1", "name": "N", "email": "n@example.com", "role": "user"});
        let body = json!({"model": "openai_responses.gpt-4.1", "stream": true, "messages": system_and("news?"),
            "features": {"web_search": true}, "metadata": {"chat_id": "c-1", "message_id": "m-1", "features": {"web_search": true}}});
        let (status, changed) = json_of(
            app.post_json("/openai_responses.gpt-4.1/filter/inlet", &json!({"body": body, "user": user})).await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(changed["features"]["web_search"], json!(!taken), "Open WebUI's own search");
        let mut chat_body = changed.clone();
        chat_body.as_object_mut().unwrap().remove("metadata");
        chat_body["user"] = user.clone();
        let res = app.post_json("/chat/completions", &chat_body).await;
        assert_eq!(res.status().as_u16(), 200);
        let _ = res.text().await.unwrap();
        let sent = upstream_bodies(&mock).await.remove(0);
        let has_search = sent["tools"].as_array().into_iter().flatten().any(|t| t["type"] == "web_search");
        assert_eq!(has_search, taken, "WEB_SEARCH_FROM_TOGGLE = {from_toggle}: {sent}");
    }
}

/// REASONING_DISPLAY: the reasoning block, status lines, or nothing; the first status of a
/// reasoning model says it is thinking.
#[tokio::test]
async fn reasoning_display_modes() {
    for display in ["reasoning_content", "status", "none"] {
        let mock = crate::manifold::openai_answering("2_reasoning_summary.sse").await;
        let valves = format!("REASONING_SUMMARY = \"detailed\"\nREASONING_DISPLAY = \"{display}\"\n");
        let app = manifold_app(&mock, &valves).await;
        let text = app
            .post_json("/v1/chat/completions", &chat("o4-mini", system_and("What is 17 times 23?"), json!({})))
            .await
            .text()
            .await
            .unwrap();
        let lines: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect();
        let reasoning: String = lines
            .iter()
            .filter_map(|v| v.pointer("/choices/0/delta/reasoning_content").and_then(Value::as_str))
            .collect();
        let statuses: Vec<String> = lines
            .iter()
            .filter(|v| v["event"]["type"] == "status")
            .filter_map(|v| v["event"]["data"]["description"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(statuses.first().map(String::as_str), Some("Thinking…"), "{display}: {statuses:?}");
        match display {
            "reasoning_content" => assert!(!reasoning.is_empty(), "{display}"),
            "status" => {
                assert!(reasoning.is_empty(), "{display}");
                assert!(statuses.len() > 2, "summary titles as statuses: {statuses:?}");
            }
            _ => {
                assert!(reasoning.is_empty(), "{display}");
                assert_eq!(statuses.len(), 2, "only thinking and done: {statuses:?}");
            }
        }
    }
}

/// LOG_LEVEL: a "Logs" citation of what the pipe did, without message text or keys; only for
/// the users LOG_USERS names; none by default.
#[tokio::test]
async fn the_answer_log_is_a_citation_without_text_or_keys() {
    for (valves, user_email, expect) in [
        ("", "n@example.com", false),
        ("LOG_LEVEL = \"debug\"\n", "n@example.com", true),
        ("LOG_LEVEL = \"info\"\nLOG_USERS = [\"ops@example.com\"]\n", "n@example.com", false),
        ("LOG_LEVEL = \"info\"\nLOG_USERS = [\"ops@example.com\"]\n", "ops@example.com", true),
    ] {
        let mock = crate::manifold::openai_answering("2_reasoning_summary.sse").await;
        let app = manifold_app(&mock, valves).await;
        let mut body = chat("o4-mini", system_and("What is 17 times 23?"), json!({}));
        body["user"]["email"] = json!(user_email);
        let text = app.post_json("/v1/chat/completions", &body).await.text().await.unwrap();
        let logs: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["event"]["type"] == "source" && v["event"]["data"]["source"]["name"] == "Logs")
            .collect();
        assert_eq!(!logs.is_empty(), expect, "{valves} {user_email}");
        if let Some(log) = logs.first() {
            let doc = log["event"]["data"]["document"][0].as_str().unwrap();
            assert!(doc.contains("model o4-mini → o4-mini") && doc.contains("OpenAI answered HTTP 200"), "{doc}");
            assert!(doc.contains("response completed: output reasoning, message"), "{doc}");
            assert!(!doc.contains("17 times 23") && !doc.contains(crate::manifold::OPENAI_KEY), "{doc}");
        }
    }
}

/// Open WebUI's "Add Details" / "More Concise" (the label as a user message after the answer
/// being redone) ask a model with the setting for more or less text; the message stays.
#[tokio::test]
async fn add_details_and_more_concise_set_the_verbosity() {
    let redo = |label: &str| {
        json!([{"role": "user", "content": "Explain tides."}, {"role": "assistant", "content": "The moon."},
               {"role": "user", "content": label}])
    };
    for (label, want) in [("Add Details", Some("high")), ("More Concise", Some("low")), ("Add details please", None)] {
        let mock = crate::manifold::openai_answering("1_plain_text.sse").await;
        let app = crate::manifold::manifold_app(&mock, "").await;
        for model in ["gpt-5-mini", "gpt-4.1"] {
            let res = app.post_json("/v1/chat/completions", &chat(model, redo(label), json!({}))).await;
            assert_eq!(res.status().as_u16(), 200);
            let _ = res.text().await.unwrap();
            let sent = upstream_bodies(&mock).await.pop().unwrap();
            let verbosity = sent.pointer("/text/verbosity").and_then(Value::as_str);
            // gpt-4.1 has no verbosity setting: it would refuse the request.
            assert_eq!(verbosity, if model == "gpt-5-mini" { want } else { None }, "{label} on {model}: {sent}");
            assert!(sent["input"].to_string().contains(label), "the label is still sent");
        }
    }
}
