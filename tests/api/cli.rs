//! The command line, run as an operator would: help and version before any setting is read,
//! `check`, `settings`, `outbox` and `healthcheck`, and settings mistakes that name their cause.

use std::process::{Command, Stdio};

/// Runs `sluice <args>` with `dir/valves`, `dir/data` and `env`: exit code, stdout, stderr.
pub fn sluice_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env_clear()
        .current_dir(dir)
        .env("SLUICE_VALVES_DIR", dir.join("valves"))
        .env("SLUICE_DATA_DIR", dir.join("data"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn sluice(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    sluice_with(dir, args, &[])
}

/// `sluice serve` in `dir` with `dir/data` and `dir/valves` on a free loopback port, and no
/// other environment than `env` (which may override those); its stderr to `stderr`: the child
/// and its port.
pub fn start_binary(dir: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> (std::process::Child, u16) {
    start_binary_through(&[], dir, env, stderr)
}

/// [`start_binary`] through `wrapper` (a program and its arguments, the binary's path last:
/// `/bin/sh -c 'umask 000; exec "$0"'`, `setpriv ...`).
pub fn start_binary_through(
    wrapper: &[&str],
    dir: &std::path::Path,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> (std::process::Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let binary = env!("CARGO_BIN_EXE_sluice");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    let server = command
        .env_clear()
        .current_dir(dir)
        .env("SLUICE_DATA_DIR", dir.join("data"))
        .env("SLUICE_VALVES_DIR", dir.join("valves"))
        .env("SLUICE_HOST", "127.0.0.1")
        .env("SLUICE_PORT", port.to_string())
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .unwrap();
    (server, port)
}

/// [`start_binary`] with the key `sk-test` (`env` may override it).
fn start_server(dir: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> (std::process::Child, u16) {
    let env: Vec<(&str, &str)> = [("SLUICE_API_KEY", "sk-test")].into_iter().chain(env.iter().copied()).collect();
    start_binary(dir, &env, stderr)
}

/// Waits until something listens on `port`, at most until `deadline`; `said` names what
/// did not start.
pub fn wait_for_port(port: u16, deadline: std::time::Instant, said: &str) {
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "{said}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn in_30_s() -> std::time::Instant {
    std::time::Instant::now() + std::time::Duration::from_secs(30)
}

#[test]
fn help_and_version_answer_even_with_broken_settings() {
    let dir = tempfile::tempdir().unwrap();
    let broken = [("SLUICE_PORT", "not-a-port")];
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let (code, out, err) = sluice_with(dir.path(), args, &broken);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage: sluice [COMMAND]") && out.contains("healthcheck"), "{out}");
    }
    for args in [&["--version"][..], &["-V"], &["version"]] {
        let (code, out, _) = sluice_with(dir.path(), args, &broken);
        assert_eq!((code, out.trim()), (0, format!("sluice {}", env!("CARGO_PKG_VERSION")).as_str()));
    }
    let (code, out, _) = sluice_with(dir.path(), &["outbox", "--help"], &broken);
    assert_eq!(code, 0);
    assert!(out.contains("--requeue QUEUE"), "{out}");
    let (code, _, err) = sluice(dir.path(), &["chek"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `check`"), "{err}");
    // The bad setting is named with where it came from.
    let (code, _, err) = sluice_with(dir.path(), &["serve"], &broken);
    assert_eq!(code, 2);
    assert!(err.contains("port (environment variable SLUICE_PORT): expected"), "{err}");
}

#[test]
fn check_lists_every_problem_with_its_file_and_line_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let (code, out, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok     openpipe_reporting"), "{out}");

    std::fs::write(dir.path().join("valves/openai_responses.toml"), "# comment\nBASE_URL = 5\n").unwrap();
    std::fs::write(
        dir.path().join("valves/openpipe_reporting.toml"),
        "ENABLED = true\nTIMEOUT_SECONDS = 0\nCUSTOM_METADATA = '[1]'\n",
    )
    .unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("openai_responses.toml:2: BASE_URL: expected a string, got 5"), "{out}");
    assert!(out.contains("openpipe_reporting.toml:3: CUSTOM_METADATA: must be a JSON object"), "{out}");
    assert!(out.contains("openpipe_reporting.toml:2: TIMEOUT_SECONDS: must be between 1 and 120"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");

    std::fs::write(dir.path().join("valves/openpipe_reporting.toml"), "TIMEOUT_SECONDS = \n").unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains(": line 1, column 19: string values must be quoted"), "{out}");
    assert_eq!(out.matches("openpipe_reporting.toml").count(), 1, "the path once: {out}");

    // The parser's excerpt of the line is not shown: here it would be a key.
    std::fs::write(dir.path().join("valves/openpipe_reporting.toml"), "OPENPIPE_API_KEY = \"opk-unterminated-secret\n")
        .unwrap();
    let (code, out, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1);
    assert!(out.contains("openpipe_reporting.toml") && out.contains("line 1, column"), "{out}");
    assert!(!out.contains("opk-unterminated") && !err.contains("opk-unterminated"), "{out}{err}");
}

/// A settings file holding the key that others may read is said, without the key, and is not a
/// problem that fails the check; once it is 0600 nothing is said.
#[cfg(unix)]
#[test]
fn check_says_a_settings_file_with_a_key_that_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "api_key = \"k-readable-by-all-0123456789\"\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("warn   sluice.toml holds api_key and others on this machine may read it (mode 644)"),
        "{out}"
    );
    assert!(!out.contains("k-readable") && !err.contains("k-readable"), "{out}{err}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("warn"), "{out}");

    // A valves file too, as the server says at start (`check` did not; found by a red team).
    let valves = dir.path().join("valves/openpipe_reporting.toml");
    std::fs::write(&valves, "OPENPIPE_API_KEY = \"opk-readable-by-all-0123456789\"\n").unwrap();
    std::fs::set_permissions(&valves, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("openpipe_reporting.toml (mode 644) holds a key and others"), "{out}");
    assert!(!out.contains("opk-readable") && !err.contains("opk-readable"), "{out}{err}");
}

/// The WebAssembly pipelines added in the store are checked with the built-in ones: a variable
/// for one is not "unknown", and its valves file is read (it was neither).
#[test]
fn check_knows_the_added_webassembly_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    // A first start makes the store.
    let (mut server, port) = start_server(dir.path(), &[], Stdio::null());
    wait_for_port(port, in_30_s(), "the server did not start");
    let _ = server.kill();
    let _ = server.wait();
    let wasm = dir.path().join("my_filter.wasm");
    std::fs::write(&wasm, sluice_wasm::guests::filter("my_filter", sluice_wasm::guests::ECHO)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["pipeline", "add", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");

    // The store is only read: a mode the server would tighten, its content and its time stay.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("data/sluice.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let store = || {
        let db = dir.path().join("data/sluice.db");
        let meta = std::fs::metadata(&db).unwrap();
        (std::fs::read(&db).unwrap(), meta.permissions(), meta.modified().unwrap())
    };
    let before = store();
    let hosts = [("SLUICE_VALVES__MY_FILTER__ALLOWED_HOSTS", "[\"api.example.com\"]")];
    let (code, out, _) = sluice_with(dir.path(), &["check"], &hosts);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok     my_filter"), "{out}");
    assert!(before == store(), "check changed the store");
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    std::fs::write(dir.path().join("valves/my_filter.toml"), "ALLOWED_HOSTS = 5\n").unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("my_filter.toml:1: ALLOWED_HOSTS"), "{out}");
    // Switched off, they are not the server's: their variable is unknown again.
    std::fs::remove_file(dir.path().join("valves/my_filter.toml")).unwrap();
    let off = [hosts[0], ("SLUICE_WASM_PIPELINES", "false")];
    let (code, out, _) = sluice_with(dir.path(), &["check"], &off);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SLUICE_VALVES__MY_FILTER__ALLOWED_HOSTS"), "{out}");
}

/// A store URL the server would refuse is a problem for check too, whatever else is switched
/// off (it was read only to look for added pipelines).
#[test]
fn check_reads_the_store_url_as_the_server_does() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["mysql://u:s3cr3tXYZ@db/s", "postgres://user:pa55@w0rdQQ@db/s"] {
        for wasm in ["false", "true"] {
            let env = [("SLUICE_STORE_URL", url), ("SLUICE_WASM_PIPELINES", wasm)];
            let (code, out, _) = sluice_with(dir.path(), &["check"], &env);
            assert_eq!(code, 1, "{url}: {out}");
            assert!(out.contains("error  store_url:"), "{url}: {out}");
            // One cause, one problem: not also "the added pipelines could not be read".
            assert!(out.contains("sluice: 1 problem(s)"), "{url}: {out}");
            assert!(!out.contains("s3cr3tXYZ") && !out.contains("pa55") && !out.contains("w0rdQQ"), "{url}: {out}");
        }
    }
}

/// A PostgreSQL database the server has not used yet holds no added pipelines: check reads it
/// without creating the schema (it said `relation "kv" does not exist` and failed).
#[tokio::test]
async fn check_finds_nothing_added_in_a_database_not_used_yet() {
    let Some(url) = crate::store_contract::pg_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [("SLUICE_STORE_URL", url.as_str()), ("SLUICE_WASM_PIPELINES", "true")];
    let (code, out, _) = sluice_with(dir.path(), &["check"], &env);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("are valid"), "{out}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tables = client.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", &[]).await.unwrap();
    assert!(
        tables.is_empty(),
        "check created tables: {:?}",
        tables.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    );
}

/// A wrong setting does not hide the valves' problems: every problem at once.
#[test]
fn check_lists_the_valves_problems_beside_a_wrong_setting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let env = [("SLUICE_PORT", "abc"), ("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECONDS", "abc")];
    let (code, out, _) = sluice_with(dir.path(), &["check"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("port (environment variable SLUICE_PORT)"), "{out}");
    assert!(out.contains("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECONDS"), "{out}");
    assert!(out.contains("2 problem(s)"), "{out}");
}

#[test]
fn check_blames_variables_not_files_and_refuses_typos_in_their_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let env = [
        ("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECONDS", "0"),
        ("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECOND", "5"),
        ("SLUICE_VALVES__OPENPIPE__X", "1"),
    ];
    let (code, out, _) = sluice_with(dir.path(), &["check"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("SLUICE_VALVES__OPENPIPE_REPORTING__TIMEOUT_SECONDS: TIMEOUT_SECONDS: must be between 1 and 120"),
        "{out}"
    );
    assert!(!out.contains("openpipe_reporting.toml"), "the file set nothing: {out}");
    assert!(
        out.contains(
            "TIMEOUT_SECOND: openpipe_reporting has no valve TIMEOUT_SECOND (did you mean `TIMEOUT_SECONDS`?)"
        ),
        "{out}"
    );
    assert!(
        out.contains("SLUICE_VALVES__OPENPIPE__X: no pipeline OPENPIPE (did you mean `OPENPIPE_REPORTING`?)"),
        "{out}"
    );
    assert!(out.contains("3 problem(s)"), "{out}");
    // The server refuses them too.
    let (code, _, err) =
        sluice_with(dir.path(), &["serve"], &[("SLUICE_VALVES__OPENPIPE__X", "1"), ("SLUICE_PORT", "0")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("SLUICE_VALVES__OPENPIPE__X: no pipeline OPENPIPE"), "{err}");
}

#[test]
fn settings_shows_each_value_with_its_source_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sluice.toml"), "port = 9200\n").unwrap();
    let env = [("SLUICE_LOG_LEVEL", "warning"), ("SLUICE_API_KEY", "sk-never-shown"), ("SLUICE_LOG_FORMAT", "JSON")];
    let (code, out, err) = sluice_with(dir.path(), &["settings"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("port = 9200") && l.ends_with("# sluice.toml")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("log_level = \"warning\"") && l.ends_with("# environment variable SLUICE_LOG_LEVEL")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.starts_with("host = \"0.0.0.0\"") && l.ends_with("# default")), "{out}");
    assert!(out.contains("api_key") && !out.contains("sk-never-shown"), "{out}");
}

/// `RUST_LOG` wins over `log_level` when it is a filter: the settings say which is in effect.
#[test]
fn settings_say_whether_rust_log_filters_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let said = |rust_log: &str| {
        let (code, out, err) = sluice_with(dir.path(), &["settings"], &[("RUST_LOG", rust_log)]);
        assert_eq!(code, 0, "{err}");
        out.lines().filter(|l| l.contains("RUST_LOG")).map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(said("sluice=debug,warn"), ["# RUST_LOG=sluice=debug,warn filters the log in place of log_level"]);
    assert_eq!(said(" é=debug"), ["# RUST_LOG is set aside (it holds characters other than ASCII): log_level is used"]);
    assert_eq!(said("sluice=loud"), ["# RUST_LOG is set aside (it is not a valid filter): log_level is used"]);
    assert!(said("").is_empty());
    // Control characters (an escape a terminal would act on, a line break that made a target of
    // what follows) are not a filter.
    assert_eq!(
        said("sluice\u{1b}=debug"),
        ["# RUST_LOG is set aside (it holds control characters): log_level is used"]
    );
    assert_eq!(said("warning"), ["# RUST_LOG=warning filters the log in place of log_level, read as warn"]);
}

#[test]
fn outbox_names_its_queues_checks_its_arguments_and_shows_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = sluice(dir.path(), &["outbox"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store"), "{err}");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    drop(sluice::store::SqliteStore::open(&dir.path().join("data").join(sluice::store::STORE_FILE)).unwrap());
    let (code, out, _) = sluice(dir.path(), &["outbox"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("queue") && out.contains("openpipe_reporting"), "a fresh store names its queues: {out}");
    // An upstream's error text, kept for the operator, cannot drive the operator's terminal.
    report_in_store(dir.path(), "r1", Outcome::Failed("HTTP 500: \u{1b}]0;owned\u{7}\nforged line"));
    let (code, out, _) = sluice(dir.path(), &["outbox"]);
    assert_eq!(code, 0);
    assert!(out.contains("HTTP 500: \\u{1b}]0;owned\\u{7}\\nforged line"), "{out}");
    assert!(!out.contains('\u{1b}') && out.lines().count() == 2, "{out}");
    // Dead, as JSON lines: the text decodes as it was, no character a terminal acts on is raw.
    let error = "HTTP 400: \u{9b}2J\u{1b}]0;owned\u{7} \u{202e}txt\u{2028}forged";
    report_in_store(dir.path(), "r2", Outcome::Dead(error));
    let (code, out, _) = sluice(dir.path(), &["outbox", "--dead", "openpipe_reporting"]);
    assert_eq!(code, 0);
    assert!(!out.contains(|c: char| c.is_control() && c != '\n' || ('\u{2028}'..='\u{202e}').contains(&c)), "{out:?}");
    let dead: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!((dead["id"].as_str(), dead["last_error"].as_str()), (Some("r2"), Some(error)), "{out}");
    let (code, _, err) = sluice(dir.path(), &["outbox", "--frobnicate"]);
    assert_eq!(code, 2);
    assert!(err.contains("Usage: sluice outbox"), "{err}");
    for args in [&["outbox", "--dead", "nope"][..], &["outbox", "--requeue", "openpipe_reportng"]] {
        let (code, _, err) = sluice(dir.path(), args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("queues: openpipe_reporting"), "{err}");
    }
    let (code, _, err) = sluice(dir.path(), &["outbox", "--dead", "openpipe_reporting", "many"]);
    assert_eq!(code, 2);
    assert!(err.contains("LIMIT must be a positive number"), "{err}");
}

/// What became of the one report [`report_in_store`] queues.
enum Outcome<'a> {
    /// An attempt failed with this error; it is tried again later.
    Failed(&'a str),
    /// Given up on, with this reason.
    Dead(&'a str),
}

/// Queues the report `id` in the store under `dir`, then records `outcome` for it.
fn report_in_store(dir: &std::path::Path, id: &str, outcome: Outcome<'_>) {
    use sluice_sdk::outbox::{NewEntry, Outbox};
    let store = sluice::store::SqliteStore::open(&dir.join("data").join(sluice::store::STORE_FILE)).unwrap();
    let entry =
        NewEntry { id: id.into(), kind: "report".into(), target: "/report".into(), body: serde_json::json!({}) };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        store.enqueue("openpipe_reporting", vec![entry], vec![]).await.unwrap();
        match outcome {
            Outcome::Failed(error) => store.retry_later("openpipe_reporting", id, 0, Some(500), error).await.unwrap(),
            Outcome::Dead(reason) => store.dead_letter("openpipe_reporting", id, Some(400), reason).await.unwrap(),
        }
    });
}

#[test]
fn healthcheck_says_why_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let (code, _, err) = sluice_with(dir.path(), &["healthcheck"], &[("SLUICE_PORT", &port)]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing listens there"), "{err}");
}

#[test]
fn a_second_server_on_the_same_data_dir_stops_before_it_starts_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, port) = start_server(dir.path(), &[], Stdio::null());
    wait_for_port(port, in_30_s(), "the first server did not start");
    let (code, _, err) = sluice_with(dir.path(), &["serve"], &[("SLUICE_PORT", "0"), ("SLUICE_API_KEY", "sk-test")]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("another sluice is already running with the data directory"), "{err}");
    assert!(!err.contains("store opened"), "it stopped before opening the store: {err}");
}

/// A valves directory this process cannot write is found out at start (a container's uid
/// against a host directory), not at the first save from Open WebUI.
#[test]
fn an_unwritable_valves_directory_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let unwritable = [("SLUICE_VALVES_DIR", "/proc/self/no-valves-here")];
    let (mut server, port) = start_server(dir.path(), &unwritable, Stdio::piped());
    // The warning may be written after the port opens: read stderr until it is there (or the
    // server started and 30 s passed), then stop the server.
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = in_30_s();
    let mut log = String::new();
    while !log.contains("named volume") && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            log.push_str(&line);
            log.push('\n');
        }
    }
    wait_for_port(port, deadline, &format!("it did not start: {log}"));
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        log.contains("the valves directory /proc/self/no-valves-here is not writable by this process (uid"),
        "{log}"
    );
    assert!(log.contains("named volume"), "{log}");
}

/// What is not UTF-8 (a variable's value, an argument) and an output that cannot be written
/// get a clear word and an exit code, not a panic that quotes the value.
#[cfg(unix)]
#[test]
fn bytes_that_are_not_text_and_unwritable_output_are_said_not_panicked() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let dir = tempfile::tempdir().unwrap();
    let run = |args: Vec<OsString>, env: Vec<(&str, OsString)>, stdout: Stdio| {
        let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env_clear()
            .current_dir(dir.path())
            .envs(env)
            .stdout(stdout)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let key = OsString::from_vec(b"sk-secret-\xff".to_vec());
    let (code, out, err) = run(vec!["check".into()], vec![("SLUICE_API_KEY", key.clone())], Stdio::piped());
    assert_ne!(code, 101, "{out}{err}");
    assert!(!out.contains("sk-secret") && !err.contains("sk-secret") && !err.contains("panicked"), "{out}{err}");
    let (code, out, err) =
        run(vec!["check".into()], vec![("SLUICE_VALVES__OPENPIPE_REPORTING__OPENPIPE_API_KEY", key)], Stdio::piped());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("OPENPIPE_API_KEY: the value is not UTF-8 text (not shown)"), "{out}");
    assert!(!out.contains("sk-secret") && !err.contains("panicked"), "{out}{err}");

    let (code, _, err) =
        run(vec!["pipeline".into(), "add".into(), OsString::from_vec(b"f\xff.wasm".to_vec())], vec![], Stdio::piped());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not UTF-8 text") && !err.contains("panicked"), "{err}");

    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let (code, _, err) = run(vec!["settings".into()], vec![], Stdio::from(full));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the output could not be written") && !err.contains("panicked"), "{err}");
}

/// A log filter that hides errors does not hide why the server did not start.
#[test]
fn a_failed_start_is_said_whatever_the_log_filter() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data = file.to_str().unwrap();
    for env in
        [[("RUST_LOG", "off"), ("SLUICE_DATA_DIR", data)], [("SLUICE_LOG_LEVEL", "off"), ("SLUICE_DATA_DIR", data)]]
    {
        let (code, _, err) = sluice_with(dir.path(), &["serve"], &env);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("sluice could not start") && err.contains("a-file"), "{env:?}: {err}");
    }
}
