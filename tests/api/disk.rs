//! What sluice keeps on disk and in its process, against another user of the machine: what it
//! makes is its own user's whatever the umask, links and other users' files planted in its
//! data directory are refused rather than followed, a valves file that is no file or is huge is
//! refused at once, and its memory is closed to its user's other processes. Each found by a red
//! team. Some need root (to act as another user) and say so when skipped.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::{start_binary_through, wait_for_port};

const KEY: (&str, &str) = ("SLUICE_API_KEY", "sk-disk-test-key");
/// A user sluice is not (root's tests act as it).
const OTHER_UID: u32 = 2001;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Whether this test runs as root, which acting as another user needs; said when it is skipped.
fn as_root(acting: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: {acting} needs root");
    }
    root
}

/// Waits for `child` to exit within 20 s: what it printed (stdout if piped, then stderr). A
/// server that starts instead fails.
fn refusal(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut said = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut said).unwrap();
            }
            child.stderr.take().unwrap().read_to_string(&mut said).unwrap();
            assert!(!status.success(), "exited with success:\n{said}");
            return said;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice neither refused nor ended within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn serve_refused(dir: &Path, env: &[(&str, &str)]) -> String {
    refusal(start_binary_through(&[], dir, env, Stdio::piped()).0)
}

/// Up, answering `GET /`.
async fn answering(port: u16) {
    wait_for_port(port, Instant::now() + Duration::from_secs(30), "sluice did not listen");
    for _ in 0..600 {
        if reqwest::get(format!("http://127.0.0.1:{port}/")).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sluice did not answer GET /");
}

#[tokio::test]
async fn what_sluice_makes_is_its_user_s_alone_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // umask 000: directories made with the umask's mode were open to all until tightened, and
    // the data directory so made was then refused as shared; the valves directory stayed 0777.
    let umask_000 = ["/bin/sh", "-c", "umask 000; exec \"$0\""];
    let (mut child, port) = start_binary_through(&umask_000, dir.path(), &[], Stdio::null());
    answering(port).await;
    let data = dir.path().join("data");
    let key = std::fs::read_to_string(data.join("api_key")).unwrap();
    let update = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/openpipe_reporting/valves/update"))
        .bearer_auth(key.trim())
        .json(&json!({"OPENPIPE_API_KEY": "opk-disk-test-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), 200);
    for (path, expected) in [
        (data.clone(), 0o700),
        (dir.path().join("valves"), 0o700),
        (data.join("wasm-cache"), 0o700),
        (data.join("api_key"), 0o600),
        (data.join("sluice.db"), 0o600),
        (dir.path().join("valves/openpipe_reporting.toml"), 0o600),
    ] {
        assert_eq!(mode(&path), expected, "{}", path.display());
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn links_planted_in_the_data_directory_are_not_followed() {
    for (name, env) in [("sluice.db", &[KEY][..]), ("api_key", &[]), ("sluice.lock", &[KEY])] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        // Another user's file, which the link would have had sluice use (and tighten, as root).
        let theirs = dir.path().join("theirs");
        std::fs::write(&theirs, "their-chosen-key").unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&theirs, data.join(name)).unwrap();
        let said = serve_refused(dir.path(), env);
        assert!(said.contains(name) && said.contains("symbolic link"), "{name}:\n{said}");
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "their-chosen-key", "{name}");
        assert_eq!(mode(&theirs), 0o644, "{name}: what the link names was changed");
        if name == "api_key" {
            // The command line that sends the key reads it the same way.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
                .args(["openpipe", "dataset-add", "--chat", "c-1"])
                .env_clear()
                .env("SLUICE_DATA_DIR", &data)
                .env("SLUICE_PORT", "9")
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{said}");
            assert!(said.contains("symbolic link") && !said.contains("their-chosen-key"), "{said}");
        }
    }
    // Directories too: a `builds` link had the directories it named emptied at start, and a
    // `wasm-cache` link had its target re-moded and used for native code.
    for name in ["builds", "wasm-cache"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let theirs = dir.path().join("theirs");
        let important = theirs.join(".tmp-important");
        std::fs::create_dir_all(&important).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&important).unwrap().set_modified(long_ago).unwrap();
        std::os::unix::fs::symlink(&theirs, data.join(name)).unwrap();
        let said = serve_refused(dir.path(), &[KEY]);
        assert!(said.contains(name) && said.contains("symbolic link"), "{name}:\n{said}");
        assert!(important.exists(), "{name}: what the link names was emptied");
        assert_eq!(mode(&theirs), 0o755, "{name}: what the link names was changed");
    }
}

#[test]
fn another_user_s_data_directory_or_store_is_refused() {
    if !as_root("acting as another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let said = serve_refused(dir.path(), &[KEY]);
    assert!(said.contains(&format!("belongs to user {OTHER_UID}")), "{said}");

    // Entries another user put there while the directory was open to them: the store, and a
    // rollback journal SQLite would have applied to it on open.
    std::os::unix::fs::chown(&data, Some(0), Some(0)).unwrap();
    for name in ["sluice.db", "sluice.db-journal"] {
        std::fs::write(data.join(name), "").unwrap();
        std::os::unix::fs::chown(data.join(name), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
        let said = serve_refused(dir.path(), &[KEY]);
        assert!(said.contains(name) && said.contains(&format!("belongs to user {OTHER_UID}")), "{said}");
        std::fs::remove_file(data.join(name)).unwrap();
    }
    // A command beside the server opens the store itself: refused too, and told whom to run as.
    std::fs::write(data.join("sluice.db"), "").unwrap();
    std::fs::write(data.join("sluice.db-journal"), "").unwrap();
    std::os::unix::fs::chown(data.join("sluice.db-journal"), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let (code, out, err) = crate::cli::sluice(dir.path(), &["outbox"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("sluice.db-journal") && err.contains(&format!("sudo -u '#{OTHER_UID}'")), "{err}");
}

#[test]
fn a_valves_file_that_is_no_file_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let valves = dir.path().join("valves");
    std::fs::create_dir(&valves).unwrap();
    let file = valves.join("openpipe_reporting.toml");
    // Read, a FIFO waited for a writer forever: `check` hung, and so did the server's start.
    assert!(std::process::Command::new("mkfifo").arg(&file).status().unwrap().success());
    let check = |dir: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("check")
            .env_clear()
            .env("SLUICE_DATA_DIR", dir.join("data"))
            .env("SLUICE_VALVES_DIR", dir.join("valves"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let said = refusal(check(dir.path()));
    assert!(said.contains("openpipe_reporting.toml") && said.contains("not a regular file"), "{said}");
    let said = serve_refused(dir.path(), &[KEY]);
    assert!(said.contains("not a regular file"), "{said}");

    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, "#".repeat(2 << 20)).unwrap();
    let said = refusal(check(dir.path()));
    assert!(said.contains("a valves file may have at most 1048576"), "{said}");
}

#[tokio::test]
async fn the_server_s_memory_is_closed_to_its_user_s_other_processes() {
    if !as_root("running sluice as another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _) = serving_as_other(dir.path()).await;
    // A process that can be dumped has its /proc files owned by its user, who could then read
    // the keys in its environment and memory; sealed, they are root's.
    let environ = std::fs::metadata(format!("/proc/{}/environ", child.id())).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.contains(&format!("Uid:\t{OTHER_UID}")), "not running as {OTHER_UID}:\n{status}");
    assert_eq!(environ.uid(), 0, "/proc/PID/environ belongs to the server's user");
}

/// sluice run as [`OTHER_UID`] in `dir`, answering; root's tests only.
async fn serving_as_other(dir: &Path) -> (Child, u16) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for sub in ["data", "valves"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
        std::os::unix::fs::chown(dir.join(sub), Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    }
    let (uid, gid) = (format!("--reuid={OTHER_UID}"), format!("--regid={OTHER_UID}"));
    let as_other = ["/usr/bin/setpriv", &uid, &gid, "--clear-groups"];
    let (child, port) = start_binary_through(&as_other, dir, &[KEY], Stdio::null());
    answering(port).await;
    (child, port)
}

/// While sluice is stopped any user may listen on its port: `sluice openpipe` sends the key
/// only to a listener of its own user or root's (found by a review of the command line).
#[tokio::test]
async fn the_command_line_does_not_send_the_key_to_another_user_s_listener() {
    if !as_root("listening as another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut other, port) = serving_as_other(dir.path()).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["openpipe", "dataset-add", "--chat", "c-1"])
        .env_clear()
        .env("SLUICE_PORT", port.to_string())
        .env("SLUICE_API_KEY", "sk-cli-key-for-the-real-server")
        .output()
        .unwrap();
    let _ = other.kill();
    let _ = other.wait();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&format!("belongs to user {OTHER_UID}")) && said.contains("not sent"), "{said}");
    assert!(!said.contains("sk-cli-key"), "{said}");
}

/// A volume mounted as the data directory has a `lost+found` of root's: said, not refused
/// (only what sluice keeps there must be its own; found by a reviewer).
#[tokio::test]
async fn another_user_s_entry_sluice_does_not_use_is_only_said() {
    if !as_root("acting as another user") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let found = dir.path().join("data/lost+found");
    std::fs::create_dir_all(&found).unwrap();
    std::os::unix::fs::chown(&found, Some(OTHER_UID), Some(OTHER_UID)).unwrap();
    let (mut child, port) = start_binary_through(&[], dir.path(), &[KEY], Stdio::piped());
    answering(port).await;
    let _ = child.kill();
    let _ = child.wait();
    let mut said = String::new();
    child.stderr.take().unwrap().read_to_string(&mut said).unwrap();
    assert!(said.contains("lost+found") && said.contains(&format!("belongs to user {OTHER_UID}")), "{said}");
}
