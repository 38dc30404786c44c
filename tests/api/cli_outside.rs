//! The command line against what others put in its way: text that would drive the operator's
//! terminal, a host setting that carries a port, a proxy, a settings file that is no file or
//! was planted by another user, a key typed into the wrong setting. Each found by a red team.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::cli::{sluice, sluice_with, start_binary, wait_for_port};

/// Nothing in `out` a terminal would obey: no ESC, CR, C1 control or reordering mark, and no
/// line that starts with `FORGED`.
fn inert(out: &str) {
    assert!(!out.contains(['\u{1b}', '\r', '\u{9b}', '\u{202e}', '\u{7}']), "{out:?}");
    assert!(!out.lines().any(|l| l.starts_with("FORGED")), "{out}");
}

const HOSTILE: &str = "x\u{1b}[2J\u{1b}]0;owned\u{7}\r\nFORGED: all verified\u{9b}8m\u{202e}\tcolumn";

#[test]
fn what_the_command_line_quotes_cannot_drive_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_binary(dir.path(), &[("SLUICE_API_KEY", "sk-test")], Stdio::null());
    wait_for_port(port, Instant::now() + Duration::from_secs(30), "the server did not start");
    let _ = server.kill();
    let _ = server.wait();
    // A pipeline's source is the name of the file it came from, shown by `pipeline list`.
    let wasm = dir.path().join(format!("{HOSTILE}.wasm"));
    std::fs::write(&wasm, sluice_wasm::guests::filter("hostile_name", sluice_wasm::guests::ECHO)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["pipeline", "add", wasm.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    inert(&out);
    let (code, out, err) = sluice(dir.path(), &["pipeline", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("hostile_name") && out.contains(r"\u{1b}[2J"), "{out}");
    inert(&out);
    // Its columns are still tab-separated, for `cut -f`; a tab in a value is escaped.
    assert_eq!(out.lines().next().unwrap().split('\t').count(), 4, "{out}");
    let (_, out, err) = sluice(dir.path(), &["pipeline", "remove", HOSTILE]);
    inert(&out);
    inert(&err);
    // A valve's name in a valves file, quoted by `check`.
    std::fs::create_dir_all(dir.path().join("valves")).unwrap();
    let key =
        HOSTILE.replace('\u{1b}', "\\u001b").replace('\u{7}', "\\u0007").replace('\r', "\\r").replace('\n', "\\n");
    std::fs::write(dir.path().join("valves/openpipe_reporting.toml"), format!("\"{key}\" = 1\n")).unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown valve"), "{out}");
    inert(&out);
}

#[test]
fn the_host_setting_cannot_carry_a_port_or_a_path() {
    let dir = tempfile::tempdir().unwrap();
    // Where `127.0.0.1:PORT#` would have sent the request, and the key.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let host = format!("{}#", elsewhere.local_addr().unwrap());
    for command in [&["settings"][..], &["openpipe", "dataset-add", "--chat", "c"]] {
        let (code, out, err) = sluice_with(dir.path(), command, &[("SLUICE_HOST", &host), ("SLUICE_API_KEY", "sk-k")]);
        assert_ne!(code, 0, "{command:?}: {out}{err}");
        assert!(err.contains("host") && err.contains("is not an IP address or a host name"), "{err}");
    }
    assert!(elsewhere.accept().is_err(), "a connection reached the other port");
    // An IPv6 address in brackets, as it worked before, still does.
    std::fs::write(dir.path().join("sluice.toml"), "host = \"[::1]\"\n").unwrap();
    let (code, out, err) = sluice(dir.path(), &["settings"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[::1]"), "{out}");
}

/// Our own server listening on every address passes the listener check for any address: a
/// `host` changed to another machine's must not then be handed the key (found by a reviewer).
#[test]
fn the_command_line_sends_the_key_to_this_machine_only() {
    let dir = tempfile::tempdir().unwrap();
    let everywhere = [("SLUICE_API_KEY", "sk-remote-key"), ("SLUICE_HOST", "0.0.0.0")];
    let (mut server, port) = start_binary(dir.path(), &everywhere, Stdio::null());
    wait_for_port(port, Instant::now() + Duration::from_secs(30), "the server did not start");
    let port = port.to_string();
    let elsewhere = [("SLUICE_HOST", "203.0.113.5"), ("SLUICE_PORT", port.as_str()), ("SLUICE_API_KEY", "sk-k")];
    let started = Instant::now();
    let (code, out, err) = sluice_with(dir.path(), &["openpipe", "dataset-add", "--chat", "c"], &elsewhere);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("203.0.113.5 is not an address of this machine"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "it tried to connect");
}

#[test]
fn the_command_line_sends_the_key_through_no_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port) = start_binary(dir.path(), &[("SLUICE_API_KEY", "sk-proxied-key")], Stdio::null());
    wait_for_port(port, Instant::now() + Duration::from_secs(30), "the server did not start");
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let port = port.to_string();
    let env = [
        ("SLUICE_HOST", "127.0.0.1"),
        ("SLUICE_PORT", port.as_str()),
        ("SLUICE_API_KEY", "sk-proxied-key"),
        ("http_proxy", proxy_url.as_str()),
        ("HTTP_PROXY", proxy_url.as_str()),
        ("ALL_PROXY", proxy_url.as_str()),
    ];
    let (code, out, err) = sluice_with(dir.path(), &["openpipe", "dataset-add", "--chat", "c-none"], &env);
    let _ = server.kill();
    let _ = server.wait();
    // The server itself answered (no turn of that chat is kept), not the proxy.
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("sluice: 400 no dataset"), "{err}");
    match proxy.accept() {
        Ok((mut stream, _)) => {
            let mut seen = String::new();
            let _ = stream.read_to_string(&mut seen);
            panic!("the proxy was called: {seen}");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

#[test]
fn a_settings_file_that_is_no_file_or_too_large_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    assert!(std::process::Command::new("mkfifo").arg(&file).status().unwrap().success());
    let started = Instant::now();
    let (code, _, err) = sluice(dir.path(), &["settings"]);
    assert_ne!(code, 0);
    assert!(err.contains("sluice.toml") && err.contains("not a regular file"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "a FIFO held the command");
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, format!("# {}\n", "x".repeat(2 << 20))).unwrap();
    let (code, out, _) = sluice(dir.path(), &["check"]);
    assert_ne!(code, 0);
    assert!(out.contains("sluice.toml: cannot be read: it is") && out.contains("at most 1048576"), "{out}");
}

#[test]
fn a_settings_file_someone_else_may_have_put_there_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sluice.toml");
    std::fs::write(&file, "port = 9300\n").unwrap();
    // Anyone may change it: read, and said (a Windows drive mounted into Docker shows 0777).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["settings"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("9300"), "{out}");
    let (_, out, _) = sluice(dir.path(), &["check"]);
    assert!(out.contains("may be changed by anyone on this machine (mode 666)"), "{out}");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: a file of another user's needs root");
        return;
    }
    // Another user's `sluice.toml` found in a directory anyone may write in (`/tmp`) is
    // refused; in a directory of root's (a mounted ConfigMap), or named in SLUICE_CONFIG, it is
    // the operator's choice.
    std::os::unix::fs::chown(&file, Some(2001), Some(2001)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, _, err) = sluice(dir.path(), &["settings"]);
    assert_ne!(code, 0);
    assert!(err.contains("sluice.toml: not read: it belongs to user 2001"), "{err}");
    let named = [("SLUICE_CONFIG", file.to_str().unwrap())];
    let (code, out, err) = sluice_with(dir.path(), &["settings"], &named);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("9300"), "{out}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, out, err) = sluice(dir.path(), &["settings"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("9300"), "{out}");
}

#[test]
fn a_key_typed_into_the_wrong_setting_is_not_quoted_back() {
    let dir = tempfile::tempdir().unwrap();
    const KEY: &str = "sk-supersecret-AAAA1111BBBB2222";
    for variable in ["SLUICE_PORT", "SLUICE_WORKERS", "SLUICE_LOG_FORMAT", "SLUICE_WASM_PIPELINES"] {
        let (code, out, err) = sluice_with(dir.path(), &["settings"], &[(variable, KEY)]);
        assert_ne!(code, 0, "{variable}");
        assert!(!out.contains("AAAA1111") && !err.contains("AAAA1111"), "{variable}: {out}{err}");
        assert!(err.contains("looks like a key (not shown)") || err.contains("is not one of"), "{variable}: {err}");
    }
}
