//! The `openpipe_reporting` filter against a mock OpenPipe (docs/reporting.md §15).

use std::time::Duration;

use serde_json::{json, Value};
use sluice::store::SqliteStore;
use sluice_openpipe_reporting::Tuning;

use crate::binary::Binary;
use crate::helpers::{json_of, spawn_app_with, Options, TestApp};
use crate::openpipe_mock::{Fault, MockOpenPipe};

pub const OP_KEY: &str = "opk-test-7f3a9c51e2d84b06";

/// Production behaviour, shorter waits: backoff in tens of milliseconds, a long auth probe.
pub fn fast() -> Tuning {
    Tuning {
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        pause_cap: Duration::from_millis(200),
        probe_interval: Duration::from_secs(60),
        retry_after_cap: Duration::from_secs(3600),
        shutdown_wait: Duration::from_secs(2),
    }
}

pub fn valves(mock: &MockOpenPipe, key: &str, extra: &str) -> String {
    format!("OPENPIPE_API_KEY = \"{key}\"\nOPENPIPE_BASE_URL = \"{}\"\n{extra}\n", mock.base_url())
}

async fn app_in(mock: &MockOpenPipe, key: &str, extra: &str, root: Option<std::path::PathBuf>) -> TestApp {
    let options = Options {
        openpipe: Some(fast()),
        valves_files: vec![("openpipe_reporting.toml", valves(mock, key, extra))],
        root,
        ..Options::default()
    };
    spawn_app_with(options).await.expect("app starts")
}

async fn app(mock: &MockOpenPipe, extra: &str) -> TestApp {
    app_in(mock, OP_KEY, extra, None).await
}

pub fn user() -> Value {
    json!({"id": "u-123", "email": "ada@example.com", "name": "Ada", "role": "user"})
}

async fn hook(app: &TestApp, which: &str, body: &Value) -> Value {
    let (status, echoed) = json_of(
        app.post_json(&format!("/openpipe_reporting/filter/{which}"), &json!({"user": user(), "body": body})).await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(&echoed, body, "the {which} must return the body unchanged");
    echoed
}

pub fn inlet_body(chat: &str, message: &str, messages: Value) -> Value {
    json!({
        "stream": true,
        "model": "gpt-4o-mini",
        "messages": messages,
        "metadata": {
            "user_id": "u-123", "chat_id": chat, "message_id": message, "session_id": "s-abc",
            "task": null, "features": {"web_search": false},
            "model": {"id": "gpt-4o-mini", "name": "GPT-4o mini", "owned_by": "openai"}
        }
    })
}

pub fn outlet_body(chat: &str, message: &str, history: Value, answer: &str) -> Value {
    let mut messages = history.as_array().cloned().unwrap_or_default();
    messages.push(json!({"id": message, "role": "assistant", "content": answer, "timestamp": 1754827200}));
    json!({"model": "gpt-4o-mini", "messages": messages, "chat_id": chat, "session_id": "s-abc", "id": message})
}

/// One plain turn through both hooks.
pub async fn turn(app: &TestApp, chat: &str, message: &str, question: &str, answer: &str) {
    hook(app, "inlet", &inlet_body(chat, message, json!([{"role": "user", "content": question}]))).await;
    let history = json!([{"id": format!("{message}-q"), "role": "user", "content": question, "timestamp": 1754827200}]);
    hook(app, "outlet", &outlet_body(chat, message, history, answer)).await;
}

pub fn completion_ids(reports: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = reports.iter().map(|r| r["respPayload"]["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

fn store_of(app: &TestApp) -> SqliteStore {
    SqliteStore::open(&app.data_dir.join(sluice::store::STORE_FILE)).unwrap()
}

#[tokio::test]
async fn a_plain_turn_is_reported_exactly_as_the_spec_example() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "CUSTOM_METADATA = '{\"environment\":\"production\"}'").await;
    let inlet = json!({
        "stream": true,
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is the capital of Tasmania?"}
        ],
        "metadata": {
            "user_id": "u-123", "chat_id": "c-456", "message_id": "m-789", "session_id": "s-abc",
            "task": null, "features": {"web_search": false},
            "model": {"id": "gpt-4o-mini", "name": "GPT-4o mini", "owned_by": "openai"}
        }
    });
    let outlet = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"id": "m-100", "role": "user", "content": "What is the capital of Tasmania?", "timestamp": 1754827200},
            {"id": "m-789", "role": "assistant", "content": "Hobart.", "timestamp": 1754827200,
             "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}}
        ],
        "chat_id": "c-456", "session_id": "s-abc", "id": "m-789"
    });
    hook(&app, "inlet", &inlet).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    hook(&app, "outlet", &outlet).await;
    let mut report = mock.wait_for_reports(1, 10).await.remove(0);

    // Times are this run's; check they agree with each other, then pin them to the example's.
    let requested = report["requestedAt"].as_u64().unwrap();
    let received = report["receivedAt"].as_u64().unwrap();
    let took: u64 = report["tags"]["inference_time_ms"].as_str().unwrap().parse().unwrap();
    assert!(received >= requested + 30 && took >= 30 && took.abs_diff(received - requested) <= 5, "{report}");
    assert_eq!(report["respPayload"]["created"], received / 1000);
    report["requestedAt"] = json!(1754827200000u64);
    report["receivedAt"] = json!(1754827201850u64);
    report["respPayload"]["created"] = json!(1754827201);
    report["tags"]["inference_time_ms"] = json!("1850");
    report["reqPayload"]["metadata"]["inference_time_ms"] = json!("1850");

    let expected = json!({
      "requestedAt": 1754827200000u64,
      "receivedAt": 1754827201850u64,
      "reqPayload": {
        "model": "gpt-4o-mini",
        "messages": [
          {"role": "system", "content": "You are terse."},
          {"role": "user", "content": "What is the capital of Tasmania?"}
        ],
        "stream": true,
        "metadata": {
          "source": "open-webui", "capture": "inlet_outlet", "interaction_type": "chat_message",
          "user_id": "u-123", "chat_id": "c-456", "message_id": "m-789", "model_id": "gpt-4o-mini",
          "inference_time_ms": "1850", "has_tool_calls": "false", "tool_call_count": "0", "environment": "production"
        }
      },
      "respPayload": {
        "id": "chatcmpl-m-789",
        "object": "chat.completion",
        "created": 1754827201,
        "model": "gpt-4o-mini",
        "choices": [
          {"index": 0, "message": {"role": "assistant", "content": "Hobart."}, "finish_reason": "stop", "logprobs": null}
        ],
        "usage": {"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}
      },
      "statusCode": 200,
      "tags": {
        "source": "open-webui", "capture": "inlet_outlet", "interaction_type": "chat_message",
        "user_id": "u-123", "chat_id": "c-456", "message_id": "m-789", "model_id": "gpt-4o-mini",
        "inference_time_ms": "1850", "has_tool_calls": "false", "tool_call_count": "0", "environment": "production"
      }
    });
    // Key order included: serde_json keeps insertion order here.
    assert_eq!(report.to_string(), expected.to_string());

    // The same outlet again (Open WebUI retried) is a duplicate, not a second report; an
    // edited answer is a revision with its own completion id.
    hook(&app, "outlet", &outlet).await;
    let mut edited = outlet.clone();
    edited["messages"][1]["content"] = json!("Hobart, on the Derwent.");
    hook(&app, "outlet", &edited).await;
    let reports = mock.wait_for_reports(2, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.reports().len(), 2);
    assert_eq!(completion_ids(&reports), ["chatcmpl-m-789", "chatcmpl-m-789-r1"]);
    assert_eq!(reports[1]["tags"]["revision"], "1");
}

/// Open WebUI's rendering of an executed tool call: `html.escape(json.dumps(...))` attributes.
fn tool_block(id: &str, name: &str, args: &str, result: &str) -> String {
    let esc = |s: &str| {
        serde_json::to_string(s)
            .unwrap()
            .replace('&', "&amp;")
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

#[tokio::test]
async fn a_tool_turn_is_reported_as_one_report_per_step() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "").await;
    let user_msg = json!({"role": "user", "content": "Weather in Hobart?"});
    hook(&app, "inlet", &inlet_body("c-456", "m-789", json!([user_msg]))).await;
    let content = format!(
        "Checking.\n{}It is 14 °C in Hobart.",
        tool_block("call_1", "get_weather", "{\"city\": \"Hobart\"}", "{\"temp_c\": 14}")
    );
    let history = json!([{"id": "m-100", "role": "user", "content": "Weather in Hobart?", "timestamp": 1}]);
    let mut outlet = outlet_body("c-456", "m-789", history, &content);
    outlet["messages"][1]["usage"] = json!({"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52});
    hook(&app, "outlet", &outlet).await;

    let mut reports = mock.wait_for_reports(2, 10).await;
    reports.sort_by_key(|r| r["respPayload"]["id"].as_str().unwrap().to_string());
    let call = json!({"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Hobart\"}"}});
    let first_answer = json!({"role": "assistant", "content": "Checking.", "tool_calls": [call]});

    let r0 = &reports[0];
    assert_eq!(r0["respPayload"]["id"], "chatcmpl-m-789-s0");
    assert_eq!(r0["reqPayload"]["messages"], json!([user_msg]));
    assert_eq!(r0["respPayload"]["choices"][0]["message"], first_answer);
    assert_eq!(r0["respPayload"]["choices"][0]["finish_reason"], "tool_calls");
    assert!(r0["respPayload"].get("usage").is_none(), "usage goes on the last step only");
    for (k, v) in [
        ("interaction_type", "function_calling"),
        ("tools_used", "get_weather"),
        ("has_tool_calls", "true"),
        ("tool_call_count", "1"),
        ("step_index", "0"),
        ("step_count", "2"),
    ] {
        assert_eq!(r0["tags"][k], v, "{k}");
        assert_eq!(r0["reqPayload"]["metadata"][k], v, "{k}");
    }

    let r1 = &reports[1];
    assert_eq!(r1["respPayload"]["id"], "chatcmpl-m-789-s1");
    assert_eq!(
        r1["reqPayload"]["messages"],
        json!([user_msg, first_answer, {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 14}"}])
    );
    assert_eq!(
        r1["respPayload"]["choices"][0]["message"],
        json!({"role": "assistant", "content": "It is 14 °C in Hobart."})
    );
    assert_eq!(r1["respPayload"]["choices"][0]["finish_reason"], "stop");
    assert_eq!(r1["respPayload"]["usage"]["total_tokens"], 52);
    assert_eq!(r1["tags"]["step_index"], "1");
}

#[tokio::test]
async fn turns_are_classified_and_reported_by_type() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "").await;

    // A background task's inlet is counted and dropped: Open WebUI never sends its outlet.
    let mut task = inlet_body("c-1", "t-1", json!([{"role": "user", "content": "### Task: title"}]));
    task["metadata"]["task"] = json!("title_generation");
    hook(&app, "inlet", &task).await;

    turn(&app, "c-1", "m-chat", "hi", "hello").await;
    let mut with_tools = inlet_body("c-1", "m-tools", json!([{"role": "user", "content": "look it up"}]));
    with_tools["tools"] = json!([{"type": "function", "function": {"name": "search", "parameters": {}}}]);
    hook(&app, "inlet", &with_tools).await;
    hook(&app, "outlet", &outlet_body("c-1", "m-tools", json!([]), "nothing found")).await;
    let answered = format!("{}done", tool_block("call_9", "calc", "{}", "4"));
    turn(&app, "c-1", "m-answered", "2+2?", &answered).await;
    // Outlet-only (no inlet seen): reported from the outlet alone.
    hook(&app, "outlet", &outlet_body("c-1", "m-orphan", json!([{"id": "q", "role": "user", "content": "?"}]), "!"))
        .await;

    let reports = mock.wait_for_reports(5, 10).await;
    let by_message = |id: &str| -> Vec<&Value> { reports.iter().filter(|r| r["tags"]["message_id"] == id).collect() };
    assert_eq!(by_message("m-chat")[0]["tags"]["interaction_type"], "chat_message");
    assert_eq!(by_message("m-tools")[0]["tags"]["interaction_type"], "function_calling");
    assert_eq!(by_message("m-tools")[0]["tags"]["tools_used"], "search");
    assert_eq!(by_message("m-answered").len(), 2);
    assert_eq!(by_message("m-answered")[0]["tags"]["interaction_type"], "function_calling");
    let orphan = by_message("m-orphan")[0];
    assert_eq!(orphan["tags"]["capture"], "outlet_only");
    assert!(orphan["tags"].get("inference_time_ms").is_none());
    assert_eq!(orphan["requestedAt"], 1754827200000u64, "the answer's timestamp stands in for the inlet time");
    assert!(by_message("t-1").is_empty());

    // Selective reporting: chat turns off, tool turns still reported.
    let update = json!({"REPORT_CHAT_MESSAGES": false});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    turn(&app, "c-2", "m-skipped", "hi", "hello").await;
    turn(&app, "c-2", "m-kept", "2+2?", &answered).await;
    // Classification off: everything is "unknown", which is always reported.
    let update = json!({"INCLUDE_INTERACTION_CLASSIFICATION": false});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    turn(&app, "c-3", "m-unknown", "hi", "hello").await;

    let reports = mock.wait_for_reports(8, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reports = if mock.reports().len() > reports.len() { mock.reports() } else { reports };
    assert_eq!(reports.len(), 8, "{:?}", completion_ids(&reports));
    assert!(!reports.iter().any(|r| r["tags"]["message_id"] == "m-skipped"));
    let unknown = reports.iter().find(|r| r["tags"]["message_id"] == "m-unknown").unwrap();
    assert_eq!(unknown["tags"]["interaction_type"], "unknown");
}

#[tokio::test]
async fn concurrent_chats_are_never_mispaired() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = std::sync::Arc::new(app(&mock, "").await);
    let n = 24;
    let inlets = (0..n).map(|i| {
        let app = std::sync::Arc::clone(&app);
        async move {
            let body = inlet_body(
                &format!("c-{i}"),
                &format!("m-{i}"),
                json!([{"role": "user", "content": format!("question {i}")}]),
            );
            hook(&app, "inlet", &body).await;
        }
    });
    futures_util::future::join_all(inlets).await;
    // Outlets arrive in the opposite order, all at once.
    let outlets = (0..n).rev().map(|i| {
        let app = std::sync::Arc::clone(&app);
        async move {
            let history = json!([{"id": format!("q-{i}"), "role": "user", "content": format!("question {i}")}]);
            hook(&app, "outlet", &outlet_body(&format!("c-{i}"), &format!("m-{i}"), history, &format!("answer {i}")))
                .await;
        }
    });
    futures_util::future::join_all(outlets).await;
    let reports = mock.wait_for_reports(n, 20).await;
    for r in &reports {
        let i = r["tags"]["chat_id"].as_str().unwrap().trim_start_matches("c-").to_string();
        assert_eq!(r["tags"]["message_id"], format!("m-{i}"));
        assert_eq!(r["tags"]["capture"], "inlet_outlet");
        assert_eq!(r["reqPayload"]["messages"][0]["content"], format!("question {i}"));
        assert_eq!(r["respPayload"]["choices"][0]["message"]["content"], format!("answer {i}"));
    }
    assert_eq!(completion_ids(&reports).len(), n);
}

#[tokio::test]
async fn an_outage_loses_nothing_and_counts_nothing_twice() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| {
        s.faults.extend([
            Fault::Status(503),
            Fault::Status(500),
            Fault::RetryAfter(1),
            Fault::StatusError,
            Fault::Delay(Duration::from_millis(1500)),
            Fault::Status(502),
        ])
    });
    let app = app(&mock, "TIMEOUT_SECONDS = 1").await;
    for i in 0..3 {
        turn(&app, &format!("c-{i}"), &format!("m-{i}"), "q", "a").await;
    }
    let reports = mock.wait_for_reports(3, 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.reports().len(), 3);
    assert_eq!(completion_ids(&reports), ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2"]);
    assert!(mock.attempts() >= 9, "every fault was met: {} attempts", mock.attempts());
    let stats = sluice_sdk::Outbox::stats(&store_of(&app), "openpipe_reporting").await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 0));
}

#[tokio::test]
async fn reports_queued_at_shutdown_are_delivered_once_after_a_restart() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.down = Some(503));
    let root = tempfile::tempdir().unwrap();
    let first = app_in(&mock, OP_KEY, "", Some(root.path().to_path_buf())).await;
    for i in 0..4 {
        turn(&first, &format!("c-{i}"), &format!("m-{i}"), "q", "a").await;
    }
    // A turn whose answer arrives only after the restart.
    hook(&first, "inlet", &inlet_body("c-9", "m-9", json!([{"role": "user", "content": "slow one"}]))).await;
    while mock.attempts() < 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;
    assert!(mock.reports().is_empty());

    mock.with(|s| s.down = None);
    let second = app_in(&mock, OP_KEY, "", Some(root.path().to_path_buf())).await;
    let history = json!([{"id": "q-9", "role": "user", "content": "slow one"}]);
    hook(&second, "outlet", &outlet_body("c-9", "m-9", history, "done")).await;
    mock.wait_for_reports(5, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reports = mock.reports();
    assert_eq!(
        completion_ids(&reports),
        ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3", "chatcmpl-m-9"],
        "each report exactly once"
    );
    let slow = reports.iter().find(|r| r["tags"]["message_id"] == "m-9").unwrap();
    // The capture outlived the restart; timing falls back to the wall clock.
    assert_eq!(slow["tags"]["capture"], "inlet_outlet");
    assert_eq!(slow["reqPayload"]["messages"][0]["content"], "slow one");
    assert!(slow["tags"]["inference_time_ms"].as_str().is_some());
    second.stop().await;
}

#[tokio::test]
async fn a_refused_key_pauses_deliveries_until_the_key_changes() {
    let mock = MockOpenPipe::start("opk-the-right-one").await;
    let app = app_in(&mock, "opk-a-wrong-one", "", None).await;
    turn(&app, "c-1", "m-1", "q", "a").await;
    while mock.attempts() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    turn(&app, "c-2", "m-2", "q", "a").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let paused_attempts = mock.attempts();
    assert!(paused_attempts <= 2, "paused: no attempt per entry ({paused_attempts})");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.attempts(), paused_attempts, "nothing is sent while paused");

    let update = json!({"OPENPIPE_API_KEY": "opk-the-right-one"});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    let reports = mock.wait_for_reports(2, 5).await;
    assert_eq!(completion_ids(&reports), ["chatcmpl-m-1", "chatcmpl-m-2"]);
    // The stored key is the new one and the valves answer shows it masked.
    let (_, shown) = json_of(app.get("/openpipe_reporting/valves").await).await;
    let shown = shown["OPENPIPE_API_KEY"].as_str().unwrap();
    assert!(shown.starts_with("********") && !shown.contains("the-right"), "{shown}");
}

#[tokio::test]
async fn refused_and_expired_reports_become_dead_letters() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.faults.push_back(Fault::Status(400)));
    let app = app(&mock, "").await;
    turn(&app, "c-1", "m-1", "q", "a").await;
    let store = store_of(&app);
    let dead = wait_for_dead(&store, 1).await;
    assert_eq!(dead[0].last_status, Some(400));
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 400: injected failure"));
    assert_eq!(dead[0].body["respPayload"]["id"], "chatcmpl-m-1", "the report itself is kept");

    // Down for longer than DELIVERY_MAX_AGE_HOURS: aged here by moving the entry's birth back.
    mock.with(|s| s.down = Some(503));
    turn(&app, "c-2", "m-2", "q", "a").await;
    while mock.attempts() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let conn = rusqlite::Connection::open(app.data_dir.join(sluice::store::STORE_FILE)).unwrap();
    conn.execute("UPDATE outbox SET created_at_ms = created_at_ms - 73 * 3600 * 1000 WHERE dead_at_ms IS NULL", [])
        .unwrap();
    let dead = wait_for_dead(&store, 2).await;
    let expired = dead.iter().find(|e| e.body["respPayload"]["id"] == "chatcmpl-m-2").unwrap();
    assert!(expired.last_error.as_deref().unwrap().starts_with("undelivered after 72 h; last error: HTTP 503"));
    let stats = sluice_sdk::Outbox::stats(&store, "openpipe_reporting").await.unwrap();
    assert_eq!((stats.depth, stats.dead), (0, 2));
    assert!(mock.reports().is_empty());

    // What an operator sees, and putting the dead letters back in line once OpenPipe is fine.
    let cli = |args: &[&str]| {
        let (code, out, err) = crate::cli::sluice(app.data_dir.parent().unwrap(), args);
        assert_eq!(code, 0, "{err}");
        out
    };
    let table = cli(&["outbox"]);
    assert!(table.lines().any(|l| l.split_whitespace().take(3).eq(["openpipe_reporting", "0", "2"])), "{table}");
    let dead = cli(&["outbox", "--dead", "openpipe_reporting"]);
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(dead.contains("\"last_status\":400") && !dead.contains("reqPayload"), "ids and errors, no content: {dead}");
    mock.with(|s| s.down = None);
    assert!(cli(&["outbox", "--requeue", "openpipe_reporting"]).starts_with("2 dead letter(s)"));
    // The worker picks them up at its next look at the queue (a new turn wakes it).
    turn(&app, "c-3", "m-3", "q", "a").await;
    let reports = mock.wait_for_reports(3, 10).await;
    assert_eq!(completion_ids(&reports), ["chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3"]);
}

async fn wait_for_dead(store: &SqliteStore, n: usize) -> Vec<sluice_sdk::outbox::Entry> {
    for _ in 0..400 {
        let dead = sluice_sdk::Outbox::dead_letters(store, "openpipe_reporting", 10).await.unwrap();
        if dead.len() >= n {
            return dead;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} dead letters after 10 s");
}

/// One question (`m-100`) answered, then the answer regenerated: the two `(id, text)` turns
/// through the filter. The system message, the question as sent and as stored.
async fn answer_twice(app: &TestApp, chat: &str, answers: [(&str, &str); 2]) -> (Value, Value, Value) {
    let system = json!({"role": "system", "content": "You are terse."});
    let question = json!({"role": "user", "content": "What is the capital of Tasmania?"});
    let asked = json!({"id": "m-100", "role": "user", "content": "What is the capital of Tasmania?", "timestamp": 1});
    for (id, answer) in answers {
        hook(app, "inlet", &inlet_body(chat, id, json!([system, question]))).await;
        hook(app, "outlet", &outlet_body(chat, id, json!([asked]), answer)).await;
    }
    (system, question, asked)
}

#[tokio::test]
async fn a_confirmed_regeneration_becomes_a_dpo_entry() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "AUTO_SUBMIT_DPO_PAIRS = true").await;
    // First answer, then a regeneration of it (same parent message).
    let (system, question, asked) =
        answer_twice(&app, "c-456", [("m-789", "The capital of Tasmania is Launceston."), ("m-790", "Hobart.")]).await;
    let reports = mock.wait_for_reports(2, 10).await;
    let regen = reports.iter().find(|r| r["tags"]["message_id"] == "m-790").unwrap();
    assert_eq!(regen["tags"]["regenerated_from"], "m-789");
    assert_eq!(regen["tags"]["regeneration_index"], "1");
    assert!(mock.with(|s| s.entries.is_empty()), "a regeneration alone chooses nothing");

    // The user continues from the second answer: it was preferred.
    let history = json!([
        asked,
        {"id": "m-790", "role": "assistant", "content": "Hobart.", "timestamp": 2},
        {"id": "m-791", "role": "user", "content": "And of Victoria?", "timestamp": 3}
    ]);
    hook(&app, "inlet", &inlet_body("c-456", "m-792", json!([system, question]))).await;
    hook(&app, "outlet", &outlet_body("c-456", "m-792", history, "Melbourne.")).await;

    for _ in 0..400 {
        if !mock.with(|s| s.entries.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (datasets, entries) = mock.with(|s| (s.datasets.clone(), s.entries.clone()));
    assert_eq!(datasets.len(), 1);
    assert_eq!(datasets[0]["name"], "OpenWebUI DPO Training");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, datasets[0]["id"].as_str().unwrap());
    let expected = json!({
      "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of Tasmania?"},
        {"role": "assistant", "content": "Hobart."}
      ],
      "rejected_message": {"role": "assistant", "content": "The capital of Tasmania is Launceston."},
      "split": "TRAIN",
      "metadata": {
        "source": "open-webui", "kind": "dpo_regeneration", "chat_id": "c-456", "parent_message_id": "m-100",
        "chosen_message_id": "m-790", "rejected_message_id": "m-789", "chosen_model": "gpt-4o-mini",
        "rejected_model": "gpt-4o-mini", "user_id": "u-123"
      }
    });
    assert_eq!(entries[0].1.to_string(), expected.to_string());
}

#[tokio::test]
async fn without_a_key_or_when_disabled_the_filter_passes_through() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "ENABLED = false").await;
    turn(&app, "c-1", "m-1", "q", "a").await;
    assert_eq!(
        app.post_json("/openpipe_reporting/valves/update", &json!({"ENABLED": true, "OPENPIPE_API_KEY": ""}))
            .await
            .status(),
        200
    );
    turn(&app, "c-2", "m-2", "q", "a").await;
    // Odd bodies are returned unchanged too.
    assert_eq!(
        app.post_json("/openpipe_reporting/valves/update", &json!({"OPENPIPE_API_KEY": OP_KEY})).await.status(),
        200
    );
    for odd in [
        json!({"messages": "not a list"}),
        json!({"messages": [{"role": "user"}]}),
        json!({}),
        json!({"messages": [7, null]}),
    ] {
        hook(&app, "inlet", &odd).await;
        hook(&app, "outlet", &odd).await;
    }
    turn(&app, "c-3", "m-3", "q", "a").await;
    let reports = mock.wait_for_reports(1, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(completion_ids(&mock.reports()), ["chatcmpl-m-3"], "{reports:?}");
}

#[tokio::test]
async fn invalid_valves_are_refused_before_anything_is_written() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "").await;
    let before = app.valves_file("openpipe_reporting");
    for bad in [
        json!({"CUSTOM_METADATA": "[1, 2]"}),
        json!({"CUSTOM_METADATA": "{\"chat_id\": \"mine\"}"}),
        json!({"CUSTOM_METADATA": "{not json"}),
        json!({"TIMEOUT_SECONDS": 0}),
        json!({"OPENPIPE_BASE_URL": "https://api.openpipe.ai/api/v1?x=1"}),
        json!({"DPO_SPLIT": "SOMETIMES"}),
        json!({"MAX_REPORT_BYTES": "lots"}),
    ] {
        let (status, body) = json_of(app.post_json("/openpipe_reporting/valves/update", &bad).await).await;
        assert_eq!(status, 422, "{bad} → {body}");
        assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    }
    assert_eq!(app.valves_file("openpipe_reporting"), before);
}

fn with_openpipe<'a>(mock: &MockOpenPipe, env: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut all: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
    all.push(("OPENPIPE_BASE_URL", mock.base_url()));
    all
}

/// One plain turn through the binary's hooks.
pub async fn binary_turn(server: &Binary, chat: &str, message: &str, question: &str, answer: &str) {
    let inlet =
        json!({"user": user(), "body": inlet_body(chat, message, json!([{"role": "user", "content": question}]))});
    assert_eq!(server.post("/openpipe_reporting/filter/inlet", inlet).await.status(), 200);
    let history = json!([{"id": format!("{message}-q"), "role": "user", "content": question}]);
    let outlet = json!({"user": user(), "body": outlet_body(chat, message, history, answer)});
    assert_eq!(server.post("/openpipe_reporting/filter/outlet", outlet).await.status(), 200);
}

#[tokio::test]
async fn reports_accepted_before_a_kill_9_are_delivered_once_after_it() {
    const SECRET: &str = "opk-kill-test-0a1b2c3d4e5f";
    let mock = MockOpenPipe::start(SECRET).await;
    mock.with(|s| s.down = Some(503));
    let dir = tempfile::tempdir().unwrap();
    let env = [("OPENPIPE_API_KEY", SECRET)];
    let first = Binary::start(dir.path(), &with_openpipe(&mock, &env)).await;
    for i in 0..5 {
        binary_turn(&first, &format!("c-{i}"), &format!("m-{i}"), "q", "a").await;
    }
    // Killed the moment the last outlet answered, mid-retry.
    first.kill();
    assert!(mock.reports().is_empty());

    mock.with(|s| s.down = None);
    let second = Binary::start(dir.path(), &with_openpipe(&mock, &env)).await;
    mock.wait_for_reports(5, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = second.kill();
    assert_eq!(
        completion_ids(&mock.reports()),
        ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3", "chatcmpl-m-4"],
        "each report exactly once\n{log}"
    );
}

/// Runs the real binary with debug logs and reads everything it printed.
#[tokio::test]
async fn logs_never_show_a_key_or_the_conversation() {
    const SECRET: &str = "opk-live-5d41402abc4b2a76b9719d911017c592";
    const ROTATED: &str = "opk-rotated-7215ee9c7d9dc229d2921a40e899ec5f";
    const OPENAI: &str = "sk-openai-secret-0cc175b9c0f1b6a831c399e269772661";
    let mock = MockOpenPipe::start(SECRET).await;
    mock.with(|s| s.faults.extend([Fault::Status(500), Fault::Status(400)]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    // In the file, not the environment: a key from the environment cannot be changed over REST.
    let file = format!("OPENPIPE_API_KEY = \"{SECRET}\"\n");
    std::fs::write(dir.path().join("valves/openpipe_reporting.toml"), file).unwrap();
    let env = [
        ("SLUICE_LOG_LEVEL", "debug"),
        ("OPENAI_API_KEY", OPENAI),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__DEBUG_LOGGING", "true"),
    ];
    let server = Binary::start(dir.path(), &with_openpipe(&mock, &env)).await;
    for i in 0..3 {
        binary_turn(
            &server,
            &format!("c-{i}"),
            &format!("m-{i}"),
            "Tasmania private question",
            "Tasmania private answer",
        )
        .await;
    }
    mock.wait_for_reports(2, 10).await;
    // A rotated key that OpenPipe refuses: the pause is logged, the key is not.
    let update = server.post("/openpipe_reporting/valves/update", json!({"OPENPIPE_API_KEY": ROTATED})).await;
    assert_eq!(update.status(), 200);
    let attempts = mock.attempts();
    binary_turn(&server, "c-9", "m-9", "Tasmania", "Tasmania private answer").await;
    for _ in 0..200 {
        if mock.attempts() > attempts {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = server.kill();

    assert!(text.contains("openpipe: refused; dead-lettered"), "the 400 is logged:\n{text}");
    assert!(text.contains("deliveries paused"), "the 401 pause is logged:\n{text}");
    assert!(text.contains("openpipe: report queued"), "debug logging is on:\n{text}");
    for secret in [SECRET, ROTATED, OPENAI, &SECRET[..20], &ROTATED[..20], "Tasmania"] {
        assert!(!text.contains(secret), "{secret:?} appears in the log:\n{text}");
    }
}

#[tokio::test]
async fn a_report_refused_as_too_large_is_shrunk_once() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.faults.extend([Fault::Status(413)]));
    let app = app(&mock, "").await;
    let image = format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(2000));
    let question = json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image}}
    ]}]);
    hook(&app, "inlet", &inlet_body("c-1", "m-1", question)).await;
    hook(&app, "outlet", &outlet_body("c-1", "m-1", json!([]), "A logo.")).await;
    let report = mock.wait_for_reports(1, 10).await.remove(0);
    assert_eq!(report["reqPayload"]["messages"][0]["content"][1]["image_url"]["url"], "data:image/png;omitted");
    assert_eq!(report["tags"]["images_omitted"], "1");
    assert_eq!(report["reqPayload"]["metadata"]["images_omitted"], "1");

    // Too large even without images: given up on, kept as a dead letter.
    mock.with(|s| s.faults.extend([Fault::Status(413), Fault::Status(413)]));
    turn(&app, "c-2", "m-2", "plain", "text").await;
    let dead = wait_for_dead(&store_of(&app), 1).await;
    assert_eq!((dead[0].last_status, dead[0].last_error.as_deref()), (Some(413), Some("too_large")));
}

#[tokio::test]
async fn metrics_show_requests_streams_errors_and_the_queue() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.down = Some(503));
    let app = app(&mock, "").await;
    let chat =
        |said: &str| json!({"model": "scripted_pipe", "stream": true, "messages": [{"role": "user", "content": said}]});
    assert_eq!(app.get("/models").await.status(), 200);
    let streamed = app.post_json("/chat/completions", &chat("hello")).await.text().await.unwrap();
    assert!(streamed.ends_with("data: [DONE]\n\n"));
    assert_eq!(app.post_json("/chat/completions", &chat("error-before")).await.status(), 429);
    let _ = app.post_json("/chat/completions", &chat("error-mid")).await.text().await;
    turn(&app, "c-1", "m-1", "q", "a").await;
    while mock.attempts() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let anonymous = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(anonymous.status(), 403, "metrics need the key like every route but GET /");
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    for line in [
        "sluice_http_requests_total{route=\"/models\",status=\"200\"} 1",
        "sluice_http_requests_total{route=\"/chat/completions\",status=\"429\"} 1",
        "sluice_http_request_duration_seconds_count{route=\"/chat/completions\"} 3",
        "sluice_open_streams 0",
        "sluice_pipe_errors_total{pipeline=\"scripted_pipe\",stage=\"before_stream\",kind=\"rate_limit_error\"} 1",
        "sluice_pipe_errors_total{pipeline=\"scripted_pipe\",stage=\"in_stream\",kind=\"upstream_error\"} 1",
        "sluice_outbox_queued{queue=\"openpipe_reporting\"} 1",
        "sluice_outbox_dead_letters{queue=\"openpipe_reporting\"} 0",
        "sluice_pipeline_events_total{pipeline=\"openpipe_reporting\",event=\"queued\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("sluice_pipeline_events_total{pipeline=\"openpipe_reporting\",event=\"attempts\"}")));
    assert!(text.lines().any(|l| l.starts_with("sluice_outbox_oldest_age_seconds{queue=\"openpipe_reporting\"}")));
}

#[tokio::test]
async fn a_background_task_is_reported_with_the_answer_this_server_gave() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "").await;
    // Open WebUI: the task's inlet (metadata.task set), then the model call without metadata,
    // stream false, and never an outlet.
    let messages = json!([{"role": "user", "content": "hello"}]);
    let mut inlet = inlet_body("c-7", "m-7", messages.clone());
    inlet["model"] = json!("scripted_pipe");
    inlet["stream"] = json!(false);
    inlet["metadata"]["task"] = json!("title_generation");
    hook(&app, "inlet", &inlet).await;
    let chat = json!({"model": "scripted_pipe", "messages": messages, "stream": false, "max_tokens": 1000,
                      "user": {"name": "Ada", "id": "u-123", "email": "ada@example.com", "role": "user"}});
    let (status, answer) = json_of(app.post_json("/chat/completions", &chat).await).await;
    assert_eq!(status, 200);
    assert_eq!(answer["choices"][0]["message"]["content"], "Hello world");
    // The same text from another user is not this task.
    let mut other = chat.clone();
    other["user"]["id"] = json!("u-999");
    assert_eq!(app.post_json("/chat/completions", &other).await.status(), 200);

    let report = mock.wait_for_reports(1, 10).await.remove(0);
    assert_eq!(report["tags"]["interaction_type"], "title_generation");
    assert_eq!(report["tags"]["capture"], "inlet_completion");
    assert_eq!(report["tags"]["chat_id"], "c-7");
    assert_eq!(report["tags"]["message_id"], "m-7");
    assert_eq!(report["respPayload"]["id"], "chatcmpl-m-7-title_generation");
    assert_eq!(report["respPayload"]["choices"][0]["message"]["content"], "Hello world");
    assert_eq!(report["respPayload"]["usage"]["total_tokens"], 11);
    assert_eq!(report["reqPayload"]["messages"], messages);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.reports().len(), 1);

    // REPORT_SYSTEM_TASKS off: captured, answered, not reported.
    let update = json!({"REPORT_SYSTEM_TASKS": false});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    hook(&app, "inlet", &inlet).await;
    assert_eq!(app.post_json("/chat/completions", &chat).await.status(), 200);
    turn(&app, "c-8", "m-8", "q", "a").await;
    mock.wait_for_reports(2, 10).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(completion_ids(&mock.reports()), ["chatcmpl-m-7-title_generation", "chatcmpl-m-8"]);
}

/// A second process that cannot listen (the port is taken) stops before its delivery worker
/// starts: it must not take reports from the queue it is about to abandon.
#[tokio::test]
async fn a_process_that_cannot_listen_delivers_nothing() {
    const SECRET: &str = "opk-kill-test-0a1b2c3d4e5f";
    let mock = MockOpenPipe::start(SECRET).await;
    mock.with(|s| s.down = Some(503));
    let dir = tempfile::tempdir().unwrap();
    let env = [("OPENPIPE_API_KEY", SECRET)];
    let first = Binary::start(dir.path(), &with_openpipe(&mock, &env)).await;
    binary_turn(&first, "c-1", "m-1", "q", "a").await;
    while mock.attempts() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let port = first.base.rsplit(':').next().unwrap().to_string();
    first.kill();
    mock.with(|s| s.down = None);
    let before = mock.attempts();
    let _taken = std::net::TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_HOST", "127.0.0.1")
        .env("SLUICE_PORT", &port)
        .env("SLUICE_DATA_DIR", dir.path().join("data"))
        .env("SLUICE_VALVES_DIR", dir.path().join("valves"))
        .env("SLUICE_API_KEY", crate::helpers::KEY)
        .env("OPENPIPE_API_KEY", SECRET)
        .env("OPENPIPE_BASE_URL", mock.base_url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && text.contains("cannot listen"), "{text}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.attempts(), before, "the process that could not listen sent reports:\n{text}");
}

/// Open WebUI 0.10 saves a web-UI reply as `output` items and sends the outlet with an empty
/// `content`: the report still carries the answer's text, with block parsing on and off.
#[tokio::test]
async fn an_answer_kept_only_in_output_items_is_reported_with_its_text() {
    for (parse, chat) in [("true", "chat-010a"), ("false", "chat-010b")] {
        let mock = MockOpenPipe::start(OP_KEY).await;
        let app = app(&mock, &format!("PARSE_OPENWEBUI_BLOCKS = {parse}")).await;
        hook(&app, "inlet", &inlet_body(chat, "m-1", json!([{"role": "user", "content": "hi"}]))).await;
        let history = json!([{"id": "q-1", "role": "user", "content": "hi"}]);
        let mut outlet = outlet_body(chat, "m-1", history, "");
        outlet["messages"][1]["output"] = json!([
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Bonjour, Ada !", "annotations": []}]}]);
        hook(&app, "outlet", &outlet).await;
        let reports = mock.wait_for_reports(1, 10).await;
        let message = &reports[0]["respPayload"]["choices"][0]["message"];
        assert_eq!(message["content"], json!("Bonjour, Ada !"), "PARSE_OPENWEBUI_BLOCKS = {parse}: {message}");
    }
}

/// Open WebUI before 0.10 sends no outlet for an API caller's chat, and its inlet carries no
/// chat or message id. With REPORT_API_CHATS_FROM_ANSWERS such a chat is reported once from
/// the answer this server gave, streamed or not; without it (0.10 and later, which send the
/// outlet) nothing is captured for it.
#[tokio::test]
async fn api_chats_without_an_outlet_are_reported_from_the_answer_when_asked() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "REPORT_API_CHATS_FROM_ANSWERS = true").await;
    for (n, stream) in [(1, false), (2, true)] {
        let messages = json!([{"role": "user", "content": format!("api question {n}")}]);
        let mut inlet = inlet_body("", "", messages.clone());
        inlet["model"] = json!("scripted_pipe");
        inlet["stream"] = json!(stream);
        inlet["metadata"]["chat_id"] = Value::Null;
        inlet["metadata"]["message_id"] = Value::Null;
        inlet["metadata"]["session_id"] = Value::Null;
        hook(&app, "inlet", &inlet).await;
        let chat = json!({"model": "scripted_pipe", "messages": messages, "stream": stream,
                          "user": {"name": "Ada", "id": "u-123", "email": "ada@example.com", "role": "user"}});
        let res = app.post_json("/chat/completions", &chat).await;
        assert_eq!(res.status().as_u16(), 200);
        let _ = res.text().await.unwrap();
        let reports = mock.wait_for_reports(n, 10).await;
        let report = &reports[n - 1];
        assert_eq!(report["tags"]["capture"], "inlet_completion", "stream {stream}");
        assert_eq!(report["tags"]["interaction_type"], "chat_message");
        let said = format!("echo: api question {n}");
        assert_eq!(report["respPayload"]["choices"][0]["message"]["content"], json!(said), "stream {stream}");
        assert_eq!(report["reqPayload"]["messages"], messages);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.reports().len(), 2, "each once");

    // Off (the default): the same chat is neither captured nor reported from its answer.
    let update = json!({"REPORT_API_CHATS_FROM_ANSWERS": false});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    let messages = json!([{"role": "user", "content": "api question 3"}]);
    let mut inlet = inlet_body("", "", messages.clone());
    inlet["model"] = json!("scripted_pipe");
    inlet["metadata"]["chat_id"] = Value::Null;
    inlet["metadata"]["message_id"] = Value::Null;
    hook(&app, "inlet", &inlet).await;
    let chat = json!({"model": "scripted_pipe", "messages": messages, "stream": false,
                      "user": {"name": "Ada", "id": "u-123", "email": "ada@example.com", "role": "user"}});
    assert_eq!(app.post_json("/chat/completions", &chat).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.reports().len(), 2);
}

/// The switches of what a report carries: tool metrics, timing, and tool turns at all.
#[tokio::test]
async fn metric_and_tool_switches_change_what_is_reported() {
    let answered = format!("{}done", tool_block("call_5", "calc", "{}", "4"));
    // Defaults: tool metrics and timing present.
    let mock = MockOpenPipe::start(OP_KEY).await;
    let first = app(&mock, "").await;
    turn(&first, "c-s", "m-s", "2+2?", &answered).await;
    let reports = mock.wait_for_reports(2, 10).await;
    assert!(reports.iter().all(|r| r["tags"]["tools_used"] == "calc" && r["tags"]["has_tool_calls"] == "true"));
    assert!(reports.iter().all(|r| r["tags"].get("inference_time_ms").is_some()));

    let mock = MockOpenPipe::start(OP_KEY).await;
    let second = app(&mock, "INCLUDE_TOOL_METRICS = false\nINCLUDE_TIMING_METRICS = false").await;
    turn(&second, "c-s", "m-s", "2+2?", &answered).await;
    let reports = mock.wait_for_reports(2, 10).await;
    for r in &reports {
        for absent in ["tools_used", "has_tool_calls", "tool_call_count", "inference_time_ms"] {
            assert!(r["tags"].get(absent).is_none(), "{absent}: {}", r["tags"]);
            assert!(r["reqPayload"]["metadata"].get(absent).is_none(), "{absent}");
        }
    }
    assert_eq!(reports[0]["tags"]["interaction_type"], "function_calling", "classification is not a metric");

    let mock = MockOpenPipe::start(OP_KEY).await;
    let third = app(&mock, "REPORT_TOOL_INTERACTIONS = false").await;
    turn(&third, "c-t", "m-tool", "2+2?", &answered).await;
    turn(&third, "c-t", "m-chat", "hi", "hello").await;
    let reports = mock.wait_for_reports(1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(completion_ids(&mock.reports()), ["chatcmpl-m-chat"], "{reports:?}");
}

/// The reference's "add this chat to a dataset" action, asked for: the chat's reported turns,
/// kept with DATASET_TURNS_KEEP_DAYS, become entries through the outbox; the same turns are not
/// added twice; each mistake is a clear error.
#[tokio::test]
async fn a_chat_is_added_to_a_dataset_on_request_once() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app =
        app(&mock, "DATASET_TURNS_KEEP_DAYS = 30\nDEFAULT_DATASET_NAME = \"Chats\"\nENABLE_DPO_DETECTION = false")
            .await;
    turn(&app, "c-d", "m-1", "What is 2+2?", "<think>easy</think>4.").await;
    turn(&app, "c-d", "m-2", "And 3+3?", "6.").await;
    mock.wait_for_reports(2, 10).await;
    let add = |body: Value| {
        let app = &app;
        async move { json_of(app.post_json("/openpipe_reporting/actions/dataset_add", &body).await).await }
    };
    let (status, answer) = add(json!({"chat_id": "c-d"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["queued"].clone(), answer["already_added"].clone()), (json!(2), json!(0)));
    for _ in 0..400 {
        if mock.with(|s| s.entries.len()) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (datasets, entries) = mock.with(|s| (s.datasets.clone(), s.entries.clone()));
    assert_eq!(datasets.len(), 1);
    assert_eq!(datasets[0]["name"], "Chats");
    assert_eq!(entries.len(), 2);
    let first = &entries.iter().find(|(_, e)| e["metadata"]["message_id"] == "m-1").unwrap().1;
    assert_eq!(first["messages"].as_array().unwrap().last().unwrap(), &json!({"role": "assistant", "content": "4."}));
    assert_eq!(first["split"], "TRAIN");
    assert_eq!(first["metadata"]["kind"], "conversation");
    assert_eq!(first["metadata"]["chat_id"], "c-d");

    // Again: nothing new. One turn into another dataset, TEST split: added there.
    let (_, answer) = add(json!({"chat_id": "c-d"})).await;
    assert_eq!((answer["queued"].clone(), answer["already_added"].clone()), (json!(0), json!(2)));
    let (status, answer) =
        add(json!({"chat_id": "c-d", "message_id": "m-2", "dataset": "Eval", "split": "TEST"})).await;
    assert_eq!((status, answer["queued"].clone()), (200, json!(1)), "{answer}");

    // Mistakes, each said.
    for (body, want, says) in [
        (json!({"chat_id": "nope"}), 404, "no reported turn of chat \"nope\" is kept"),
        (json!({"message_id": "m-1"}), 400, "missing field `chat_id`"),
        (json!({"chat_id": "c-d", "split": "AUTO"}), 400, "unknown variant"),
        (json!({"chat_id": "c-d", "whatever": 1}), 400, "unknown field"),
    ] {
        let (status, answer) = add(body.clone()).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (status, answer) = json_of(app.post_json("/openpipe_reporting/actions/frobnicate", &json!({})).await).await;
    assert_eq!(status, 404);
    assert!(answer["detail"].as_str().unwrap().contains("it has dataset_add"), "{answer}");
    let update = json!({"DEFAULT_DATASET_NAME": null});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    let (status, answer) = add(json!({"chat_id": "c-d"})).await;
    assert_eq!(status, 400);
    assert!(answer["detail"].as_str().unwrap().contains("set DEFAULT_DATASET_NAME"), "{answer}");
    let update = json!({"DATASET_TURNS_KEEP_DAYS": 0});
    assert_eq!(app.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    let (status, answer) = add(json!({"chat_id": "c-d", "dataset": "Chats"})).await;
    assert_eq!(status, 503);
    assert!(answer["detail"].as_str().unwrap().contains("DATASET_TURNS_KEEP_DAYS"), "{answer}");
}

/// The same action from the command line, against the running binary.
#[tokio::test]
async fn the_command_line_adds_a_chat_to_a_dataset() {
    const SECRET: &str = "opk-cli-dataset-0a1b2c3d";
    let mock = MockOpenPipe::start(SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("OPENPIPE_API_KEY", SECRET),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__DATASET_TURNS_KEEP_DAYS", "7"),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__DEFAULT_DATASET_NAME", "From the CLI"),
    ];
    let server = Binary::start(dir.path(), &with_openpipe(&mock, &env)).await;
    binary_turn(&server, "c-cli", "m-cli", "q", "a").await;
    mock.wait_for_reports(1, 20).await;
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env_clear()
            .env("SLUICE_PORT", &port)
            .env("SLUICE_API_KEY", crate::helpers::KEY)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["openpipe", "dataset-add", "--chat", "c-cli"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 entry queued for dataset \"From the CLI\"; 0 already added"), "{out}");
    let (code, _, err) = run(&["openpipe", "dataset-add", "--chat", "c-none"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("404") && err.contains("no reported turn"), "{err}");
    let (code, _, err) = run(&["openpipe", "dataset-add"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--chat is required"), "{err}");
    for _ in 0..400 {
        if !mock.with(|s| s.entries.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(mock.with(|s| s.entries.len()), 1);
    server.kill();
}

/// DPO_WINDOW_HOURS: the regeneration records live that long (checked in the store), and a
/// regeneration whose window ran out is never confirmed or submitted (the store's rows are
/// aged by hand, as the hours would).
#[tokio::test]
async fn a_regeneration_outside_the_dpo_window_is_not_submitted() {
    let mock = MockOpenPipe::start(OP_KEY).await;
    let app = app(&mock, "AUTO_SUBMIT_DPO_PAIRS = true\nDPO_WINDOW_HOURS = 2").await;
    let (system, question, asked) = answer_twice(&app, "c-w", [("m-789", "Launceston."), ("m-790", "Hobart.")]).await;
    mock.wait_for_reports(2, 10).await;
    let db = rusqlite::Connection::open(app.data_dir.join(sluice::store::STORE_FILE)).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let lives: Vec<i64> = db
        .prepare("SELECT expires_at FROM kv WHERE namespace IN ('openpipe_reporting.siblings', 'openpipe_reporting.pending')")
        .unwrap()
        .query_map([], |r| r.get::<_, i64>(0))
        .unwrap()
        .map(|r| r.unwrap() - now)
        .collect();
    assert!(!lives.is_empty() && lives.iter().all(|s| (7200 - 60..=7200).contains(s)), "two hours: {lives:?}");

    // Two hours and a second later, the user continues from the second answer.
    db.execute("UPDATE kv SET expires_at = ?1 WHERE namespace LIKE 'openpipe_reporting.%'", [now - 1]).unwrap();
    let history = json!([asked, {"id": "m-790", "role": "assistant", "content": "Hobart.", "timestamp": 2},
                         {"id": "m-791", "role": "user", "content": "And of Victoria?", "timestamp": 3}]);
    hook(&app, "inlet", &inlet_body("c-w", "m-792", json!([system, question]))).await;
    hook(&app, "outlet", &outlet_body("c-w", "m-792", history, "Melbourne.")).await;
    mock.wait_for_reports(3, 10).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(mock.with(|s| s.entries.is_empty()), "a pair outside the window is not submitted");
}
