use serde_json::{json, Value};

use crate::helpers::{assert_golden, error_of, json_of, normalize_sse, spawn_app};

/// A chat as Open WebUI sends it (with its `user` object): the reference's dialect, streamed
/// unless it says otherwise. Other OpenAI clients are tests/api/openai_clients.rs.
fn chat(said: &str, stream: Option<bool>) -> Value {
    let mut body = json!({"model": "scripted_pipe", "messages": [{"role": "user", "content": said}],
                          "user": {"id": "u1", "name": "Ada", "email": "ada@example.com", "role": "user"}});
    if let Some(s) = stream {
        body["stream"] = json!(s);
    }
    body
}

async fn sse(app: &crate::helpers::TestApp, path: &str, body: &Value) -> String {
    let res = app.post_json(path, body).await;
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream; charset=utf-8");
    normalize_sse(&res.text().await.unwrap())
}

#[tokio::test]
async fn streaming_is_the_default_and_matches_the_golden_bytes() {
    let app = spawn_app().await;
    for path in ["/chat/completions", "/v1/chat/completions"] {
        let text = sse(&app, path, &chat("hello", None)).await;
        assert_golden("hello.sse", &text);
    }
}

#[tokio::test]
async fn non_ascii_is_escaped_as_the_reference_does() {
    let app = spawn_app().await;
    let text = sse(&app, "/chat/completions", &chat("unicode", Some(true))).await;
    assert!(text.contains(r#""content": "h\u00e9llo \u2713""#), "{text}");
}

#[tokio::test]
async fn tool_calls_reasoning_events_and_citations_stream_as_open_webui_reads_them() {
    let app = spawn_app().await;
    assert_golden("tools.sse", &sse(&app, "/chat/completions", &chat("tools", None)).await);
    assert_golden("events.sse", &sse(&app, "/chat/completions", &chat("events", None)).await);
}

#[tokio::test]
async fn an_error_after_the_200_is_an_error_line_and_a_clean_end() {
    let app = spawn_app().await;
    let text = sse(&app, "/chat/completions", &chat("error-mid", None)).await;
    assert_golden("error_mid.sse", &text);
    assert!(!text.contains("never sent"));
}

#[tokio::test]
async fn an_error_before_the_stream_is_an_http_status_with_a_json_body() {
    let app = spawn_app().await;
    for stream in [Some(true), Some(false)] {
        let (status, body) = json_of(app.post_json("/chat/completions", &chat("error-before", stream)).await).await;
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"detail": "Rate limit reached for gpt-x",
                   "error": {"message": "Rate limit reached for gpt-x", "type": "rate_limit_error", "param": null, "code": "rate_limit_exceeded"}})
        );
    }
}

#[tokio::test]
async fn non_streaming_answers_one_chat_completion() {
    let app = spawn_app().await;
    let (status, mut body) = json_of(app.post_json("/v1/chat/completions", &chat("hello", Some(false))).await).await;
    assert_eq!(status, 200);
    assert!(body["id"].as_str().unwrap().starts_with("scripted_pipe-"));
    body["id"] = json!("ID");
    body["created"] = json!(0);
    assert_eq!(
        body,
        json!({"id": "ID", "object": "chat.completion", "created": 0, "model": "scripted_pipe",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello world"}, "logprobs": null, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
    );
}

#[tokio::test]
async fn non_streaming_collects_tool_calls_and_reasoning() {
    let app = spawn_app().await;
    let (_, body) = json_of(app.post_json("/chat/completions", &chat("tools", Some(false))).await).await;
    assert_eq!(
        body["choices"][0],
        json!({"index": 0, "message": {"role": "assistant", "content": "",
               "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
               "logprobs": null, "finish_reason": "tool_calls"})
    );
    let (_, body) = json_of(app.post_json("/chat/completions", &chat("events", Some(false))).await).await;
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], json!("thinking..."));
    assert_eq!(body["choices"][0]["message"]["content"], json!("Answer"));
    assert_eq!(body["choices"][0]["finish_reason"], json!("length"));
}

#[tokio::test]
async fn non_streaming_errors_mid_answer_and_empty_answers_are_reported() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.post_json("/chat/completions", &chat("error-mid", Some(false))).await).await;
    assert_eq!((status, body["error"]["message"].clone()), (502, json!("upstream exploded")));
    let (status, body) = json_of(app.post_json("/chat/completions", &chat("empty", Some(false))).await).await;
    assert_eq!((status, body["detail"].clone()), (502, json!("scripted_pipe returned an empty answer")));
}

#[tokio::test]
async fn an_empty_stream_still_finishes_properly() {
    let app = spawn_app().await;
    assert_golden("empty.sse", &sse(&app, "/chat/completions", &chat("empty", None)).await);
}

#[tokio::test]
async fn manifold_sub_models_get_their_sub_id() {
    let app = spawn_app().await;
    let body =
        json!({"model": "scripted_manifold.m.2", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let text = sse(&app, "/chat/completions", &body).await;
    assert!(text.contains(r#""model": "scripted_manifold.m.2""#) && text.contains("manifold model_id=m.2"), "{text}");
}

#[tokio::test]
async fn the_pipe_receives_the_body_in_the_reference_order() {
    let app = spawn_app().await;
    let request = json!({"model": "scripted_pipe", "temperature": 0.5, "user": {"id": "u"}, "chat_id": "c",
        "messages": [{"role": "system", "content": "sys"},
                     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}, {"type": "text", "text": "echo"}]},
                     {"role": "assistant", "content": null, "tool_calls": []},
                     {"role": "tool", "tool_call_id": "call_1", "content": null}]});
    let (status, body) = json_of(
        app.post_json("/chat/completions", &{
            let mut r = request.clone();
            r["stream"] = json!("no");
            r
        })
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], json!("echo: echo"));
    let seen = app.probe.last_body.lock().unwrap().clone().unwrap();
    let keys: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(keys, ["stream", "model", "messages", "temperature", "user", "chat_id"]);
    assert_eq!(seen["stream"], json!(false));
}

#[tokio::test]
async fn filters_and_unknown_models_are_not_chat_models() {
    let app = spawn_app().await;
    // Each says why, and what to ask for instead.
    for (model, says) in [
        ("scripted_filter", "scripted_filter is a filter: Open WebUI runs it around chats with other models"),
        ("nope", "Pipeline nope not found; GET /models lists the model ids"),
        ("scripted_manifold", "scripted_manifold is a manifold: ask for one of its models, such as scripted_manifold."),
        ("scripted_manifold.zzz", "Pipeline scripted_manifold.zzz not found"),
        ("scripted_pip", "Pipeline scripted_pip not found (did you mean `scripted_pipe`?)"),
        ("m-1", "Pipeline m-1 not found (did you mean `scripted_manifold.m-1`?)"),
    ] {
        let body = json!({"model": model, "messages": []});
        let (status, answer) = error_of(app.post_json("/chat/completions", &body).await).await;
        assert_eq!(status, 404);
        assert!(answer["detail"].as_str().unwrap().starts_with(says), "{model}: {answer}");
    }
}
