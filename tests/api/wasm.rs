//! WebAssembly pipelines through the server's routes, as Open WebUI's admin page and curl use
//! them: upload (multipart), add by URL, delete, then inlet, outlet and chat through them;
//! what is refused and how; a restart keeps them; a replica serves what another added.

use std::time::Duration;

use serde_json::{json, Value};
use sluice_wasm::guests;

use crate::helpers::{json_of, spawn_app_with, Options, TestApp, KEY};
use crate::store_contract::pg_database;

async fn upload(app: &TestApp, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name.to_string())
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::multipart::Form::new().text("urlIdx", "0").part("file", part);
    let res = app.client.post(app.url("/pipelines/upload")).bearer_auth(KEY).multipart(form).send().await.unwrap();
    json_of(res).await
}

async fn delete(app: &TestApp, id: &str) -> (u16, Value) {
    let res =
        app.client.delete(app.url("/pipelines/delete")).bearer_auth(KEY).json(&json!({"id": id})).send().await.unwrap();
    json_of(res).await
}

async fn listed(app: &TestApp) -> Vec<String> {
    let (_, body) = json_of(app.get("/pipelines").await).await;
    body["data"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
}

fn form(body: Value) -> Value {
    json!({"body": body, "user": {"id": "u-1", "role": "user"}})
}

fn chat_body() -> Value {
    json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn an_uploaded_filter_and_pipe_serve_until_deleted() {
    let app = spawn_app_with(Options::default()).await.unwrap();
    let (status, added) = upload(&app, "wat_filter.wasm", guests::filter("wat_filter", guests::ECHO)).await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(added["id"], "wat_filter");
    assert_eq!(added["type"], "filter");
    assert!(added["detail"].as_str().unwrap().contains("added from wat_filter.wasm"), "{added}");
    assert!(listed(&app).await.contains(&"wat_filter".to_string()));

    let (status, body) = json_of(app.post_json("/wat_filter/filter/inlet", &form(chat_body())).await).await;
    assert_eq!((status, body), (200, chat_body()));
    let (status, body) = json_of(app.post_json("/wat_filter/filter/outlet", &form(chat_body())).await).await;
    assert_eq!((status, body), (200, chat_body()));
    let (_, spec) = json_of(app.get("/wat_filter/valves/spec").await).await;
    assert_eq!(spec["properties"]["ALLOWED_HOSTS"]["type"], "array", "{spec}");
    let (status, _) =
        json_of(app.post_json("/wat_filter/valves/update", &json!({"ALLOWED_HOSTS": "api.example.com"})).await).await;
    assert_eq!(status, 200);
    assert!(app.valves_file("wat_filter").contains("api.example.com"));

    let (status, added) = upload(&app, "ticker.wasm", guests::pipe("ticker", 3)).await;
    assert_eq!(status, 200, "{added}");
    let (_, models) = json_of(app.get("/v1/models").await).await;
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "ticker"), "{models}");
    let (status, answer) = json_of(
        app.post_json(
            "/v1/chat/completions",
            &json!({"model": "ticker", "messages": [{"role": "user", "content": "go"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["message"]["content"], "tickticktick");
    let res = app
        .post_json(
            "/chat/completions",
            &json!({"model": "ticker", "stream": true, "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    let text = res.text().await.unwrap();
    assert_eq!(text.matches("\"content\": \"tick\"").count(), 3, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("pipeline=\"ticker\",event=\"wasm_calls\""), "{metrics}");

    // Uploading the same id again replaces it.
    let (status, again) = upload(&app, "t.wasm", guests::pipe("ticker", 1)).await;
    assert_eq!((status, again["detail"].as_str().unwrap().contains("replaced")), (200, true), "{again}");

    let data = app.data_dir.clone();
    #[cfg(unix)]
    {
        // Native code sluice will run: its own, whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("wasm-cache")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    let (status, deleted) = delete(&app, "wat_filter").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(app.valves_file("wat_filter"), "", "a removed pipeline's valves (and keys) are forgotten");
    assert_eq!(deleted["detail"], "Pipeline wat_filter deleted successfully");
    assert!(!listed(&app).await.contains(&"wat_filter".to_string()));
    let (status, _) = json_of(app.post_json("/wat_filter/filter/inlet", &form(chat_body())).await).await;
    assert_eq!(status, 404);
    let (status, again) = delete(&app, "wat_filter").await;
    assert_eq!(status, 404, "{again}");
}

#[tokio::test]
async fn what_is_no_pipeline_is_refused_with_the_reason() {
    let app = spawn_app_with(Options { componentize_py: Some(String::new()), ..Default::default() }).await.unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("notes.txt", b"hello".to_vec(), 400, "neither a WebAssembly component"),
        ("core.wasm", wat_bytes("(module)"), 400, "not a WebAssembly component"),
        ("garbage.wasm", b"\0asm\x0d\0\x01\0junk".to_vec(), 400, "not a WebAssembly component"),
        ("scripted_pipe.wasm", guests::filter("scripted_pipe", guests::ECHO), 409, "built-in pipeline"),
        ("my_filter.py", b"class Pipeline: pass\n".to_vec(), 400, "cannot build Python pipelines"),
        ("../evil name.py", b"x = 1\n".to_vec(), 400, "may use only lower-case letters"),
        ("scripted_pipe.py", b"x = 1\n".to_vec(), 409, "built-in pipeline"),
        // Upper-cased, '-' as '_': the built-in's environment variables (and key).
        ("dash.wasm", guests::filter("openai-responses", guests::ECHO), 400, "lower-case letters"),
        (
            "sneaky.wasm",
            guests::component(
                &guests::core(r#"{"id":"sneaky","kind":"filter"}"#, guests::ECHO, r#"(import "evil:host/shell" "run" (func))"#),
                Some("package evil:host;\ninterface shell { run: func(); }\nworld bad { import shell; export sluice:pipeline/guest@0.1.0; }"),
            ),
            400,
            "imports evil:host/shell",
        ),
    ];
    for (name, bytes, status, says) in cases {
        let (got, body) = upload(&app, name, bytes).await;
        assert_eq!(got, status, "{name}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{name}: {detail}");
    }
    let too_big = vec![0u8; (sluice::config::Settings::default().wasm_component_mb << 20) + 1];
    let (got, _) = upload(&app, "big.wasm", too_big).await;
    assert_eq!(got, 413);
    let res = app
        .client
        .post(app.url("/pipelines/upload"))
        .bearer_auth(KEY)
        .multipart(reqwest::multipart::Form::new().text("x", "y"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(res).await.0, 422);

    let (got, answer) = json_of(
        app.post_json("/pipelines/add", &json!({"url": "https://user:secret-pw@example.com/f.wasm?token=t0k"})).await,
    )
    .await;
    assert_eq!(got, 400, "{answer}");
    assert!(!answer.to_string().contains("secret-pw") && !answer.to_string().contains("t0k"), "{answer}");
    for (body, status, says) in [
        (json!({"url": "http://127.0.0.1:1/f.wasm"}), 400, "https"),
        (json!({"url": "https://user:pw@example.com/f.wasm"}), 400, "https URL with a host"),
        (json!({"url": "not a url"}), 400, "https"),
        (json!({"url": "https://127.0.0.1:1/f.wasm"}), 400, "could not connect"),
        (json!({"url": 3}), 422, "url"),
        (json!({}), 422, "url: field required"),
    ] {
        let (got, answer) = json_of(app.post_json("/pipelines/add", &body).await).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(says), "{body}: {answer}");
    }
    let (status, body) = delete(&app, "scripted_pipe").await;
    assert_eq!(status, 409, "{body}");
    assert!(listed(&app).await.contains(&"scripted_pipe".to_string()));

    // A compiler that is not there (the container image has none): the same advice.
    let app =
        spawn_app_with(Options { componentize_py: Some("/nonexistent/componentize-py".into()), ..Default::default() })
            .await
            .unwrap();
    let (status, body) = upload(&app, "my_filter.py", b"class Pipeline: pass\n".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("is not installed") && detail.contains("guests/python/build.sh my_filter.py"), "{detail}");
}

#[tokio::test]
async fn a_guest_that_spins_or_traps_fails_its_own_request_and_nothing_else() {
    let app = spawn_app_with(Options { wasm_call_timeout_secs: Some(4), ..Default::default() }).await.unwrap();
    assert_eq!(upload(&app, "spin.wasm", guests::filter("spin", "(loop $l (br $l)) unreachable")).await.0, 200);
    assert_eq!(upload(&app, "crash.wasm", guests::filter("crash", "unreachable")).await.0, 200);
    assert_eq!(upload(&app, "good.wasm", guests::filter("good", guests::ECHO)).await.0, 200);
    let spinning = {
        let (client, url) = (app.client.clone(), app.url("/spin/filter/inlet"));
        tokio::spawn(async move { client.post(url).bearer_auth(KEY).json(&form(chat_body())).send().await })
    };
    // While one request spins, the server and the other pipelines answer, on the same worker
    // (the test server has one): the guest hands the thread back at every tick. Stopped only at
    // its deadline, it held the worker for its whole call (found by a red team).
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let soon = std::time::Duration::from_secs(2);
    let health = app.client.get(app.url("/")).timeout(soon).send().await.expect("GET / while a guest spins");
    assert_eq!(health.status(), 200);
    let good = app.client.post(app.url("/good/filter/inlet")).bearer_auth(KEY).json(&form(chat_body())).timeout(soon);
    let (status, body) = json_of(good.send().await.expect("another pipeline while a guest spins")).await;
    assert_eq!((status, body), (200, chat_body()));
    let (status, crashed) = json_of(app.post_json("/crash/filter/inlet", &form(chat_body())).await).await;
    assert_eq!(status, 500, "{crashed}");
    assert!(crashed["detail"].as_str().unwrap().contains("pipeline crash failed"), "{crashed}");
    let (status, spun) = json_of(spinning.await.unwrap().unwrap()).await;
    assert_eq!(status, 504, "{spun}");
    assert!(spun["detail"].as_str().unwrap().contains("ran longer than 4 s"), "{spun}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("pipeline=\"spin\",event=\"wasm_failures\"} 1"), "{metrics}");
}

#[tokio::test]
async fn additions_in_progress_are_bounded() {
    let app = spawn_app_with(Options::default()).await.unwrap();
    // Two uploads whose bodies stall after their first bytes hold both places.
    let mut stalled = Vec::new();
    for _ in 0..sluice::components::INTAKE {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        tx.send(Ok(b"--X\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wasm\"\r\n\r\n\0asm".to_vec()))
            .await
            .unwrap();
        let body = reqwest::Body::wrap_stream(tokio_stream_of(rx));
        let request = app
            .client
            .post(app.url("/pipelines/upload"))
            .bearer_auth(KEY)
            .header("content-type", "multipart/form-data; boundary=X")
            .body(body);
        stalled.push((tx, tokio::spawn(request.send())));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = upload(&app, "third.wasm", guests::filter("third", guests::ECHO)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("being added already"), "{body}");
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(upload(&app, "third.wasm", guests::filter("third", guests::ECHO)).await.0, 200);
}

fn tokio_stream_of(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn an_answer_that_never_ends_is_cut_at_the_output_cap() {
    let app = spawn_app_with(Options::default()).await.unwrap();
    // Four bytes an event, but each counts as at least 64: about 262,000 events in 16 MiB.
    assert_eq!(upload(&app, "endless.wasm", guests::pipe("endless", u32::MAX)).await.0, 200);
    let started = std::time::Instant::now();
    let (status, body) = json_of(
        app.post_json(
            "/v1/chat/completions",
            &json!({"model": "endless", "messages": [{"role": "user", "content": "go"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("more text than an answer may hold"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
}

fn wat_bytes(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap()
}

#[tokio::test]
async fn switched_off_the_routes_say_so() {
    let app = spawn_app_with(Options { wasm: Some(false), ..Default::default() }).await.unwrap();
    let (status, body) = upload(&app, "f.wasm", guests::filter("f", guests::ECHO)).await;
    assert_eq!(status, 501, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("wasm_pipelines = false"), "{body}");
    let (status, _) =
        json_of(app.post_json("/pipelines/add", &json!({"url": "https://example.com/f.wasm"})).await).await;
    assert_eq!(status, 501);
    let (status, _) = delete(&app, "f").await;
    assert_eq!(status, 501);
    let (status, _) = delete(&app, "scripted_pipe").await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_restart_keeps_what_was_added() {
    let root = tempfile::tempdir().unwrap();
    let options = || Options { root: Some(root.path().to_path_buf()), ..Default::default() };
    let app = spawn_app_with(options()).await.unwrap();
    assert_eq!(upload(&app, "kept.wasm", guests::filter("kept", guests::ECHO)).await.0, 200);
    app.stop().await;
    let app = spawn_app_with(options()).await.unwrap();
    assert!(listed(&app).await.contains(&"kept".to_string()));
    let (status, body) = json_of(app.post_json("/kept/filter/inlet", &form(chat_body())).await).await;
    assert_eq!((status, body), (200, chat_body()));
    assert_eq!(delete(&app, "kept").await.0, 200);
    app.stop().await;
    let app = spawn_app_with(options()).await.unwrap();
    assert!(!listed(&app).await.contains(&"kept".to_string()));
}

/// New code under an id does not receive the secrets entered for the old code: a replacement
/// that no longer marked API_KEY secret showed it in clear, and any replacement could have
/// echoed it (found by a red team). The same code again is no new code.
#[tokio::test]
async fn new_code_under_an_id_gets_no_secret_entered_for_the_old() {
    let app = spawn_app_with(Options::default()).await.unwrap();
    let keyed = |format: &str| {
        let describe = format!(
            r#"{{"id":"keyed","kind":"filter","valves":{{"type":"object","properties":{{"API_KEY":{{"type":"string","default":""{format}}}}}}}}}"#
        );
        guests::component(&guests::core(&describe, guests::ECHO, ""), None)
    };
    let (secret, plain) = (keyed(r#","format":"password""#), keyed(""));
    assert_eq!(upload(&app, "keyed.wasm", secret.clone()).await.0, 200);
    let key = "sk-entered-for-the-old-code-0123456789";
    crate::helpers::register_secret(key);
    let (status, _) = json_of(app.post_json("/keyed/valves/update", &json!({"API_KEY": key})).await).await;
    assert_eq!(status, 200);

    let (status, refused) = upload(&app, "keyed.wasm", plain.clone()).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("(API_KEY)"), "{refused}");
    let (_, shown) = json_of(app.get("/keyed/valves").await).await;
    assert!(shown["API_KEY"].as_str().unwrap().starts_with("********"), "{shown}");
    assert_eq!(upload(&app, "keyed.wasm", secret).await.0, 200, "the same code again");

    let (status, _) = json_of(app.post_json("/keyed/valves/update", &json!({"API_KEY": null})).await).await;
    assert_eq!(status, 200);
    assert_eq!(upload(&app, "keyed.wasm", plain).await.0, 200);
    let (_, shown) = json_of(app.get("/keyed/valves").await).await;
    assert!(shown["API_KEY"].is_null() || shown["API_KEY"] == "", "{shown}");
}

/// One stored component whose record was damaged (a disk, a hand edit) is left out at start;
/// the server and the other added pipelines serve (it stopped the server from starting:
/// found by a red team).
#[tokio::test]
async fn a_damaged_stored_component_is_left_out_not_fatal() {
    let root = tempfile::tempdir().unwrap();
    let options = || Options { root: Some(root.path().to_path_buf()), ..Default::default() };
    let app = spawn_app_with(options()).await.unwrap();
    assert_eq!(upload(&app, "kept.wasm", guests::filter("kept", guests::ECHO)).await.0, 200);
    assert_eq!(upload(&app, "broken.wasm", guests::filter("broken", "unreachable")).await.0, 200);
    let db = app.data_dir.join("sluice.db");
    app.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    // The two components' records: damage the one whose bytes are the "broken" filter's.
    let index: String = conn
        .query_row("SELECT value FROM kv WHERE namespace = 'sluice:components' AND key = 'index'", [], |r| r.get(0))
        .unwrap();
    let index: Value = serde_json::from_str(&index).unwrap();
    let broken = index["components"]["broken"]["sha256"].as_str().unwrap().to_string();
    let changed = conn
        .execute("UPDATE kv SET value = '\"!!!not base64!!!\"' WHERE key = ?1", [format!("wasm:{broken}")])
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let app = spawn_app_with(options()).await.expect("the server starts");
    let names = listed(&app).await;
    assert!(names.contains(&"kept".to_string()) && !names.contains(&"broken".to_string()), "{names:?}");
    let (status, body) = json_of(app.post_json("/kept/filter/inlet", &form(chat_body())).await).await;
    assert_eq!((status, body), (200, chat_body()));
}

#[tokio::test]
async fn a_replica_serves_what_another_added_and_drops_what_it_removed() {
    let Some(url) = pg_database().await else { return };
    let replica = || spawn_app_with(Options { store_url: Some(url.clone()), ..Default::default() });
    let (a, b) = (replica().await.unwrap(), replica().await.unwrap());
    assert_eq!(upload(&a, "shared.wasm", guests::filter("shared", guests::ECHO)).await.0, 200);
    let started = std::time::Instant::now();
    loop {
        let (status, _) = json_of(b.post_json("/shared/filter/inlet", &form(chat_body())).await).await;
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the other replica did not load it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delete(&a, "shared").await.0, 200);
    let started = std::time::Instant::now();
    while listed(&b).await.contains(&"shared".to_string()) {
        assert!(started.elapsed() < Duration::from_secs(5), "the other replica kept it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A call under way when its pipeline is removed writes nothing after the removal: the record
/// would outlive the delete and be read by a component added later with the id (found by a red
/// team). The guest spins, then writes a record; the pipeline is removed while it spins.
#[tokio::test]
async fn a_call_under_way_leaves_no_record_behind_its_removed_pipeline() {
    let app = spawn_app_with(Options { wasm_call_timeout_secs: Some(20), ..Default::default() }).await.unwrap();
    // kv-set(key, value, ttl) lowered: two strings, the ttl and where the result goes.
    let imports = r#"(import "sluice:pipeline/host@0.1.0" "kv-set" (func $kv_set (param i32 i32 i32 i32 i32 i32)))
  (data (i32.const 700) "lateword")"#;
    let inlet = format!(
        "(local $i i32)
    (local.set $i (i32.const 2000000000))
    (loop $spin (local.set $i (i32.sub (local.get $i) (i32.const 1))) (br_if $spin (local.get $i)))
    (call $kv_set (i32.const 700) (i32.const 4) (i32.const 704) (i32.const 4) (i32.const 0) (i32.const 2048))
    {}",
        guests::ECHO
    );
    let late = guests::component(&guests::core(r#"{"id":"late","kind":"filter"}"#, &inlet, imports), None);
    assert_eq!(upload(&app, "late.wasm", late).await.0, 200);
    let records = || {
        let db = rusqlite::Connection::open(app.data_dir.join("sluice.db")).unwrap();
        db.query_row("SELECT count(*) FROM kv WHERE namespace = 'wasm:late'", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    let spinning = {
        let (client, url) = (app.client.clone(), app.url("/late/filter/inlet"));
        tokio::spawn(async move { client.post(url).bearer_auth(KEY).json(&form(chat_body())).send().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!spinning.is_finished(), "the guest must still be spinning when it is removed");
    assert_eq!(delete(&app, "late").await.0, 200);
    let (status, body) = json_of(spinning.await.unwrap().unwrap()).await;
    assert_eq!((status, body), (200, chat_body()), "the call finishes; only its write is refused");
    assert_eq!(records(), 0, "a record written after the removal");
}

/// The compiler runs the upload's top-level code; killed with sluice (`kill -9`), it kept
/// spinning with nobody to stop it (found by a red team). The kernel now bounds its CPU time
/// to a build's, whoever is left to watch.
#[tokio::test]
async fn the_compiler_s_cpu_time_is_bounded_by_the_kernel() {
    let tools = tempfile::tempdir().unwrap();
    let compiler = tools.path().join("slow-componentize-py");
    std::fs::write(&compiler, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&compiler, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let shown = compiler.display().to_string();
    let app = spawn_app_with(Options { componentize_py: Some(shown.clone()), ..Default::default() }).await.unwrap();
    let building = {
        let part = reqwest::multipart::Part::bytes(b"x = 1\n".to_vec()).file_name("slow.py");
        let form = reqwest::multipart::Form::new().part("file", part);
        let request = app.client.post(app.url("/pipelines/upload")).bearer_auth(KEY).multipart(form);
        tokio::spawn(request.send())
    };
    let mut process = None;
    for _ in 0..200 {
        process = std::fs::read_dir("/proc").unwrap().flatten().map(|entry| entry.path()).find(|path| {
            std::fs::read(path.join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&shown))
        });
        if process.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let process = process.expect("the compiler was started");
    // The limit is set just after the start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let limits = std::fs::read_to_string(process.join("limits")).unwrap();
    building.abort();
    let cpu = limits.lines().find(|l| l.starts_with("Max cpu time")).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let (soft, hard) = ((180 * cores).to_string(), (180 * cores + 5).to_string());
    assert_eq!(cpu.split_whitespace().collect::<Vec<_>>()[3..6], [soft.as_str(), &hard, "seconds"], "{cpu}");
}

/// Removed and added again at once (how an admin resets a pipeline), the same code is a new
/// pipeline on every replica: another replica saw the same code still there, kept the removed
/// one's keys and records and never closed its calls' records (found by a red team); and the
/// shared valves kept the keys for the next addition.
#[tokio::test]
async fn removed_and_added_again_a_pipeline_starts_afresh_on_every_replica() {
    let Some(url) = pg_database().await else { return };
    let replica = || spawn_app_with(Options { store_url: Some(url.clone()), ..Default::default() });
    let (a, b) = (replica().await.unwrap(), replica().await.unwrap());
    let describe = r#"{"id":"reset","kind":"filter","valves":{"type":"object","properties":{"API_KEY":{"type":"string","default":"","format":"password"}}}}"#;
    let component = guests::component(&guests::core(describe, guests::ECHO, ""), None);
    assert_eq!(upload(&a, "reset.wasm", component.clone()).await.0, 200);
    let key_on = |app: &TestApp| {
        let (client, url) = (app.client.clone(), app.url("/reset/valves"));
        async move {
            let res = client.get(url).bearer_auth(KEY).send().await.unwrap();
            let (status, body) = json_of(res).await;
            (status == 200).then(|| body["API_KEY"].as_str().unwrap_or("").to_string())
        }
    };
    let update = json!({"API_KEY": "sk-given-to-the-first-addition-0123456789"});
    let (status, body) = json_of(a.post_json("/reset/valves/update", &update).await).await;
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    while !key_on(&b).await.is_some_and(|k| k.contains('*')) {
        assert!(started.elapsed() < Duration::from_secs(10), "the other replica did not take the key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delete(&a, "reset").await.0, 200);
    // The other replica has not followed the removal yet: a key entered there now is shared
    // for the removed pipeline, and the next addition took it (found by a red team).
    let late = json!({"API_KEY": "sk-entered-after-the-removal-0123456789"});
    let (status, body) = json_of(b.post_json("/reset/valves/update", &late).await).await;
    assert!(status == 200 || status == 404, "{status} {body}");
    assert_eq!(upload(&a, "reset.wasm", component).await.0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for (name, app) in [("the replica that removed it", &a), ("the other", &b)] {
        assert_eq!(key_on(app).await.as_deref(), Some(""), "{name} still holds the removed pipeline's key");
    }
    // A replica started now takes nothing of it either.
    let c = replica().await.unwrap();
    assert_eq!(key_on(&c).await.as_deref(), Some(""));
}
