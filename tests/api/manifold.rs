//! The openai_responses manifold against a mock OpenAI server on 127.0.0.1 that replays the
//! byte-exact transcripts in tests/api/fixtures/responses-api.

use serde_json::{json, Value};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use crate::helpers::{json_of, spawn_app_with, Options, TestApp};

pub const OPENAI_KEY: &str = "sk-test-openai-key-0123456789abcdef";
const USER: &str = r#"{"id": "u1", "email": "a@example.com", "name": "Alice", "role": "user"}"#;

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/api/fixtures/responses-api/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn fixture_requests() -> Value {
    serde_json::from_slice(&fixture("requests.json")).unwrap()
}

pub fn expected_chunks(name: &str) -> Vec<Value> {
    String::from_utf8(fixture(name))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every call the manifold makes to the model: `POST /v1/responses`.
fn on_responses() -> MockBuilder {
    Mock::given(method("POST")).and(path("/v1/responses"))
}

/// OpenAI's 429 for a rate limit, asking for the wait `header: value`.
fn rate_limited(header: &str, value: &str) -> ResponseTemplate {
    ResponseTemplate::new(429).insert_header(header, value).set_body_raw(
        r#"{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#,
        "application/json",
    )
}

pub fn sse_response(name: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(fixture(name), "text/event-stream; charset=utf-8")
}

/// A mock OpenAI whose every Responses request is answered with the transcript `name`.
pub async fn openai_answering(name: &str) -> MockServer {
    let mock = MockServer::start().await;
    Mock::given(method("POST")).and(path("/v1/responses")).respond_with(sse_response(name)).mount(&mock).await;
    mock
}

pub async fn manifold_app(mock: &MockServer, extra_valves: &str) -> TestApp {
    let base = format!(
        "BASE_URL = \"{}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nSHOW_USAGE_COST = false\nMAX_RETRIES = 0\n\
         MODEL_ID = [\"gpt-4.1\", \"o4-mini\", \"o4-mini-high\", \"gpt-5-mini\"]\n",
        mock.uri()
    );
    // Keys given by the test replace the defaults above.
    let overridden: Vec<&str> = extra_valves.lines().filter_map(|l| l.split('=').next()).map(str::trim).collect();
    let mut valves: String = base
        .lines()
        .filter(|l| !overridden.contains(&l.split('=').next().unwrap_or("").trim()))
        .map(|l| format!("{l}\n"))
        .collect();
    valves.push_str(extra_valves);
    manifold_app_from(valves).await
}

/// The app with the manifold and `valves` as its valves file.
pub async fn manifold_app_from(valves: String) -> TestApp {
    spawn_app_with(Options {
        manifold: true,
        valves_files: vec![("openai_responses.toml", valves)],
        ..Default::default()
    })
    .await
    .unwrap()
}

pub fn chat(model: &str, messages: Value, extra: Value) -> Value {
    let mut body = json!({"model": format!("openai_responses.{model}"), "stream": true, "messages": messages,
                          "user": serde_json::from_str::<Value>(USER).unwrap()});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

pub fn system_and(user: &str) -> Value {
    json!([{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}])
}

/// The payloads of a stream in the fixtures' `expected-chunks` form.
pub fn payloads(text: &str) -> (Vec<Value>, Option<String>, bool) {
    let mut out = Vec::new();
    let mut marker = None;
    let mut done = false;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else { continue };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        if let Some(event) = v.get("event") {
            let d = &event["data"];
            if event["type"] == "status" && (d["done"] == json!(true) || d["description"] == json!("Thinking…")) {
                continue;
            }
            out.push(v);
        } else if v.get("error").is_some() {
            out.push(v);
        } else {
            assert_eq!(v["object"], json!("chat.completion.chunk"), "{v}");
            let choices = v["choices"].as_array().unwrap();
            if choices.is_empty() {
                out.push(json!({"usage": v["usage"]}));
                continue;
            }
            let mut delta = choices[0]["delta"].clone();
            delta.as_object_mut().unwrap().shift_remove("role");
            if !choices[0]["finish_reason"].is_null() {
                out.push(json!({"delta": delta, "finish_reason": choices[0]["finish_reason"]}));
            } else if delta["content"].as_str().is_some_and(|c| c.starts_with("[sluice:v1:")) {
                marker = delta["content"].as_str().map(str::to_owned);
            } else {
                out.push(json!({"delta": delta}));
            }
        }
    }
    (out, marker, done)
}

/// The upstream request minus the two ids that are hashes of the user here and synthetic there.
pub fn without_ids(mut body: Value) -> Value {
    let map = body.as_object_mut().unwrap();
    assert!(map.shift_remove("prompt_cache_key").is_some_and(|k| k.as_str().unwrap().starts_with("owui:")));
    assert!(map.shift_remove("safety_identifier").is_some_and(|k| k.as_str().unwrap().len() == 64));
    body
}

pub async fn upstream_bodies(mock: &MockServer) -> Vec<Value> {
    mock.received_requests().await.unwrap().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

async fn run_fixture(
    fixture_name: &str,
    request_key: &str,
    model: &str,
    user: &str,
    extra: Value,
    valves: &str,
) -> (Vec<Value>, Value) {
    let mock = MockServer::start().await;
    on_responses().respond_with(sse_response(&format!("{fixture_name}.sse"))).mount(&mock).await;
    let app = manifold_app(&mock, valves).await;
    let res = app.post_json("/v1/chat/completions", &chat(model, system_and(user), extra)).await;
    assert_eq!(res.status().as_u16(), 200);
    let text = res.text().await.unwrap();
    let (got, marker, done) = payloads(&text);
    assert!(done && text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(marker.is_none() && !text.contains("[sluice:"), "nothing is added to an answer: {text}");
    let bodies = upstream_bodies(&mock).await;
    assert_eq!(bodies.len(), 1);
    let mut expected_request = fixture_requests()[request_key].clone();
    expected_request.as_object_mut().unwrap().shift_remove("prompt_cache_key");
    expected_request.as_object_mut().unwrap().shift_remove("safety_identifier");
    assert_eq!(without_ids(bodies[0].clone()), expected_request, "upstream request for {fixture_name}");
    (got, bodies[0].clone())
}

#[tokio::test]
async fn plain_text_transcript_becomes_the_expected_chunks() {
    let (got, _) = run_fixture("1_plain_text", "1", "gpt-4.1", "Say hello in French.", json!({}), "").await;
    assert_eq!(got, expected_chunks("1_plain_text.expected-chunks.jsonl"));
}

#[tokio::test]
async fn reasoning_summary_transcript_becomes_reasoning_content() {
    let (got, _) = run_fixture(
        "2_reasoning_summary",
        "2",
        "o4-mini",
        "What is 17 times 23?",
        json!({"reasoning_effort": "medium", "temperature": 0.7}),
        "REASONING_SUMMARY = \"detailed\"\n",
    )
    .await;
    assert_eq!(got, expected_chunks("2_reasoning_summary.expected-chunks.jsonl"));
}

/// The last status line of a streamed answer for each way of showing reasoning: hidden when
/// Open WebUI shows its own "Thought for …" beside the reasoning block, else one line that
/// times the thinking (up to the first text), not the whole response.
#[tokio::test]
async fn the_closing_status_is_one_truthful_line() {
    for (display, hidden) in [("reasoning_content", true), ("status", false)] {
        let mock = MockServer::start().await;
        on_responses().respond_with(sse_response("2_reasoning_summary.sse")).mount(&mock).await;
        let valves = format!("REASONING_SUMMARY = \"detailed\"\nREASONING_DISPLAY = \"{display}\"\n");
        let app = manifold_app(&mock, &valves).await;
        let body = chat("o4-mini", system_and("What is 17 times 23?"), json!({}));
        let text = app.post_json("/v1/chat/completions", &body).await.text().await.unwrap();
        let statuses: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter(|v| v["event"]["type"] == "status")
            .map(|v| v["event"]["data"].clone())
            .collect();
        let last = statuses.last().unwrap();
        assert_eq!(last["done"], json!(true), "{display}: {statuses:?}");
        assert!(last["description"].as_str().unwrap().starts_with("Thought for "), "{display}: {last}");
        assert_eq!(last.get("hidden").and_then(Value::as_bool).unwrap_or(false), hidden, "{display}: {last}");
    }
}

pub fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn web_search_transcript_gives_statuses_and_a_citation() {
    let (got, _) = run_fixture(
        "4_web_search",
        "4",
        "gpt-4.1",
        "How tall is the Eiffel Tower?",
        json!({}),
        "ENABLE_WEB_SEARCH_TOOL = true\nWEB_SEARCH_USER_LOCATION = '{\"type\":\"approximate\",\"country\":\"US\"}'\n",
    )
    .await;
    assert_eq!(got, expected_chunks("4_web_search.expected-chunks.jsonl"));
}

#[tokio::test]
async fn failed_and_incomplete_transcripts() {
    let (got, _) = run_fixture("5a_failed", "1", "gpt-4.1", "Say hello in French.", json!({}), "").await;
    assert_eq!(got, expected_chunks("5a_failed.expected-chunks.jsonl"));
    let (got, _) = run_fixture("5b_incomplete", "1", "gpt-4.1", "Say hello in French.", json!({}), "").await;
    assert_eq!(got, expected_chunks("5b_incomplete.expected-chunks.jsonl"));
}

#[tokio::test]
async fn both_error_event_shapes_are_readable_errors() {
    for (name, code) in [("5c_error_event.sse", "server_error"), ("5d_error_event_nested.sse", "too_many_requests")] {
        let mock = MockServer::start().await;
        on_responses().respond_with(sse_response(name)).mount(&mock).await;
        let app = manifold_app(&mock, "").await;
        let text = app
            .post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({})))
            .await
            .text()
            .await
            .unwrap();
        let (got, _, done) = payloads(&text);
        assert!(done);
        assert_eq!(got.len(), 1, "{text}");
        assert_eq!(got[0]["error"]["code"], json!(code));
        assert!(got[0]["error"]["message"].as_str().unwrap().starts_with("OpenAI: "), "{text}");
    }
}

#[tokio::test]
async fn a_tool_round_replays_the_stored_items_byte_for_byte() {
    let mock = tool_round_mock().await;
    let app = manifold_app(&mock, "").await;
    let extra = json!({"tools": weather_tool(), "tool_choice": "auto", "reasoning_effort": "low"});

    // Round 1: the model calls get_weather twice.
    let res = app
        .post_json("/chat/completions", &chat("gpt-5-mini", system_and("Weather in Paris and London?"), extra.clone()))
        .await;
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3a_function_call.expected-chunks.jsonl"));

    // Round 2, as Open WebUI sends it: no text, the model's tool calls (their ids find the
    // stored items) with re-serialised arguments, and the results.
    let mut messages = system_and("Weather in Paris and London?");
    let list = messages.as_array_mut().unwrap();
    list.extend(weather_round());
    let res = app.post_json("/chat/completions", &chat("gpt-5-mini", Value::Array(list.clone()), extra)).await;
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3b_function_call_followup.expected-chunks.jsonl"));

    let bodies = upstream_bodies(&mock).await;
    assert_eq!(bodies.len(), 2);
    let requests = fixture_requests();
    let mut expected = requests["3a"].clone();
    for key in ["prompt_cache_key", "safety_identifier"] {
        expected.as_object_mut().unwrap().shift_remove(key);
    }
    assert_eq!(without_ids(bodies[0].clone()), expected);
    // Byte-identical replay: the input items serialise exactly as in the fixture.
    assert_eq!(
        serde_json::to_string(&bodies[1]["input"]).unwrap(),
        serde_json::to_string(&requests["3b"]["input"]).unwrap()
    );
    let mut expected = requests["3b"].clone();
    for key in ["prompt_cache_key", "safety_identifier"] {
        expected.as_object_mut().unwrap().shift_remove(key);
    }
    assert_eq!(without_ids(bodies[1].clone()), expected);
}

#[tokio::test]
async fn a_record_of_another_user_or_a_lost_one_replays_degraded() {
    let mock = tool_round_mock().await;
    let app = manifold_app(&mock, "").await;
    let extra = json!({"tools": weather_tool(), "reasoning_effort": "low"});
    let res =
        app.post_json("/chat/completions", &chat("gpt-5-mini", system_and("Weather in Paris?"), extra.clone())).await;
    res.text().await.unwrap();
    // Another user sends the same tool call ids; the owner sends a marker of an older chat
    // whose record is gone.
    for (who, content) in [("u2", String::new()), ("u1", "[sluice:v1:turn:0000000000000000]: #".to_string())] {
        let mut messages = system_and("Weather in Paris?");
        let list = messages.as_array_mut().unwrap();
        list.push(json!({"role": "assistant", "content": content, "tool_calls": [
            {"index": 0, "id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}));
        list.push(json!({"role": "tool", "tool_call_id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "content": "18C"}));
        let mut body = chat("gpt-5-mini", messages, extra.clone());
        body["user"]["id"] = json!(who);
        let res = app.post_json("/chat/completions", &body).await;
        assert_eq!(res.status().as_u16(), 200);
        res.text().await.unwrap();
        let last = upstream_bodies(&mock).await.pop().unwrap();
        let input = last["input"].as_array().unwrap();
        assert_eq!(input.len(), 3, "{who}: {input:?}");
        assert_eq!(
            input[1],
            json!({"type": "function_call", "call_id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"})
        );
        assert_eq!(
            input[2],
            json!({"type": "function_call_output", "call_id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "output": "18C"})
        );
    }
}

#[tokio::test]
async fn an_older_chat_with_a_marker_still_replays_its_record() {
    // A record under a marker id, as sluice kept them before answers stopped carrying markers.
    let mock = tool_round_mock().await;
    let app = manifold_app(&mock, "PERSIST_REASONING_TOKENS = \"conversation\"\n").await;
    let store = sluice::store::SqliteStore::open(&app.data_dir.join(sluice::store::STORE_FILE)).unwrap();
    let reasoning = json!({"type": "reasoning", "id": "rs_old", "summary": [], "encrypted_content": "gAAAAold"});
    let said = json!({"type": "message", "id": "msg_old", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "annotations": [], "text": "It is sunny."}]});
    let record = json!({"v": 1, "kind": "turn", "owner": "u1", "model": "gpt-5-mini", "encrypted_reasoning": true,
                        "items": [reasoning, said]});
    sluice_sdk::KvStore::put(
        &store,
        "openai_responses.turn",
        "0123456789ABCDEF",
        &record,
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    let mut messages = system_and("Weather in Paris?").as_array().unwrap().clone();
    messages.push(json!({"role": "assistant", "content": "[sluice:v1:turn:0123456789ABCDEF]: #\n\nIt is sunny."}));
    messages.push(json!({"role": "user", "content": "Thanks"}));
    let res = app.post_json("/chat/completions", &chat("gpt-5-mini", Value::Array(messages), json!({}))).await;
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap();
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    assert_eq!(types(&sent["input"]), ["user", "reasoning", "message", "user"], "{sent}");
    assert_eq!(sent["input"][1]["encrypted_content"], "gAAAAold");
}

#[tokio::test]
async fn non_streaming_task_requests_get_one_completion_without_tools_or_markers() {
    let mock = MockServer::start().await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).mount(&mock).await;
    let app = manifold_app(&mock, "").await;
    let body = chat(
        "gpt-5-mini",
        json!([{"role": "user", "content": "### Task:\nGenerate a title [sluice:v1:turn:0123456789ABCDEF]: #"}]),
        json!({"stream": false, "tools": weather_tool(), "sluice": {"task": "title_generation", "chat_id": "c1"}}),
    );
    let (status, completion) = json_of(app.post_json("/chat/completions", &body).await).await;
    assert_eq!(status, 200);
    assert_eq!(completion["object"], json!("chat.completion"));
    assert_eq!(completion["choices"][0]["message"]["content"], json!("Bonjour! Ça va ? Comment puis-je vous aider ?"));
    assert_eq!(completion["usage"]["prompt_tokens"], json!(24));
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    assert!(sent.get("tools").is_none() && sent.get("include").is_none(), "{sent}");
    assert_eq!(sent["reasoning"], json!({"effort": "minimal"}));
    assert_eq!(sent["input"][0]["content"][0]["text"], json!("### Task:\nGenerate a title"));
}

#[tokio::test]
async fn the_worked_example_and_image_and_file_parts_convert_as_specified() {
    let mock = MockServer::start().await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).mount(&mock).await;
    let app = manifold_app(&mock, "").await;
    // docs/manifold.md §4.7
    let body = json!({"model": "openai_responses.gpt-5-mini-high", "stream": true, "stream_options": {"include_usage": true},
        "temperature": 0.7, "max_tokens": 800,
        "user": {"id": "7a88224c", "name": "Alice", "email": "a@example.com", "role": "user"},
        "sluice": {"chat_id": "c1", "message_id": "m2", "task": null},
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    app.post_json("/chat/completions", &body).await.text().await.unwrap();
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    assert_eq!(
        without_ids(sent),
        json!({"stream": true, "store": false, "truncation": "auto", "instructions": "You are a helpful assistant.",
            "model": "gpt-5-mini", "reasoning": {"effort": "high"}, "include": ["reasoning.encrypted_content"], "max_output_tokens": 800,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is in this image?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}]}]})
    );
    // requests.json "img": file parts, history, and a later system message as developer.
    let body = chat(
        "gpt-4.1",
        json!([{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}}]},
        {"role": "assistant", "content": "<details type=\"reasoning\" done=\"true\">\n<summary>t</summary>\nx\n</details>\nAn earlier answer."},
        {"role": "system", "content": "Extra context"}]),
        json!({"frequency_penalty": 1, "metadata": {"a": "b"}, "seed": 3}),
    );
    app.post_json("/chat/completions", &body).await.text().await.unwrap();
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    let mut expected = fixture_requests()["img"].clone();
    for key in ["prompt_cache_key", "safety_identifier"] {
        expected.as_object_mut().unwrap().shift_remove(key);
    }
    assert_eq!(without_ids(sent), expected);
}

#[tokio::test]
async fn upstream_errors_before_the_stream_are_statuses_with_openai_s_message() {
    let mock = MockServer::start().await;
    on_responses()
        .respond_with(ResponseTemplate::new(400).insert_header("x-request-id", "req_abc").set_body_raw(
            r#"{"error":{"message":"Unsupported parameter: 'temperature' is not supported with this model.","type":"invalid_request_error","param":"temperature","code":"unsupported_parameter"}}"#,
            "application/json",
        ))
        .mount(&mock)
        .await;
    let app = manifold_app(&mock, "").await;
    let (status, body) =
        json_of(app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        json!("OpenAI: Unsupported parameter: 'temperature' is not supported with this model. (unsupported_parameter; request req_abc)")
    );
    assert!(!body.to_string().contains(OPENAI_KEY));
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_asked_delay_but_quota_errors_are_not() {
    let mock = MockServer::start().await;
    on_responses()
        .respond_with(rate_limited("retry-after-ms", "50"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&mock)
        .await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).mount(&mock).await;
    let app = manifold_app(&mock, "MAX_RETRIES = 2\n").await;
    let res = app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    assert_eq!(res.status().as_u16(), 200);
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("1_plain_text.expected-chunks.jsonl"));
    assert_eq!(mock.received_requests().await.unwrap().len(), 3);

    let mock = MockServer::start().await;
    on_responses()
        .respond_with(ResponseTemplate::new(429).set_body_raw(
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
            "application/json",
        ))
        .mount(&mock)
        .await;
    let app = manifold_app(&mock, "MAX_RETRIES = 2\n").await;
    let (status, body) =
        json_of(app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await).await;
    assert_eq!((status, body["error"]["code"].clone()), (429, json!("insufficient_quota")));
    assert_eq!(mock.received_requests().await.unwrap().len(), 1);

    // Not retried (MAX_RETRIES = 0): the wait OpenAI asked for goes on to the caller, whom Open
    // WebUI passes it to.
    let mock = MockServer::start().await;
    on_responses().respond_with(rate_limited("retry-after", "7")).mount(&mock).await;
    let app = manifold_app(&mock, "").await;
    let res = app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    assert_eq!(res.status().as_u16(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(res.headers()["retry-after-ms"], "7000");
}

#[tokio::test]
async fn an_idle_timeout_the_clock_cannot_hold_is_refused() {
    // `now + idle` panicked in every chat once the valve held u64::MAX (found by a reviewer).
    let mock = MockServer::start().await;
    let app = manifold_app(&mock, "").await;
    let (status, body) =
        json_of(app.post_json("/openai_responses/valves/update", &json!({"STREAM_IDLE_TIMEOUT_S": u64::MAX})).await)
            .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["message"], "must be between 1 and 86400");
}

#[tokio::test]
async fn an_asked_delay_that_is_no_duration_is_ignored() {
    // `Duration::from_secs_f64` panicked on each of these (found by a reviewer).
    for (header, value) in [
        ("retry-after", "-1"),
        ("retry-after", "NaN"),
        ("retry-after", "inf"),
        ("retry-after", "1e400"),
        ("retry-after-ms", "-5"),
    ] {
        let mock = MockServer::start().await;
        on_responses().respond_with(rate_limited(header, value)).mount(&mock).await;
        let app = manifold_app(&mock, "").await;
        let res = app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
        assert_eq!(res.status().as_u16(), 429, "{header}: {value}");
        assert!(res.headers().get("retry-after").is_none(), "{header}: {value}");
    }
}

#[tokio::test]
async fn server_errors_are_retried_and_a_failure_event_before_output_too() {
    let mock = MockServer::start().await;
    on_responses()
        .respond_with(ResponseTemplate::new(500).set_body_raw(
            r#"{"error":{"message":"boom","type":"server_error","param":null,"code":null}}"#,
            "application/json",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&mock)
        .await;
    on_responses().respond_with(sse_response("5a_failed.sse")).up_to_n_times(1).with_priority(2).mount(&mock).await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).with_priority(3).mount(&mock).await;
    let app = manifold_app(&mock, "MAX_RETRIES = 2\n").await;
    let text =
        app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await.text().await.unwrap();
    let (got, _, _) = payloads(&text);
    assert_eq!(got, expected_chunks("1_plain_text.expected-chunks.jsonl"));
    assert_eq!(mock.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn models_list_configured_ids_with_display_names_and_tolerates_a_failed_fetch() {
    let mock = MockServer::start().await;
    Mock::given(method("GET")).and(path("/v1/models")).respond_with(ResponseTemplate::new(500)).mount(&mock).await;
    let app = manifold_app(&mock, "FETCH_MODELS = true\n").await;
    let (status, body) = json_of(app.get("/models").await).await;
    assert_eq!(status, 200);
    let ours: Vec<(String, String)> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"].as_str().unwrap().starts_with("openai_responses."))
        .map(|m| (m["id"].as_str().unwrap().to_string(), m["name"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        ours,
        vec![
            ("openai_responses.gpt-4.1".into(), "OpenAI: GPT 4.1".into()),
            ("openai_responses.o4-mini".into(), "OpenAI: o4 Mini".into()),
            ("openai_responses.o4-mini-high".into(), "OpenAI: o4 Mini High".into()),
            ("openai_responses.gpt-5-mini".into(), "OpenAI: GPT 5 Mini".into()),
        ]
    );
}

/// The model list kept from the last request is not served after an edit of the models, even
/// in the same second: the manifold's new list is a new `Arc` with other entries.
#[tokio::test]
async fn the_model_list_follows_an_edit_of_the_models_at_once() {
    let mock = MockServer::start().await;
    let app = manifold_app(&mock, "").await;
    let ours = |body: Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str().filter(|i| i.starts_with("openai_")).map(str::to_owned))
            .collect()
    };
    let (_, first) = json_of(app.get("/models").await).await;
    let (_, again) = json_of(app.get("/models").await).await;
    assert_eq!(first, again, "asked twice, the same list");
    assert_eq!(ours(first).len(), 4);
    for models in [json!(["gpt-4.1", "o3"]), json!(["o3", "gpt-4.1"]), json!(["o3"])] {
        let res = app.post_json("/openai_responses/valves/update", &json!({"MODEL_ID": models})).await;
        assert_eq!(res.status().as_u16(), 200);
        let (_, body) = json_of(app.get("/models").await).await;
        let want: Vec<String> =
            models.as_array().unwrap().iter().map(|m| format!("openai_responses.{}", m.as_str().unwrap())).collect();
        assert_eq!(ours(body), want);
    }
}

#[tokio::test]
async fn served_models_filter_the_list() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": [{"id": "o4-mini-2025-04-16", "object": "model"}]})),
        )
        .mount(&mock)
        .await;
    let app = manifold_app(&mock, "FETCH_MODELS = true\n").await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        let (_, body) = json_of(app.get("/models").await).await;
        ids = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str().filter(|i| i.starts_with("openai_")).map(str::to_owned))
            .collect();
        if ids.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ids, vec!["openai_responses.o4-mini", "openai_responses.o4-mini-high"]);
}

#[tokio::test]
async fn the_inlet_stashes_metadata_and_takes_over_the_web_search_toggle() {
    let mock = MockServer::start().await;
    let app = manifold_app(&mock, "").await;
    let form = json!({"user": null, "body": {"model": "openai_responses.gpt-4.1", "messages": [],
        "features": {"web_search": true}, "metadata": {"chat_id": "c1", "message_id": "m1", "session_id": "s1", "task": null}}});
    let (status, body) = json_of(app.post_json("/openai_responses.gpt-4.1/filter/inlet", &form).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["sluice"], json!({"chat_id": "c1", "message_id": "m1", "session_id": "s1", "web_search": true}));
    assert_eq!(body["features"]["web_search"], json!(false));
}

#[tokio::test]
async fn the_api_key_is_masked_and_required() {
    let mock = MockServer::start().await;
    let app = manifold_app(&mock, "").await;
    let (_, valves) = json_of(app.get("/openai_responses/valves").await).await;
    assert_eq!(valves["API_KEY"], json!("********cdef"));
    let (status, _) = json_of(app.post_json("/openai_responses/valves/update", &json!({"API_KEY": ""})).await).await;
    assert_eq!(status, 200);
    // A configuration problem, said as one: 503 of type not_configured, no client retry.
    let response = app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await;
    assert_eq!(response.headers().get("x-should-retry").map(|v| v.to_str().unwrap()), Some("false"));
    let (status, body) = json_of(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["type"], "not_configured", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("set OPENAI_API_KEY or the API_KEY valve"), "{body}");
    let (status, body) =
        json_of(app.post_json("/openai_responses/valves/update", &json!({"BASE_URL": "not a url"})).await).await;
    assert_eq!(status, 422, "{body}");
}

/// Answers 3a (the model calls get_weather for Paris and London), then 3b once the results
/// come back. Priorities 1 and 2 are left for a test's own mocks.
pub async fn tool_round_mock() -> MockServer {
    let mock = MockServer::start().await;
    on_responses()
        .and(body_string_contains("function_call_output"))
        .respond_with(sse_response("3b_function_call_followup.sse"))
        .with_priority(3)
        .mount(&mock)
        .await;
    on_responses().respond_with(sse_response("3a_function_call.sse")).mount(&mock).await;
    mock
}

/// The messages Open WebUI sends back after 3a: the round's text (none), its two tool calls
/// with re-serialised arguments, and their results.
pub fn weather_round() -> Vec<Value> {
    vec![
        json!({"role": "assistant", "content": "", "tool_calls": [
            {"index": 0, "id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}},
            {"index": 1, "id": "call_Ht4nY8cJ2oWd6FgS1uMx5vBk", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"London\", \"unit\": \"c\"}"}}]}),
        json!({"role": "tool", "tool_call_id": "call_9sKq2VbQm1Xw7LhT0pRz3aEe", "content": "{\"temp_c\":18,\"conditions\":\"sunny\"}"}),
        json!({"role": "tool", "tool_call_id": "call_Ht4nY8cJ2oWd6FgS1uMx5vBk", "content": "{\"temp_c\":14,\"conditions\":\"light rain\"}"}),
    ]
}

/// Runs the 3a → 3b tool round and returns the app, the mock and the assistant messages
/// Open WebUI 0.12 would send back on the next turn.
async fn after_a_tool_round(valves: &str, third: ResponseTemplate, times: u64) -> (TestApp, MockServer, Vec<Value>) {
    let mock = tool_round_mock().await;
    on_responses()
        .and(body_string_contains("Thanks"))
        .respond_with(third)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(&mock)
        .await;
    on_responses()
        .and(body_string_contains("Thanks"))
        .respond_with(sse_response("1_plain_text.sse"))
        .with_priority(2)
        .mount(&mock)
        .await;
    let app = manifold_app(&mock, valves).await;
    let extra = json!({"tools": weather_tool(), "tool_choice": "auto", "reasoning_effort": "low"});
    let res = app
        .post_json("/chat/completions", &chat("gpt-5-mini", system_and("Weather in Paris and London?"), extra.clone()))
        .await;
    res.text().await.unwrap();
    let round = weather_round();
    let mut messages = system_and("Weather in Paris and London?").as_array().unwrap().clone();
    messages.extend(round.clone());
    let text = app
        .post_json("/chat/completions", &chat("gpt-5-mini", Value::Array(messages), extra))
        .await
        .text()
        .await
        .unwrap();
    let (got, _, _) = payloads(&text);
    let answer: String = got.iter().filter_map(|p| p["delta"]["content"].as_str()).collect();
    // As Open WebUI stores and sends back a final answer: trimmed.
    let mut history = round;
    history.push(json!({"role": "assistant", "content": answer.trim()}));
    (app, mock, history)
}

async fn next_turn(app: &TestApp, mock: &MockServer, history: &[Value]) -> Value {
    let mut messages = system_and("Weather in Paris and London?").as_array().unwrap().clone();
    messages.extend(history.iter().cloned());
    messages.push(json!({"role": "user", "content": "Thanks"}));
    let res = app
        .post_json("/chat/completions", &chat("gpt-5-mini", Value::Array(messages), json!({"tools": weather_tool()})))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    res.text().await.unwrap();
    upstream_bodies(mock).await.pop().unwrap()
}

fn types(input: &Value) -> Vec<String> {
    input.as_array().unwrap().iter().map(|i| i["type"].as_str().or(i["role"].as_str()).unwrap().to_string()).collect()
}

#[tokio::test]
async fn the_next_turn_replays_history_as_the_reasoning_policy_says() {
    // response (default): history keeps calls and outputs, without reasoning or ids.
    let (app, mock, history) = after_a_tool_round("", sse_response("1_plain_text.sse"), 99).await;
    let sent = next_turn(&app, &mock, &history).await;
    assert_eq!(
        types(&sent["input"]),
        ["user", "function_call", "function_call", "function_call_output", "function_call_output", "assistant", "user"]
    );
    assert!(sent["input"][1].get("id").is_none() && sent["input"][1].get("status").is_none());
    assert!(!sent.to_string().contains("encrypted_content\":\"gAAAA"));

    // conversation: everything verbatim, reasoning included.
    let (app, mock, history) =
        after_a_tool_round("PERSIST_REASONING_TOKENS = \"conversation\"\n", sse_response("1_plain_text.sse"), 99).await;
    let sent = next_turn(&app, &mock, &history).await;
    assert_eq!(
        types(&sent["input"]),
        [
            "user",
            "reasoning",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "reasoning",
            "message",
            "user"
        ]
    );

    // An edited answer cannot be matched to its record: that message replays as its text.
    let (app, mock, mut history) =
        after_a_tool_round("PERSIST_REASONING_TOKENS = \"conversation\"\n", sse_response("1_plain_text.sse"), 99).await;
    let edited = history[3]["content"].as_str().unwrap().replace("Paris", "Lyon");
    history[3]["content"] = json!(edited);
    let sent = next_turn(&app, &mock, &history).await;
    let input = sent["input"].as_array().unwrap();
    assert_eq!(
        types(&sent["input"]),
        [
            "user",
            "reasoning",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "assistant",
            "user"
        ]
    );
    let replayed = input[6]["content"].as_str().unwrap();
    assert!(replayed.contains("Lyon") && !replayed.contains("sluice:v1"), "{replayed}");
}

#[tokio::test]
async fn refused_encrypted_items_get_one_retry_without_them() {
    let refusal = ResponseTemplate::new(400).set_body_raw(
        r#"{"error":{"message":"The encrypted content for item rs_a71a could not be verified.","type":"invalid_request_error","param":null,"code":"invalid_encrypted_content"}}"#,
        "application/json",
    );
    let (app, mock, history) = after_a_tool_round("PERSIST_REASONING_TOKENS = \"conversation\"\n", refusal, 1).await;
    let sent = next_turn(&app, &mock, &history).await;
    let thanks: Vec<Value> =
        upstream_bodies(&mock).await.into_iter().filter(|b| b.to_string().contains("Thanks")).collect();
    assert_eq!(thanks.len(), 2, "one refused request, one degraded retry");
    assert!(thanks[0].to_string().contains("gAAAA"));
    assert!(!sent.to_string().contains("gAAAA") && !sent.to_string().contains("rs_"), "{sent}");
}

#[tokio::test]
async fn generated_images_arrive_as_delta_images_with_progress_statuses() {
    let events = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_img", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"id": "ig_1", "type": "image_generation_call", "status": "in_progress"}}),
        json!({"type": "response.image_generation_call.partial_image", "sequence_number": 2, "output_index": 0, "item_id": "ig_1", "partial_image_index": 0, "partial_image_b64": "cGFydA=="}),
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0, "item": {"id": "ig_1", "type": "image_generation_call", "status": "completed", "output_format": "png", "result": "aGVsbG8="}}),
        json!({"type": "response.completed", "sequence_number": 4, "response": {"id": "resp_img", "status": "completed", "model": "gpt-4.1-2025-04-14",
            "output": [{"id": "ig_1", "type": "image_generation_call", "status": "completed", "output_format": "png", "result": "aGVsbG8="}],
            "usage": {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}}}),
    ];
    let sse: String = events.iter().map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap())).collect();
    let mock = MockServer::start().await;
    on_responses().respond_with(ResponseTemplate::new(200).set_body_raw(sse, "text/event-stream")).mount(&mock).await;
    let app = manifold_app(&mock, "ENABLE_IMAGE_GENERATION = true\n").await;
    let text = app
        .post_json("/chat/completions", &chat("gpt-4.1", system_and("Draw a cat"), json!({})))
        .await
        .text()
        .await
        .unwrap();
    let (got, _, _) = payloads(&text);
    assert_eq!(got[0]["event"]["data"]["description"], json!("Generating the image… (preview 1)"), "{text}");
    assert_eq!(
        got[1],
        json!({"delta": {"images": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}})
    );
    assert_eq!(got[2], json!({"delta": {}, "finish_reason": "stop"}));
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    assert_eq!(sent["tools"], json!([{"type": "image_generation"}]));
}

#[tokio::test]
async fn usage_carries_an_estimated_cost_when_enabled() {
    let mock = MockServer::start().await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).mount(&mock).await;
    let app = manifold_app(&mock, "SHOW_USAGE_COST = true\n").await;
    let text =
        app.post_json("/chat/completions", &chat("gpt-4.1", system_and("hi"), json!({}))).await.text().await.unwrap();
    let (got, _, _) = payloads(&text);
    let usage = &got.iter().find(|p| p.get("usage").is_some()).unwrap()["usage"];
    // gpt-4.1: 24 input tokens at $2/M, 13 output tokens at $8/M.
    assert_eq!(usage["cost"], json!(0.000152));
    assert_eq!(usage["cost_details"]["currency"], json!("USD"));
    assert_eq!(usage["cost_details"]["estimate"], json!(true));
}

#[tokio::test]
async fn without_reasoning_persistence_the_tool_round_replays_no_reasoning() {
    let (_app, mock, _history) =
        after_a_tool_round("PERSIST_REASONING_TOKENS = \"disabled\"\n", sse_response("1_plain_text.sse"), 99).await;
    let bodies = upstream_bodies(&mock).await;
    assert!(bodies[0].get("include").is_none(), "{}", bodies[0]);
    assert_eq!(
        types(&bodies[1]["input"]),
        ["user", "function_call", "function_call", "function_call_output", "function_call_output"]
    );
    assert!(bodies[1]["input"][1].get("id").is_none());
}

/// OpenAI down: a chat user reads a short message, never the URL or the socket error; an
/// Open WebUI admin reads them too when ERROR_DETAILS_FOR_ADMINS is on.
#[tokio::test]
async fn an_unreachable_upstream_is_a_short_message_and_details_for_admins_only() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (details, role, shows) in [(false, "admin", false), (true, "user", false), (true, "admin", true)] {
        let mock = MockServer::start().await;
        let valves = format!("BASE_URL = \"http://127.0.0.1:{closed}/v1\"\nERROR_DETAILS_FOR_ADMINS = {details}\n");
        let app = manifold_app(&mock, &valves).await;
        let mut body = chat("gpt-4.1", system_and("hi"), json!({"stream": false}));
        body["user"] = json!({"id": "u-1", "name": "N", "email": "n@example.com", "role": role});
        let (status, answer) = crate::helpers::error_of(app.post_json("/chat/completions", &body).await).await;
        assert_eq!(status, 503, "{answer}");
        let message = answer["detail"].as_str().unwrap();
        assert!(message.starts_with("OpenAI could not be reached; try again in a moment"), "{message}");
        assert_eq!(message.contains(&format!("127.0.0.1:{closed}")), shows, "{details} {role}: {message}");
    }
}

/// What reaches OpenAI for models the table knows, declares, or routes: tools only to models
/// that take them (the table, or MODEL_CAPABILITIES_JSON for a proxy's id), verbosity only to
/// models with that capability, and gpt-5-auto answered by gpt-5-chat-latest.
#[tokio::test]
async fn capabilities_decide_what_is_sent_and_operators_can_declare_them() {
    let mock = MockServer::start().await;
    on_responses().respond_with(sse_response("1_plain_text.sse")).mount(&mock).await;
    let valves = "MODEL_ID = [\"gpt-4.1\", \"gpt-5-mini\", \"my-proxy\", \"other-proxy\", \"gpt-5-auto\"]\n\
                  MODEL_CAPABILITIES_JSON = '{\"my-proxy\": {\"tools\": true, \"verbosity\": true}}'\n";
    let app = manifold_app(&mock, valves).await;
    let extra = json!({"tools": weather_tool(), "verbosity": "low"});
    for model in ["gpt-4.1", "gpt-5-mini", "my-proxy", "other-proxy", "gpt-5-auto"] {
        let res = app.post_json("/v1/chat/completions", &chat(model, system_and("hi"), extra.clone())).await;
        assert_eq!(res.status().as_u16(), 200, "{model}");
        let _ = res.text().await.unwrap();
    }
    let sent = upstream_bodies(&mock).await;
    let facts: Vec<(String, bool, bool)> = sent
        .iter()
        .map(|b| {
            (b["model"].as_str().unwrap().to_string(), b.get("tools").is_some(), b.pointer("/text/verbosity").is_some())
        })
        .collect();
    assert_eq!(
        facts,
        [
            ("gpt-4.1".to_string(), true, false),
            ("gpt-5-mini".to_string(), true, true),
            ("my-proxy".to_string(), true, true),
            ("other-proxy".to_string(), false, false),
            ("gpt-5-chat-latest".to_string(), true, false),
        ]
    );
    let bad = json!({"MODEL_CAPABILITIES_JSON": "{\"x\": {\"tool\": true}}"});
    let (status, answer) = json_of(app.post_json("/openai_responses/valves/update", &bad).await).await;
    assert_eq!(status, 422, "{answer}");
}
