//! Fuzzing every body sluice parses, through the running server: mutations of the corpus in
//! `tests/fuzz/corpus/` (real Open WebUI forms, chat requests, valves updates and valves files)
//! and arbitrary bytes, sent to every route. The properties: no panic, no hang (each answer
//! within 15 s), every error a 4xx/5xx with a JSON body, every stream closed with `[DONE]`, and
//! the server still healthy afterwards. Valves files and environment values are fuzzed through
//! the loader. A short pass runs with the suite; `FUZZ_CASES=20000` runs a long one. A failing
//! case shrinks and is kept in `tests/api/fuzz.txt`-style files under proptest-regressions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sluice::valves::{ValvesEntry, ValvesEnv};
use sluice_sdk::fuzz::{arb_json, cases, mutate, mutate_bytes};
use sluice_sdk::Pipeline;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{spawn_app_with, Options, TestApp, KEY};
use crate::manifold::{fixture, OPENAI_KEY};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.into_iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn json_corpus(target: &str) -> Vec<Value> {
    corpus(target).iter().map(|b| serde_json::from_slice(b).unwrap()).collect()
}

/// A body for a route: a mutated seed (most cases), the seed's bytes damaged, or any JSON.
fn body_for(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = json_corpus(target);
    let raw = corpus(target);
    let mutated = proptest::sample::select(seeds).prop_flat_map(mutate).prop_map(|v| serde_json::to_vec(&v).unwrap());
    let damaged = proptest::sample::select(raw).prop_flat_map(mutate_bytes);
    let any = arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap());
    prop_oneof![6 => mutated, 2 => damaged, 1 => any]
}

/// Pipeline ids as a path segment: the registered ones, unknown ones, and hostile ones.
fn pipeline_id() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec!["openai_responses", "openpipe_reporting", "scripted_filter", "scripted_pipe", "bare_filter"])
            .prop_map(str::to_string),
        1 => Just("..%2F..%2Fetc%2Fpasswd".to_string()),
        1 => Just("%2e%2e".to_string()),
        1 => Just("openai_responses.gpt-4.1".to_string()),
        1 => "[a-zA-Z0-9_.%~-]{1,40}",
    ]
}

#[derive(Debug, Clone)]
enum Case {
    Post { path: String, body: Vec<u8> },
    Get { path: String },
}

fn case() -> impl Strategy<Value = Case> {
    let hook = (pipeline_id(), prop_oneof![Just("inlet"), Just("outlet")]).prop_flat_map(|(id, hook)| {
        body_for(hook).prop_map(move |body| Case::Post { path: format!("/{id}/filter/{hook}"), body })
    });
    let chat = (prop_oneof![Just("/chat/completions"), Just("/v1/chat/completions")], body_for("chat"))
        .prop_map(|(p, body)| Case::Post { path: p.to_string(), body });
    let update = (pipeline_id(), body_for("valves_update"))
        .prop_map(|(id, body)| Case::Post { path: format!("/{id}/valves/update"), body });
    let get = (
        pipeline_id(),
        proptest::sample::select(vec![
            "/models",
            "/v1/models",
            "/pipelines",
            "/{}/valves",
            "/{}/valves/spec",
            "/v1/{}/valves",
        ]),
    )
        .prop_map(|(id, p)| Case::Get { path: p.replace("{}", &id) });
    prop_oneof![4 => hook, 3 => chat, 2 => update, 1 => get]
}

/// The properties every answer must have, whatever was sent.
async fn check(app: &TestApp, case: &Case) -> Result<(), TestCaseError> {
    let request = match case {
        Case::Post { path, body } => app
            .client
            .post(app.url(path))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body.clone()),
        Case::Get { path } => app.client.get(app.url(path)).bearer_auth(KEY),
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), async {
        let res = request.send().await.map_err(|e| format!("no answer (did a worker die?): {e}"))?;
        let status = res.status().as_u16();
        let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = res.text().await.map_err(|e| format!("body cut: {e}"))?;
        Ok::<_, String>((status, ct, text))
    })
    .await
    .map_err(|_| TestCaseError::fail(format!("{case:?}: no answer within 15 s")))?
    .map_err(|e| TestCaseError::fail(format!("{case:?}: {e}")))?;
    let (status, ct, text) = answer;
    prop_assert!((200..600).contains(&status), "{case:?}: status {status}");
    if status >= 400 {
        prop_assert!(ct.starts_with("application/json"), "{case:?}: {status} with content-type {ct:?}: {text}");
        let body: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{case:?}: {status} body is not JSON ({e}): {text}")))?;
        prop_assert!(body.get("detail").or_else(|| body.get("error")).is_some(), "{case:?}: {status} {text}");
    } else if ct.starts_with("text/event-stream") {
        prop_assert!(text.trim_end().ends_with("data: [DONE]"), "{case:?}: stream not closed: {text}");
    } else {
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{case:?}: 2xx body is not JSON: {text}");
    }
    Ok(())
}

async fn fuzz_app(openai: &MockServer, openpipe: &MockServer) -> TestApp {
    let responses = format!(
        "BASE_URL = \"{}/v1\"\nAPI_KEY = \"{OPENAI_KEY}\"\nFETCH_MODELS = false\nMAX_RETRIES = 0\nSTREAM_IDLE_TIMEOUT_S = 5\n",
        openai.uri()
    );
    let reporting = format!(
        "OPENPIPE_API_KEY = \"opk-fuzz-9b2e4d6f8a1c3e5d\"\nOPENPIPE_BASE_URL = \"{}/api/v1\"\n",
        openpipe.uri()
    );
    spawn_app_with(Options {
        manifold: true,
        openpipe: Some(sluice_openpipe_reporting::Tuning::default()),
        max_body_bytes: Some(256 * 1024),
        valves_files: vec![("openai_responses.toml", responses), ("openpipe_reporting.toml", reporting)],
        ..Default::default()
    })
    .await
    .unwrap()
}

#[test]
fn every_route_answers_any_body_with_a_status_and_json() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (openai, openpipe, app) = rt.block_on(async {
        let openai = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/responses"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/event-stream")
                    .set_body_raw(fixture("1_plain_text.sse"), "text/event-stream"),
            )
            .mount(&openai)
            .await;
        let openpipe = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"status": "ok"})))
            .mount(&openpipe)
            .await;
        let app = fuzz_app(&openai, &openpipe).await;
        (openai, openpipe, app)
    });
    let app = Arc::new(app);
    let mut runner = TestRunner::new(Config {
        cases: cases() * 4,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        source_file: Some(file!()),
        ..Config::default()
    });
    let result = runner.run(&case(), |case| rt.block_on(check(&app, &case)));
    // Still up and answering after everything it was sent.
    let healthy = rt.block_on(async { app.get("/").await.status().as_u16() });
    drop((openai, openpipe));
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(healthy, 200);
}

fn valves_of(pipeline: &dyn Pipeline) -> Arc<dyn sluice_sdk::DynValves> {
    pipeline.valves().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// A valves file with anything in it, and any value in an environment override of any of
    /// its fields, gives either valves or a list of field errors, for every pipeline compiled
    /// into the binary: `sluice` refuses to start with a clear message instead of panicking.
    #[test]
    fn valves_files_and_overrides_load_or_name_the_problem(
        (which, text) in (0usize..sluice::registry::builtin().len())
            .prop_flat_map(|i| (Just(i), proptest::sample::select(corpus("valves_toml")).prop_flat_map(mutate_bytes))),
        field_pick in any::<proptest::sample::Index>(),
        value in any::<String>(),
    ) {
        let pipeline = sluice::registry::builtin().swap_remove(which);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{}.toml", pipeline.id())), &text).unwrap();
        let entry = ValvesEntry::new(pipeline.id(), valves_of(pipeline.as_ref()), dir.path());
        let _ = entry.load(&ValvesEnv::Map(HashMap::new()));
        let field = &entry.schema.fields[field_pick.index(entry.schema.fields.len())].name;
        let var = sluice::valves::env_var_name(pipeline.id(), field);
        let _ = entry.load(&ValvesEnv::Map(HashMap::from([(var, value)])));
    }
}
