//! Other OpenAI clients (the official SDKs, LiteLLM, LangChain, scripts): a request without
//! Open WebUI's `user` object or headers gets OpenAI's chat completions to the letter, and an
//! answer carries nothing added. The real `openai` package is driven against sluice by
//! tests/e2e/clients.py; these are the same rules at the HTTP level.

use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{json_of, spawn_app, KEY};
use crate::manifold::{
    manifold_app, sse_response, system_and, tool_round_mock, upstream_bodies, weather_tool, OPENAI_KEY,
};

fn ask(said: &str) -> Value {
    json!({"model": "scripted_pipe", "messages": [{"role": "user", "content": said}]})
}

/// The JSON payloads of a stream's `data:` lines, `[DONE]` left out.
fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn without_stream_the_answer_is_one_chat_completion() {
    let app = spawn_app().await;
    let (status, answer) = json_of(app.post_json("/v1/chat/completions", &ask("hello")).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(answer["usage"]["total_tokens"], 11, "usage always comes with a whole answer");
}

#[tokio::test]
async fn a_stream_has_chunks_only_and_usage_when_asked_for() {
    let app = spawn_app().await;
    let mut body = ask("events");
    body["stream"] = json!(true);
    let text = app.post_json("/v1/chat/completions", &body).await.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let lines = data_lines(&text);
    for line in &lines {
        assert_eq!(line["object"], "chat.completion.chunk", "not a chunk: {line}");
        assert_eq!(line["choices"].as_array().map(Vec::len), Some(1), "{line}");
    }
    let content: String = lines.iter().filter_map(|l| l["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content, "Answer");
    // Citations keep their OpenAI form.
    assert!(text.contains("\"annotations\": [{\"type\": \"url_citation\""), "{text}");

    let mut body = ask("hello");
    body["stream"] = json!(true);
    let without = data_lines(&app.post_json("/v1/chat/completions", &body).await.text().await.unwrap());
    assert!(without.iter().all(|l| l.get("usage").is_none()), "no usage chunk unless asked");
    body["stream_options"] = json!({"include_usage": true});
    let with = data_lines(&app.post_json("/v1/chat/completions", &body).await.text().await.unwrap());
    let usage: Vec<&Value> = with.iter().filter(|l| l.get("usage").is_some()).collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["choices"], json!([]));
    assert_eq!(usage[0]["usage"]["total_tokens"], 11);
}

#[tokio::test]
async fn an_answer_of_tool_calls_only_has_null_content() {
    let app = spawn_app().await;
    let (_, answer) = json_of(app.post_json("/v1/chat/completions", &ask("tools")).await).await;
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn errors_carry_openai_s_error_object_and_say_when_not_to_retry() {
    let app = spawn_app().await;
    let res =
        app.client.post(app.url("/v1/chat/completions")).bearer_auth("wrong").json(&ask("hi")).send().await.unwrap();
    assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
    let (status, body) = json_of(res).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["error"],
        json!({"message": "Invalid API key", "type": "authentication_error", "param": null, "code": "invalid_api_key"})
    );
    assert_eq!(body["detail"], "Invalid API key", "Open WebUI reads detail");

    let (status, body) =
        json_of(app.post_json("/v1/chat/completions", &json!({"model": "gpt-4.1", "messages": []})).await).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-4.1"), "{body}");

    let (status, body) = json_of(app.post_json("/v1/chat/completions", &json!({"model": "scripted_pipe"})).await).await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["param"], "messages");
    assert_eq!(body["error"]["message"], "messages: field required");
    let _ = KEY;
}

async fn manifold_with_upstream(upstream: &MockServer, extra: &str) -> crate::helpers::TestApp {
    manifold_app(upstream, extra).await
}

#[tokio::test]
async fn parameters_the_responses_api_cannot_honour_are_refused_by_name() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(sse_response("1_plain_text.sse"))
        .mount(&upstream)
        .await;
    let app = manifold_with_upstream(&upstream, "").await;
    let base = json!({"model": "openai_responses.gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
    for (param, value) in [
        ("n", json!(2)),
        ("stop", json!(["\n"])),
        ("seed", json!(7)),
        ("logit_bias", json!({"50256": -100})),
        ("presence_penalty", json!(0.5)),
        ("functions", json!([{"name": "f"}])),
    ] {
        let mut body = base.clone();
        body[param] = value;
        let (status, answer) = json_of(app.post_json("/v1/chat/completions", &body).await).await;
        assert_eq!(status, 400, "{param}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
        assert_eq!(answer["error"]["code"], "unsupported_parameter");
    }
    assert!(upstream_bodies(&upstream).await.is_empty(), "nothing reached the upstream");
    // Their defaults are fine; a string `user` becomes the safety identifier.
    let mut body = base.clone();
    body["n"] = json!(1.0);
    body["presence_penalty"] = json!(0);
    body["user"] = json!("customer-42");
    let (status, _) = json_of(app.post_json("/v1/chat/completions", &body).await).await;
    assert_eq!(status, 200);
    let sent = upstream_bodies(&upstream).await.pop().unwrap();
    assert_eq!(sent["safety_identifier"], sluice_sdk::digest::sha256_hex(b"customer-42"));
    // Open WebUI sends its admin's model settings as they are: dropped, as before.
    let mut from_owui = base.clone();
    from_owui["stop"] = json!(["\n"]);
    from_owui["user"] = json!({"id": "u1", "name": "Ada", "email": "a@example.com", "role": "user"});
    let res = app.post_json("/v1/chat/completions", &from_owui).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();
    assert!(upstream_bodies(&upstream).await.pop().unwrap().get("stop").is_none());
}

#[tokio::test]
async fn an_upstream_refusal_after_sluice_s_retries_tells_the_client_not_to_retry() {
    let upstream = MockServer::start().await;
    let quota = json!({"error": {"message": "You exceeded your current quota.", "type": "insufficient_quota", "code": "insufficient_quota"}});
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(429).set_body_json(quota))
        .mount(&upstream)
        .await;
    let app = manifold_with_upstream(&upstream, "MAX_RETRIES = 2\n").await;
    let body = json!({"model": "openai_responses.gpt-4.1", "messages": [{"role": "user", "content": "hi"}]});
    let res = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(res.headers().get("x-should-retry").unwrap(), "false");
    let (status, answer) = json_of(res).await;
    assert_eq!(status, 429);
    assert!(answer["error"]["message"].as_str().unwrap().contains("exceeded your current quota"), "{answer}");
    assert_eq!(upstream_bodies(&upstream).await.len(), 1, "no quota is won by retrying");

    let upstream = MockServer::start().await;
    let down = json!({"error": {"message": "The server had an error", "type": "server_error"}});
    Mock::given(method("POST"))
        .and(path("/v1/responses"))
        .respond_with(ResponseTemplate::new(500).set_body_json(down).insert_header("retry-after-ms", "10"))
        .mount(&upstream)
        .await;
    let app = manifold_with_upstream(&upstream, "MAX_RETRIES = 2\n").await;
    let res = app.post_json("/v1/chat/completions", &body).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers().get("x-should-retry").unwrap(), "false", "sluice retried twice already");
    assert_eq!(upstream_bodies(&upstream).await.len(), 3);
}

#[tokio::test]
async fn a_tool_round_of_an_openai_client_replays_the_stored_items() {
    let mock = tool_round_mock().await;
    let app = manifold_app(&mock, "").await;
    let tools = json!({"tools": weather_tool(), "reasoning_effort": "low", "user": "customer-7"});
    let mut first =
        json!({"model": "openai_responses.gpt-5-mini", "messages": system_and("Weather in Paris and London?")});
    for (k, v) in tools.as_object().unwrap() {
        first[k] = v.clone();
    }
    let (status, answer) = json_of(app.post_json("/v1/chat/completions", &first).await).await;
    assert_eq!(status, 200);
    let message = answer["choices"][0]["message"].clone();
    assert_eq!(message["content"], Value::Null);
    assert!(!answer.to_string().contains("[sluice:"), "{answer}");
    let calls = message["tool_calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 2);
    // The client sends the assistant message back as it got it, with the results.
    let mut second = first.clone();
    let list = second["messages"].as_array_mut().unwrap();
    list.push(message);
    for call in &calls {
        list.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 18}"}));
    }
    let (status, _) = json_of(app.post_json("/v1/chat/completions", &second).await).await;
    assert_eq!(status, 200);
    let sent = upstream_bodies(&mock).await.pop().unwrap();
    let types: Vec<&str> = sent["input"].as_array().unwrap().iter().filter_map(|i| i["type"].as_str()).collect();
    assert!(types.contains(&"reasoning"), "the encrypted reasoning of round 1 is replayed: {types:?}");
    let _ = OPENAI_KEY;
}
