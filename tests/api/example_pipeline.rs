//! The example pipeline of docs/writing-a-pipeline.md, registered as a new pipeline would be:
//! listed, its valves served and edited, and chatting with it, streamed and not.

use std::sync::Arc;

use serde_json::json;
use sluice_example_word_count::WordCount;

use crate::helpers::{json_of, spawn_app_with, Options, TestApp};

async fn app(valves: &str) -> TestApp {
    spawn_app_with(Options {
        pipelines: vec![Arc::new(WordCount::default())],
        valves_files: vec![("word_count.toml", valves.to_string())],
        ..Default::default()
    })
    .await
    .unwrap()
}

fn ask(text: &str, stream: bool) -> serde_json::Value {
    json!({"model": "word_count", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn a_new_pipeline_is_listed_configured_and_answers() {
    let app = app("LABEL = \"Count:\"\n").await;
    let (_, models) = json_of(app.get("/models").await).await;
    let entry = models["data"].as_array().unwrap().iter().find(|m| m["id"] == "word_count").cloned().unwrap();
    assert_eq!(entry["pipeline"]["type"], "pipe");
    let (_, spec) = json_of(app.get("/word_count/valves/spec").await).await;
    assert_eq!(spec["properties"]["MIN_LENGTH"]["description"], "Count only words at least this long (1-100).");

    let (status, answer) = json_of(app.post_json("/chat/completions", &ask("one two three", false)).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "Count: 3");
    let text = app.post_json("/chat/completions", &ask("one two three four", true)).await.text().await.unwrap();
    assert!(text.contains("\"content\": \"4\"") && text.ends_with("data: [DONE]\n\n"), "{text}");
    // Open WebUI (its `user` object) also gets the status lines.
    let mut from_owui = ask("one two", true);
    from_owui["user"] = json!({"id": "u1", "name": "Ada", "email": "ada@example.com", "role": "user"});
    let text = app.post_json("/chat/completions", &from_owui).await.text().await.unwrap();
    assert!(text.contains("Counting") && text.contains("\"content\": \"2\""), "{text}");

    // Its valves are edited like any other pipeline's, and checked.
    assert_eq!(app.post_json("/word_count/valves/update", &json!({"MIN_LENGTH": "4"})).await.status(), 200);
    let (_, answer) = json_of(app.post_json("/chat/completions", &ask("a tiny cat sleeps", false)).await).await;
    assert_eq!(answer["choices"][0]["message"]["content"], "Count: 2");
    let (status, refused) = json_of(app.post_json("/word_count/valves/update", &json!({"MIN_LENGTH": 0})).await).await;
    assert_eq!(status, 422, "{refused}");
    assert!(app.valves_file("word_count").contains("MIN_LENGTH = 4"));

    // Its own error before the answer: a status with its message.
    let (status, error) = json_of(app.post_json("/chat/completions", &ask("   ", false)).await).await;
    assert_eq!(status, 400, "{error}");
    assert!(error["detail"].as_str().unwrap().contains("nothing to count"));
}

/// A pipe that has its answer in one piece returns a `chat.completion` (the reference's
/// "return a dict"), through `sluice_sdk::completion::stream`: callers get it streamed or
/// whole like any other answer.
struct WholeAnswer;

#[sluice_sdk::async_trait]
impl sluice_sdk::Pipeline for WholeAnswer {
    fn id(&self) -> &str {
        "whole_answer"
    }
    fn name(&self) -> &str {
        "Whole Answer"
    }
    fn kind(&self) -> sluice_sdk::PipelineKind {
        sluice_sdk::PipelineKind::Pipe
    }
    async fn pipe(
        &self,
        _request: sluice_sdk::PipeRequest,
    ) -> Result<sluice_sdk::PipeStream, sluice_sdk::PipelineError> {
        sluice_sdk::completion::stream(&json!({"object": "chat.completion", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": "All at once."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}))
    }
}

#[tokio::test]
async fn a_pipe_may_return_one_whole_completion() {
    let app = spawn_app_with(Options { pipelines: vec![Arc::new(WholeAnswer)], ..Default::default() }).await.unwrap();
    let ask = |stream: bool| json!({"model": "whole_answer", "stream": stream, "messages": [{"role": "user", "content": "q"}]});
    let (status, answer) = json_of(app.post_json("/chat/completions", &ask(false)).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "All at once.");
    assert_eq!(answer["usage"]["total_tokens"], 5);
    let mut streamed = ask(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let text = app.post_json("/chat/completions", &streamed).await.text().await.unwrap();
    assert!(text.contains("\"content\": \"All at once.\"") && text.contains("\"total_tokens\": 5"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
}
