//! Request figures measured with wrk, a load generator that costs far less per request than
//! the servers it drives (the reqwest driver of the other groups costs more than sluice does,
//! which pulls every ratio towards 1). The floor and sluice are measured back to back with the
//! same settings, and each server's CPU time per request is read from /proc: shared machines
//! disturb it less than they disturb throughput.

use std::process::Command;
use std::time::Duration;

/// Whether wrk is installed (`apt-get install wrk`).
pub fn available() -> bool {
    Command::new("wrk").arg("--version").output().is_ok()
}

/// One wrk run: requests per second, latency percentiles in ms, and the server's CPU in
/// microseconds per request.
pub struct Figures {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub cpu_us_per_req: f64,
}

/// CPU time (user + system) of `pid`, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn millis(value: &str) -> f64 {
    let (number, factor) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        (value, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

/// Drives `url` with `conns` connections for `seconds` from one wrk thread; `body` makes it a
/// POST of that JSON file.
pub fn run(url: &str, key: &str, body: Option<&std::path::Path>, conns: usize, seconds: u64, pid: u32) -> Figures {
    let script = tempfile::NamedTempFile::new().unwrap();
    let lua = match body {
        Some(path) => format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
            path.display()
        ),
        None => String::new(),
    };
    std::fs::write(script.path(), lua).unwrap();
    let before = cpu_secs(pid);
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{conns}"), &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script.path())
        .args(["-H", &format!("Authorization: Bearer {key}"), url])
        .output()
        .expect("wrk runs");
    let cpu = cpu_secs(pid) - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<&str> {
        text.lines().map(str::trim).find_map(|l| l.strip_prefix(label)).and_then(|r| r.split_whitespace().next())
    };
    let requests: f64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let errors = text.lines().any(|l| l.contains("Non-2xx") || l.contains("Socket errors"));
    if errors {
        eprintln!("wrk reported errors for {url}:\n{text}");
    }
    Figures {
        rps: field("Requests/sec:").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        p50_ms: field("50%").map(millis).unwrap_or(f64::NAN),
        p99_ms: field("99%").map(millis).unwrap_or(f64::NAN),
        cpu_us_per_req: if requests > 0.0 { cpu * 1e6 / requests } else { f64::NAN },
    }
}

/// A server measured by [`compare`]: its name in the lines, its address and its process.
pub struct Server<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub pid: u32,
}

/// sluice, the floor and the stack's floors ([`crate::actix_floor`]), back to back, and how
/// sluice compares with each.
pub fn compare(name: &str, servers: &[Server<'_>], key: &str, body: Option<&std::path::Path>, conns: usize) {
    const SECONDS: u64 = 5;
    let mut measured = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        measured.push(run(server.url, key, body, conns, SECONDS, server.pid));
    }
    for (server, f) in servers.iter().zip(&measured) {
        println!(
            "bench=wrk name={name} conns={conns} server={} rps={:.0} p50_ms={:.3} p99_ms={:.3} cpu_us_per_req={:.1}",
            server.name, f.rps, f.p50_ms, f.p99_ms, f.cpu_us_per_req
        );
    }
    let (ours, others) = measured.split_first().expect("sluice is measured first");
    for (server, least) in servers[1..].iter().zip(others) {
        let over = server.name;
        println!(
            "bench=wrk_vs_{over} name={name} conns={conns} rps_sluice_over_{over}={:.2} cpu_sluice_over_{over}={:.2}",
            ours.rps / least.rps,
            ours.cpu_us_per_req / least.cpu_us_per_req
        );
    }
}

/// The wrk group: `/v1/models`, a 2 KB and a 200 KB inlet of the scripted pipe (a filter
/// inlet that changes nothing), each at two connection counts; sluice first, then the others
/// given as (name, base URL, pid).
pub fn group(servers: &[(&str, &str, u32)], key: &str, small: &[u8], large: &[u8]) {
    if !available() {
        println!("bench=wrk skipped: wrk is not installed (apt-get install wrk)");
        return;
    }
    let small_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(small_file.path(), small).unwrap();
    let large_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(large_file.path(), large).unwrap();
    for (name, path, body, conns) in [
        ("models", "/v1/models", None, [1usize, 32]),
        ("inlet_2kb", "/bench_pipe/filter/inlet", Some(small_file.path()), [1, 32]),
        ("inlet_200kb", "/bench_pipe/filter/inlet", Some(large_file.path()), [1, 8]),
    ] {
        for c in conns {
            let urls: Vec<String> = servers.iter().map(|(_, base, _)| format!("{base}{path}")).collect();
            let measured: Vec<Server<'_>> = servers
                .iter()
                .zip(&urls)
                .map(|((server, _, pid), url)| Server { name: server, url, pid: *pid })
                .collect();
            compare(name, &measured, key, body, c);
        }
    }
}
