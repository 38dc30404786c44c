//! Several replicas on one PostgreSQL database (issue 7): each test starts two apps on the
//! same database, as two sluice processes behind a load balancer would run. Needs
//! `TEST_PG_URL` (CI starts a server; see store_contract.rs).

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, TestApp};
use crate::manifold::{
    chat, expected_chunks, fixture_requests, payloads, system_and, tool_round_mock, upstream_bodies, weather_round,
    weather_tool, OPENAI_KEY,
};
use crate::openpipe::{completion_ids, fast, inlet_body, outlet_body, user, valves, OP_KEY};
use crate::openpipe_mock::MockOpenPipe;
use crate::store_contract::pg_database;

async fn replica(url: &str, files: Vec<(&'static str, String)>, reporting: bool, manifold: bool) -> TestApp {
    spawn_app_with(Options {
        store_url: Some(url.to_string()),
        store_lease_secs: Some(2),
        valves_files: files,
        openpipe: reporting.then(fast),
        manifold,
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn hook(app: &TestApp, which: &str, body: Value) {
    let res =
        app.post_json(&format!("/openpipe_reporting/filter/{which}"), &json!({"user": user(), "body": body})).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_inlet_on_one_replica_and_its_outlet_on_the_other_make_one_report() {
    let Some(url) = pg_database().await else { return };
    let mock = MockOpenPipe::start(OP_KEY).await;
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, ""))];
    let (a, b) = (replica(&url, files.clone(), true, false).await, replica(&url, files, true, false).await);
    hook(&a, "inlet", inlet_body("c-1", "m-1", json!([{"role": "user", "content": "hello"}]))).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let history = json!([{"id": "m-1-q", "role": "user", "content": "hello"}]);
    hook(&b, "outlet", outlet_body("c-1", "m-1", history, "hi!")).await;
    let reports = mock.wait_for_reports(1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.reports().len(), 1, "{reports:?}");
    let r = &reports[0];
    assert_eq!(r["tags"]["capture"], "inlet_outlet", "the outlet found the other replica's capture: {r}");
    assert_eq!(r["respPayload"]["id"], "chatcmpl-m-1");
    assert!(r["requestedAt"].as_u64().unwrap() < r["receivedAt"].as_u64().unwrap(), "{r}");
}

#[tokio::test]
async fn reports_queued_on_both_replicas_are_delivered_once_by_both_workers() {
    let Some(url) = pg_database().await else { return };
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.down = Some(503));
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, ""))];
    let (a, b) = (replica(&url, files.clone(), true, false).await, replica(&url, files, true, false).await);
    let mut expected = Vec::new();
    for i in 0..30 {
        let app = if i % 2 == 0 { &a } else { &b };
        let (chat_id, message) = (format!("c-{i}"), format!("m-{i}"));
        hook(app, "inlet", inlet_body(&chat_id, &message, json!([{"role": "user", "content": "q"}]))).await;
        let history = json!([{"id": format!("{message}-q"), "role": "user", "content": "q"}]);
        hook(app, "outlet", outlet_body(&chat_id, &message, history, "a")).await;
        expected.push(format!("chatcmpl-{message}"));
    }
    mock.with(|s| s.down = None);
    mock.wait_for_reports(30, 30).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    expected.sort();
    assert_eq!(completion_ids(&mock.reports()), expected, "each report exactly once");
}

#[tokio::test]
async fn a_tool_round_can_go_to_one_replica_and_its_follow_up_to_the_other() {
    let Some(url) = pg_database().await else { return };
    let mock = tool_round_mock().await;
    let responses = format!(
        "BASE_URL = \"{}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nSHOW_USAGE_COST = false\nMAX_RETRIES = 0\n\
         MODEL_ID = [\"gpt-4.1\", \"o4-mini\", \"gpt-5-mini\"]\n",
        mock.uri()
    );
    let files = vec![("openai_responses.toml", responses)];
    let (a, b) = (replica(&url, files.clone(), false, true).await, replica(&url, files, false, true).await);
    let extra = json!({"tools": weather_tool(), "tool_choice": "auto", "reasoning_effort": "low"});
    let res = a
        .post_json("/chat/completions", &chat("gpt-5-mini", system_and("Weather in Paris and London?"), extra.clone()))
        .await;
    let (got, marker, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3a_function_call.expected-chunks.jsonl"));
    let mut messages = system_and("Weather in Paris and London?");
    messages.as_array_mut().unwrap().extend(weather_round(&marker.unwrap()));
    let res = b.post_json("/chat/completions", &chat("gpt-5-mini", messages, extra)).await;
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3b_function_call_followup.expected-chunks.jsonl"));
    // The other replica replayed the first one's items byte for byte.
    let bodies = upstream_bodies(&mock).await;
    assert_eq!(
        serde_json::to_string(&bodies[1]["input"]).unwrap(),
        serde_json::to_string(&fixture_requests()["3b"]["input"]).unwrap()
    );
}
