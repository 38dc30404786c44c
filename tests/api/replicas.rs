//! Several replicas on one PostgreSQL database (issue 7): each test starts two apps on the
//! same database, as two sluice processes behind a load balancer would run. Needs
//! `TEST_PG_URL` (CI starts a server; see store_contract.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Options, TestApp};
use crate::manifold::{
    chat, expected_chunks, fixture_requests, payloads, system_and, tool_round_mock, upstream_bodies, weather_round,
    weather_tool, OPENAI_KEY,
};
use crate::openpipe::{binary_turn, completion_ids, fast, inlet_body, outlet_body, turn, user, valves, OP_KEY};
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
        numbered_turn(app, i).await;
        expected.push(format!("chatcmpl-m-{i}"));
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
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3a_function_call.expected-chunks.jsonl"));
    let mut messages = system_and("Weather in Paris and London?");
    messages.as_array_mut().unwrap().extend(weather_round());
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

/// A replica killed with `kill -9` while its worker holds reports (attempts in flight): the
/// other replica delivers them once the lease has run out, each exactly once.
#[tokio::test]
async fn reports_held_by_a_killed_replica_are_delivered_by_the_other() {
    use crate::binary::Binary;
    use crate::openpipe_mock::Fault;
    let Some(url) = pg_database().await else { return };
    const SECRET: &str = "opk-kill-test-0a1b2c3d4e5f";
    let mock = MockOpenPipe::start(SECRET).await;
    // The first three attempts hang (answers after 30 s): the worker holds those reports.
    mock.with(|s| s.faults.extend((0..3).map(|_| Fault::Delay(Duration::from_secs(30)))));
    let env = [
        ("OPENPIPE_API_KEY", SECRET.to_string()),
        ("OPENPIPE_BASE_URL", mock.base_url()),
        ("SLUICE_STORE_URL", url.clone()),
        ("SLUICE_STORE_LEASE_SECS", "3".to_string()),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Binary::start(dir_a.path(), &env).await;
    for i in 0..3 {
        binary_turn(&a, "c", &format!("m-{i}"), "q", "a").await;
    }
    // Wait until all three attempts are in flight, then kill.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while mock.attempts() < 3 {
        assert!(std::time::Instant::now() < deadline, "the worker never took the reports");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    let killed = std::time::Instant::now();
    let b = Binary::start(dir_b.path(), &env).await;
    mock.wait_for_reports(3, 20).await;
    let took = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(completion_ids(&mock.reports()), ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2"], "{}", b.kill());
    assert!(took >= Duration::from_secs(2), "taken over before the lease ran out ({took:?})");
}

/// An update accepted by one replica is in effect on the other within a second, file included;
/// a replica started later takes the shared valves, not its own stale file.
#[tokio::test]
async fn a_valves_update_on_one_replica_is_live_on_the_other_within_a_second() {
    let Some(url) = pg_database().await else { return };
    let mock = MockOpenPipe::start(OP_KEY).await;
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, "# the operator's note\nTIMEOUT_SECONDS = 10"))];
    let (a, b) = (replica(&url, files.clone(), true, false).await, replica(&url, files.clone(), true, false).await);
    let update = json!({"TIMEOUT_SECONDS": 42, "CUSTOM_METADATA": "{\"team\": \"core\"}"});
    assert_eq!(a.post_json("/openpipe_reporting/valves/update", &update).await.status(), 200);
    let started = std::time::Instant::now();
    loop {
        let (_, live) = crate::helpers::json_of(b.get("/openpipe_reporting/valves").await).await;
        if live["TIMEOUT_SECONDS"] == json!(42) {
            assert_eq!(live["CUSTOM_METADATA"], json!("{\"team\": \"core\"}"));
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "not live on the other replica after a second: {live}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_, on_a) = crate::helpers::json_of(a.get("/openpipe_reporting/valves").await).await;
    let (_, on_b) = crate::helpers::json_of(b.get("/openpipe_reporting/valves").await).await;
    assert_eq!(on_a, on_b, "GET /valves answers the same on both");
    assert!(b.valves_file("openpipe_reporting").contains("TIMEOUT_SECONDS = 42"));
    assert!(b.valves_file("openpipe_reporting").contains("# the operator's note"), "comments travel too");

    // A third replica with the old file starts on the shared values.
    let c = replica(&url, files, true, false).await;
    let (_, on_c) = crate::helpers::json_of(c.get("/openpipe_reporting/valves").await).await;
    assert_eq!(on_c, on_a);
    // A refused update is refused everywhere and shares nothing.
    assert_eq!(b.post_json("/openpipe_reporting/valves/update", &json!({"TIMEOUT_SECONDS": 0})).await.status(), 422);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, after) = crate::helpers::json_of(a.get("/openpipe_reporting/valves").await).await;
    assert_eq!(after["TIMEOUT_SECONDS"], json!(42));
}

/// A TCP proxy in front of PostgreSQL that the test can cut (closing every connection and
/// refusing new ones) and restore: a database that goes away and comes back.
struct CuttableProxy {
    url: String,
    up: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Copies one direction, holding the bytes while `frozen` (a network that stops answering
/// without closing anything).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while frozen.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl CuttableProxy {
    async fn start(db_url: &str) -> CuttableProxy {
        let target = db_url.split('@').nth(1).unwrap().split('/').next().unwrap().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = db_url.replacen(&target, &format!("127.0.0.1:{port}"), 1);
        let up = Arc::new(AtomicBool::new(true));
        let frozen = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, frozen2, live2) = (Arc::clone(&up), Arc::clone(&frozen), Arc::clone(&live));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
                let a = tokio::spawn(pump(cr, sw, Arc::clone(&frozen2)));
                let b = tokio::spawn(pump(sr, cw, Arc::clone(&frozen2)));
                live2.lock().unwrap().extend([a.abort_handle(), b.abort_handle()]);
            }
        });
        CuttableProxy { url, up, frozen, live }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
    }
}

/// A reporting replica whose database connection goes through a [`CuttableProxy`], after one
/// turn reported while everything is up.
async fn reporting_behind_a_proxy() -> Option<(CuttableProxy, MockOpenPipe, TestApp)> {
    let url = pg_database().await?;
    let proxy = CuttableProxy::start(&url).await;
    let mock = MockOpenPipe::start(OP_KEY).await;
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, ""))];
    let app = replica(&proxy.url, files, true, false).await;
    numbered_turn(&app, 0).await;
    mock.wait_for_reports(1, 10).await;
    Some((proxy, mock, app))
}

/// Turn `i`: chat `c-i`, answer `m-i`, reported as `chatcmpl-m-i`.
async fn numbered_turn(app: &TestApp, i: usize) {
    turn(app, &format!("c-{i}"), &format!("m-{i}"), "q", "a").await
}

fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// PostgreSQL goes away: answers that do not need it keep working, reports are held in memory
/// (the operator sees it in /metrics and the log), and they are all delivered once it is back.
#[tokio::test]
async fn while_the_database_is_away_chats_work_and_reports_wait_in_memory() {
    let Some((proxy, mock, app)) = reporting_behind_a_proxy().await else { return };
    let turn = |i: usize| numbered_turn(&app, i);

    proxy.cut();
    let started = std::time::Instant::now();
    let res = app
        .post_json(
            "/chat/completions",
            &json!({"model": "scripted_pipe", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("data: [DONE]"));
    for i in 1..=4 {
        turn(i).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "hooks waited on the missing database: {:?}",
        started.elapsed()
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(gauge(&metrics, "sluice_store_up"), 0.0, "{metrics}");
    assert_eq!(gauge(&metrics, "sluice_store_held_entries"), 4.0, "{metrics}");
    assert_eq!(mock.reports().len(), 1);

    proxy.restore();
    mock.wait_for_reports(5, 20).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        completion_ids(&mock.reports()),
        ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3", "chatcmpl-m-4"],
        "each report exactly once"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(gauge(&metrics, "sluice_store_up"), 1.0, "{metrics}");
    assert_eq!(gauge(&metrics, "sluice_store_held_entries"), 0.0);
    assert_eq!(gauge(&metrics, "sluice_store_held_dropped_total"), 0.0);
}

/// The same as the tests above with two real `sluice` processes on one database: a turn split
/// across them, a valves update crossing over, a 3a → 3b tool round split; and a third process
/// refusing a schema newer than it knows.
#[tokio::test]
async fn two_processes_share_turns_valves_and_tool_rounds() {
    use crate::binary::Binary;
    let Some(url) = pg_database().await else { return };
    let openpipe = MockOpenPipe::start(OP_KEY).await;
    let openai = tool_round_mock().await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for d in &dirs {
        std::fs::create_dir_all(d.path().join("valves")).unwrap();
        std::fs::write(
            d.path().join("valves/openai_responses.toml"),
            format!("BASE_URL = \"{}/v1\"\nFETCH_MODELS = false\nSHOW_USAGE_COST = false\nMAX_RETRIES = 0\nMODEL_ID = [\"gpt-5-mini\"]\n", openai.uri()),
        )
        .unwrap();
    }
    let env = [
        ("SLUICE_STORE_URL", url.clone()),
        ("OPENAI_API_KEY", OPENAI_KEY.to_string()),
        ("OPENPIPE_API_KEY", OP_KEY.to_string()),
        ("OPENPIPE_BASE_URL", openpipe.base_url()),
    ];
    let a = Binary::start(dirs[0].path(), &env).await;
    let b = Binary::start(dirs[1].path(), &env).await;

    // A turn split across the processes.
    let inlet =
        json!({"user": user(), "body": inlet_body("c-9", "m-9", json!([{"role": "user", "content": "hello"}]))});
    assert_eq!(a.post("/openpipe_reporting/filter/inlet", inlet).await.status(), 200);
    let outlet = json!({"user": user(), "body": outlet_body("c-9", "m-9", json!([{"id": "q", "role": "user", "content": "hello"}]), "hi")});
    assert_eq!(b.post("/openpipe_reporting/filter/outlet", outlet).await.status(), 200);
    let reports = openpipe.wait_for_reports(1, 10).await;
    assert_eq!(reports[0]["tags"]["capture"], "inlet_outlet");

    // A valves update crossing over.
    assert_eq!(a.post("/openpipe_reporting/valves/update", json!({"MAX_REPORT_BYTES": 123456})).await.status(), 200);
    let started = std::time::Instant::now();
    loop {
        let live: Value = b.get("/openpipe_reporting/valves").await.json().await.unwrap();
        if live["MAX_REPORT_BYTES"] == json!(123456) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(1), "not on the other process after a second: {live}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A tool round split.
    let extra = json!({"tools": weather_tool(), "tool_choice": "auto", "reasoning_effort": "low"});
    let res = a
        .post("/chat/completions", chat("gpt-5-mini", system_and("Weather in Paris and London?"), extra.clone()))
        .await;
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3a_function_call.expected-chunks.jsonl"));
    let mut messages = system_and("Weather in Paris and London?");
    messages.as_array_mut().unwrap().extend(weather_round());
    let res = b.post("/chat/completions", chat("gpt-5-mini", messages, extra)).await;
    let (got, _, _) = payloads(&res.text().await.unwrap());
    assert_eq!(got, expected_chunks("3b_function_call_followup.expected-chunks.jsonl"));

    // A schema from the future: the next process refuses to start, saying why.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client.execute("INSERT INTO sluice_schema (version) VALUES (99)", &[]).await.unwrap();
    let third = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env_clear()
        .env("SLUICE_STORE_URL", &url)
        .env("SLUICE_PORT", "0")
        .env("SLUICE_DATA_DIR", third.path().join("data"))
        .env("SLUICE_VALVES_DIR", third.path().join("valves"))
        .env("SLUICE_API_KEY", crate::helpers::KEY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "started against a newer schema: {text}");
    assert!(text.contains("newer than this sluice knows"), "{text}");
    assert!(!text.contains("PASSWORD") && !text.contains(OP_KEY), "{text}");
    drop((a, b));
}

/// PostgreSQL stops answering without closing anything (a network partition): the first call
/// pays one bounded wait, the following ones fail at once, reports are held, and everything is
/// delivered once the database answers again.
#[tokio::test]
async fn a_database_that_stops_answering_costs_one_bounded_wait() {
    let Some((proxy, mock, app)) = reporting_behind_a_proxy().await else { return };
    let turn = |i: usize| numbered_turn(&app, i);

    proxy.freeze(true);
    let started = std::time::Instant::now();
    turn(1).await;
    let first = started.elapsed();
    turn(2).await;
    turn(3).await;
    let all = started.elapsed();
    assert!(first < Duration::from_secs(7), "one turn waited {first:?}");
    assert!(all - first < Duration::from_secs(2), "later turns waited too: {:?}", all - first);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(gauge(&metrics, "sluice_store_up"), 0.0, "{metrics}");
    assert_eq!(gauge(&metrics, "sluice_store_held_entries"), 3.0, "{metrics}");

    proxy.freeze(false);
    mock.wait_for_reports(4, 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        completion_ids(&mock.reports()),
        ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3"],
        "each report exactly once"
    );
}

/// Reports sent more than once, and reports never sent, among `expected` turns.
fn duplicates_and_losses(reports: &[Value], expected: usize) -> (usize, usize) {
    let ids = completion_ids(reports);
    let mut distinct = ids.clone();
    distinct.dedup();
    (ids.len() - distinct.len(), expected - distinct.len().min(expected))
}

/// Issue 22: a replica killed while OpenPipe slowly accepts a backlog. Only what it had in
/// flight (four attempts at most) is sent again by the other replica; nothing is lost.
#[tokio::test]
async fn a_replica_killed_during_a_slow_drain_resends_at_most_its_attempts_in_flight() {
    use crate::binary::Binary;
    let Some(url) = pg_database().await else { return };
    const SECRET: &str = "opk-kill-test-0a1b2c3d4e5f";
    let mock = MockOpenPipe::start(SECRET).await;
    mock.with(|s| s.slow = Some(Duration::from_millis(400)));
    let env = [
        ("OPENPIPE_API_KEY", SECRET.to_string()),
        ("OPENPIPE_BASE_URL", mock.base_url()),
        ("SLUICE_STORE_URL", url.clone()),
        ("SLUICE_STORE_LEASE_SECS", "3".to_string()),
        ("SLUICE_LOG_LEVEL", "info".to_string()),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Binary::start(dir_a.path(), &env).await;
    let b = Binary::start(dir_b.path(), &env).await;
    const TURNS: usize = 40;
    for i in 0..TURNS {
        binary_turn(&a, "c", &format!("m-{i}"), "q", "a").await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while mock.attempts() < 10 {
        assert!(std::time::Instant::now() < deadline, "the drain never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill();
    let reports = mock.wait_for_reports(TURNS, 60).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (duplicates, lost) = duplicates_and_losses(&mock.reports(), TURNS);
    eprintln!("kill -9 during a slow drain: {} sent, {duplicates} duplicated, {lost} lost", reports.len());
    assert_eq!(lost, 0);
    assert!(duplicates <= 4, "{duplicates} reports sent twice; at most the four in flight may be\n{}", b.kill());
}

/// Issue 22: PostgreSQL goes away for three seconds while two replicas drain a backlog. The
/// outcomes of the attempts in flight are recorded when it is back: nothing is sent twice.
#[tokio::test]
async fn a_database_outage_during_a_drain_resends_nothing() {
    let Some(url) = pg_database().await else { return };
    let proxy = CuttableProxy::start(&url).await;
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.slow = Some(Duration::from_millis(300)));
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, ""))];
    let replica = |files| {
        spawn_app_with(Options {
            store_url: Some(proxy.url.clone()),
            store_lease_secs: Some(10),
            valves_files: files,
            openpipe: Some(fast()),
            ..Default::default()
        })
    };
    let (a, b) = (replica(files.clone()).await.unwrap(), replica(files).await.unwrap());
    const TURNS: usize = 30;
    for i in 0..TURNS {
        numbered_turn(if i % 2 == 0 { &a } else { &b }, i).await;
    }
    while mock.attempts() < 6 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    mock.wait_for_reports(TURNS, 60).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (duplicates, lost) = duplicates_and_losses(&mock.reports(), TURNS);
    eprintln!("database outage during a drain: {duplicates} duplicated, {lost} lost");
    assert_eq!((duplicates, lost), (0, 0));
}

/// Issue 22: OpenPipe takes longer to answer than the store's lease. The leases of attempts
/// in flight are renewed, so the other replica never takes and sends them again.
#[tokio::test]
async fn a_receiver_slower_than_the_lease_gets_each_report_once() {
    let Some(url) = pg_database().await else { return };
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.slow = Some(Duration::from_secs(3)));
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, "TIMEOUT_SECONDS = 10"))];
    let replica = |files| {
        spawn_app_with(Options {
            store_url: Some(url.clone()),
            store_lease_secs: Some(2),
            valves_files: files,
            openpipe: Some(fast()),
            ..Default::default()
        })
    };
    let (a, b) = (replica(files.clone()).await.unwrap(), replica(files).await.unwrap());
    const TURNS: usize = 8;
    for i in 0..TURNS {
        numbered_turn(if i % 2 == 0 { &a } else { &b }, i).await;
    }
    mock.wait_for_reports(TURNS, 30).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (duplicates, lost) = duplicates_and_losses(&mock.reports(), TURNS);
    assert_eq!((duplicates, lost), (0, 0), "{} attempts", mock.attempts());
}

/// A key from one replica's environment pins its URL there, but another replica whose
/// environment lacks it could move the URL (giving a key of its own), and the first sent its
/// key to the new URL (found by a red team). The first now refuses such a shared text, running
/// and at start.
#[tokio::test]
async fn a_key_from_one_replica_s_environment_does_not_follow_a_url_moved_on_another() {
    let Some(url) = pg_database().await else { return };
    let pinned = || -> std::collections::HashMap<String, String> {
        [("OPENPIPE_API_KEY".to_string(), "opk-from-this-environment-0123456789".to_string())].into()
    };
    let start = |env| {
        spawn_app_with(Options { store_url: Some(url.clone()), env, openpipe: Some(fast()), ..Default::default() })
    };
    let a = start(pinned()).await.unwrap();
    let b = start(Default::default()).await.unwrap();
    let url_on = |app: &TestApp| {
        let (client, address) = (app.client.clone(), app.url("/openpipe_reporting/valves"));
        async move {
            let res = client.get(address).bearer_auth(crate::helpers::KEY).send().await.unwrap();
            res.json::<Value>().await.unwrap()["OPENPIPE_BASE_URL"].clone()
        }
    };
    let before = url_on(&a).await;
    let theirs = "http://127.0.0.1:9/api/v1";
    let moved = json!({"OPENPIPE_BASE_URL": theirs, "OPENPIPE_API_KEY": "opk-of-the-other-replica-000000000"});
    let res = b.client.post(b.url("/openpipe_reporting/valves/update")).bearer_auth(crate::helpers::KEY).json(&moved);
    assert_eq!(res.send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(url_on(&b).await, json!(theirs), "the other replica took its own update");
    assert_eq!(url_on(&a).await, before, "the replica whose key is pinned took the moved URL");
    let c = start(pinned()).await.unwrap();
    assert_eq!(url_on(&c).await, before, "a replica started now took the moved URL");
}

/// A replica claims only the reports it starts: it asked the shared store for its free places
/// plus those in flight, and the store leased them all, so the extra ones waited a whole lease
/// (five minutes by default) unsent while OpenPipe was merely slow (found by a red team).
#[tokio::test]
async fn a_slow_receiver_delays_no_report_by_a_lease() {
    let Some(url) = pg_database().await else { return };
    let mock = MockOpenPipe::start(OP_KEY).await;
    mock.with(|s| s.slow = Some(Duration::from_secs(2)));
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, "TIMEOUT_SECONDS = 10"))];
    let app = spawn_app_with(Options {
        store_url: Some(url),
        store_lease_secs: Some(60),
        valves_files: files,
        openpipe: Some(fast()),
        ..Default::default()
    })
    .await
    .unwrap();
    const TURNS: usize = 8;
    for i in 0..TURNS {
        numbered_turn(&app, i).await;
    }
    // Four at a time, two seconds each: about four seconds for eight, not a minute.
    mock.wait_for_reports(TURNS, 20).await;
}

/// Stopped while the database is away, a replica waits (up to its grace period) to write the
/// reports it holds in memory: it ended at once and lost them without a word (found by a red
/// team). The database comes back during the wait; another replica delivers them.
#[tokio::test]
async fn a_replica_stopped_while_the_database_is_away_writes_what_it_holds_when_it_is_back() {
    let Some((proxy, mock, app)) = reporting_behind_a_proxy().await else { return };
    proxy.cut();
    for i in 1..=3 {
        numbered_turn(&app, i).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(gauge(&metrics, "sluice_store_held_entries"), 3.0, "{metrics}");
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!stopping.is_finished(), "it stopped without writing what it held");
    proxy.restore();
    tokio::time::timeout(Duration::from_secs(20), stopping).await.expect("it stopped once they were written").unwrap();
    let files = vec![("openpipe_reporting.toml", valves(&mock, OP_KEY, ""))];
    let _other = replica(&proxy.url, files, true, false).await;
    mock.wait_for_reports(4, 20).await;
    assert_eq!(completion_ids(&mock.reports()), ["chatcmpl-m-0", "chatcmpl-m-1", "chatcmpl-m-2", "chatcmpl-m-3"]);
}
