use serde_json::{json, Value};

use crate::helpers::{json_of, spawn_app};

fn without_created(mut body: Value) -> Value {
    for entry in body["data"].as_array_mut().unwrap() {
        assert!(entry["created"].as_u64().unwrap() > 1_700_000_000);
        entry["created"] = json!(0);
    }
    body
}

#[tokio::test]
async fn models_lists_pipes_filters_and_manifold_sub_models_on_both_paths() {
    let app = spawn_app().await;
    let expected = json!({
        "data": [
            {"id": "scripted_pipe", "name": "Scripted Pipe", "object": "model", "created": 0, "owned_by": "openai",
             "pipeline": {"type": "pipe", "valves": true}},
            {"id": "scripted_filter", "name": "Scripted Filter", "object": "model", "created": 0, "owned_by": "openai",
             "pipeline": {"type": "filter", "pipelines": ["*"], "priority": 0, "valves": true}},
            {"id": "bare_filter", "name": "Bare Filter", "object": "model", "created": 0, "owned_by": "openai",
             "pipeline": {"type": "filter", "pipelines": [], "priority": 0, "valves": false}},
            {"id": "scripted_manifold.m-1", "name": "Scripted: Model One", "object": "model", "created": 0, "owned_by": "openai",
             "pipeline": {"type": "manifold", "valves": false}},
            {"id": "scripted_manifold.m.2", "name": "Scripted: Model Two", "object": "model", "created": 0, "owned_by": "openai",
             "pipeline": {"type": "manifold", "valves": false}, "info": {"meta": {"description": "second"}}},
        ],
        "object": "list",
        "pipelines": true,
    });
    for path in ["/models", "/v1/models", "/models/"] {
        let (status, body) = json_of(app.get(path).await).await;
        assert_eq!(status, 200);
        assert_eq!(without_created(body), expected, "{path}");
    }
}

#[tokio::test]
async fn key_order_inside_pipeline_objects_is_the_reference_order() {
    let app = spawn_app().await;
    let text = app.get("/models").await.text().await.unwrap();
    assert!(text.contains(r#""pipeline":{"type":"filter","pipelines":["*"],"priority":0,"valves":true}"#), "{text}");
    assert!(text.ends_with(r#""object":"list","pipelines":true}"#), "{text}");
}

#[tokio::test]
async fn filter_routing_follows_valves_updates() {
    let app = spawn_app().await;
    // Listed before the update too: the list written for it must not be served after it.
    let (_, before) = json_of(app.get("/models").await).await;
    assert_eq!(before["data"][1]["pipeline"]["priority"], json!(0));
    let res = app
        .post_json("/scripted_filter/valves/update", &json!({"pipelines": "scripted_pipe, other", "priority": "5"}))
        .await;
    assert_eq!(res.status().as_u16(), 200);
    let (_, body) = json_of(app.get("/models").await).await;
    assert_eq!(
        body["data"][1]["pipeline"],
        json!({"type": "filter", "pipelines": ["scripted_pipe", "other"], "priority": 5, "valves": true})
    );
}

#[tokio::test]
async fn pipelines_lists_modules() {
    let app = spawn_app().await;
    let (status, body) = json_of(app.get("/v1/pipelines").await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"data": [
            {"id": "scripted_pipe", "name": "scripted_pipe", "type": "pipe", "valves": true},
            {"id": "scripted_filter", "name": "scripted_filter", "type": "filter", "valves": true},
            {"id": "bare_filter", "name": "bare_filter", "type": "filter", "valves": false},
            {"id": "scripted_manifold", "name": "scripted_manifold", "type": "manifold", "valves": false},
        ]})
    );
}
