//! Crash safety of the real binary: `kill -9` while reports are queued and while valves updates
//! are being written, then a restart. No report may be lost or sent twice, and the valves file
//! must be the last acknowledged update or the one in flight: never torn, never older.

use std::time::Duration;

use serde_json::{json, Value};

use crate::binary::Binary;
use crate::openpipe::binary_turn;
use crate::openpipe_mock::MockOpenPipe;

const SECRET: &str = "opk-crash-test-5e6f7a8b9c0d";

fn update(i: u64) -> Value {
    // Two fields that must change together, and a long value so each write spans pages.
    json!({"MAX_REPORT_BYTES": 100_000 + i, "CUSTOM_METADATA": format!("{{\"round\": \"{i}\", {}}}", (0..12).map(|k| format!("\"pad{k}\": \"{}\"", "x".repeat(500))).collect::<Vec<_>>().join(", "))})
}

/// The round the file holds, after checking it is whole: it parses, and both fields agree.
fn round_in(file: &str) -> u64 {
    let table: toml::Table = toml::from_str(file).unwrap_or_else(|e| panic!("torn valves file ({e}):\n{file}"));
    let bytes = table.get("MAX_REPORT_BYTES").and_then(toml::Value::as_integer).unwrap() as u64;
    let metadata: Value =
        serde_json::from_str(table.get("CUSTOM_METADATA").and_then(toml::Value::as_str).unwrap()).unwrap();
    let round: u64 = metadata["round"].as_str().unwrap().parse().unwrap();
    assert_eq!(bytes, 100_000 + round, "fields from two different updates:\n{file}");
    round
}

#[tokio::test]
async fn kill_9_during_valves_writes_and_queued_reports_loses_nothing() {
    let mock = MockOpenPipe::start(SECRET).await;
    mock.with(|s| s.down = Some(503));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("valves/openpipe_reporting.toml");
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    std::fs::write(
        &file,
        "# kept across rewrites\nMAX_REPORT_BYTES = 100000\nCUSTOM_METADATA = '{\"round\": \"0\"}'\n",
    )
    .unwrap();
    let env = [("OPENPIPE_API_KEY", SECRET.to_string()), ("OPENPIPE_BASE_URL", mock.base_url())];

    let mut acked = 0u64;
    let mut sent = 0u64;
    let mut messages = Vec::new();
    for life in 0..4u64 {
        let server = Binary::start(dir.path(), &env).await;
        // What the previous life left is what this one serves.
        let (_, live) = crate::helpers::json_of(server.get("/openpipe_reporting/valves").await).await;
        assert_eq!(live["MAX_REPORT_BYTES"], json!(100_000 + round_in(&std::fs::read_to_string(&file).unwrap())));
        for k in 0..3 {
            let (chat, message) = (format!("c-{life}"), format!("m-{life}-{k}"));
            binary_turn(&server, &chat, &message, "q", "a").await;
            messages.push(format!("chatcmpl-{message}"));
        }
        // Updates back to back; the kill lands at a different point in each life.
        let writer = {
            let base = server.base.clone();
            let first = sent + 1;
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut last_ok = None;
                for i in first.. {
                    let res = client
                        .post(format!("{base}/openpipe_reporting/valves/update"))
                        .bearer_auth(crate::helpers::KEY)
                        .json(&update(i))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == 200 => last_ok = Some(i),
                        Ok(r) => panic!("update {i} refused: {} {}", r.status(), r.text().await.unwrap_or_default()),
                        Err(_) => return (last_ok, i),
                    }
                }
                (last_ok, first)
            })
        };
        tokio::time::sleep(Duration::from_millis(150 + 97 * life)).await;
        server.kill();
        let (last_ok, in_flight) = writer.await.unwrap();
        if let Some(ok) = last_ok {
            acked = ok;
        }
        sent = in_flight;
        let round = round_in(&std::fs::read_to_string(&file).unwrap());
        assert!(
            round == acked || round == in_flight,
            "file holds round {round}; acknowledged {acked}, in flight {in_flight}"
        );
        assert!(std::fs::read_to_string(&file).unwrap().starts_with("# kept across rewrites"));
    }
    assert!(acked > 4, "the updates did not run long enough to test anything ({acked})");

    mock.with(|s| s.down = None);
    let server = Binary::start(dir.path(), &env).await;
    mock.wait_for_reports(messages.len(), 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got: Vec<String> =
        mock.reports().iter().map(|r| r["respPayload"]["id"].as_str().unwrap().to_string()).collect();
    got.sort();
    messages.sort();
    assert_eq!(got, messages, "each report exactly once\n{}", server.kill());
    // Temporary files of interrupted writes are cleared at start.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("valves"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "openpipe_reporting.toml")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
