//! The `sluice check` and `sluice outbox` subcommands, run as an operator would.

use std::process::Command;

/// Runs `sluice <args>` with `dir/valves` and `dir/data`: exit code, stdout, stderr.
pub fn sluice(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_clear()
        .env("SLUICE_VALVES_DIR", dir.join("valves"))
        .env("SLUICE_DATA_DIR", dir.join("data"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_lists_every_problem_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let (code, _, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("ok     openpipe_reporting"), "{err}");

    std::fs::write(dir.path().join("valves/openai_responses.toml"), "# comment\nBASE_URL = 5\n").unwrap();
    std::fs::write(
        dir.path().join("valves/openpipe_reporting.toml"),
        "ENABLED = true\nTIMEOUT_SECONDS = 0\nCUSTOM_METADATA = '[1]'\n",
    )
    .unwrap();
    let (code, _, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("openai_responses.toml:2: BASE_URL: expected a string, got 5"), "{err}");
    assert!(err.contains("openpipe_reporting.toml:3: CUSTOM_METADATA: must be a JSON object"), "{err}");
    assert!(err.contains("openpipe_reporting.toml:2: TIMEOUT_SECONDS: must be between 1 and 120"), "{err}");
    assert!(err.contains("3 problem(s)"), "{err}");

    std::fs::write(dir.path().join("valves/openpipe_reporting.toml"), "TIMEOUT_SECONDS = \n").unwrap();
    let (code, _, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(err.contains("TOML parse error at line 1"), "{err}");
}

#[test]
fn outbox_command_reports_a_missing_store_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = sluice(dir.path(), &["outbox"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store"), "{err}");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    drop(sluice::store::SqliteStore::open(&dir.path().join("data").join(sluice::store::STORE_FILE)).unwrap());
    let (code, out, _) = sluice(dir.path(), &["outbox"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("queue"), "{out}");
    let (code, _, err) = sluice(dir.path(), &["outbox", "--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage: sluice outbox"), "{err}");
}
