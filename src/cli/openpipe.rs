//! `sluice openpipe dataset-add`: the reference's "add this chat to a dataset" button, for an
//! operator at the server (docs/reporting.md §11.3). It asks the running server, which owns
//! the outbox: `POST /openpipe_reporting/actions/dataset_add`.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::Settings;

pub const USAGE: &str = "\
Usage: sluice openpipe dataset-add --chat ID [--message ID] [--dataset NAME] [--split TRAIN|TEST]

Adds the reported turns of a chat (or one turn) to an OpenPipe dataset, through the running
server on this machine (its port and key from the settings). Needs DATASET_TURNS_KEEP_DAYS > 0
in the openpipe_reporting valves; the dataset defaults to DEFAULT_DATASET_NAME. A turn already
added to that dataset is not added again.";

pub fn parse(args: &[&str]) -> Result<Value, String> {
    let ["dataset-add", rest @ ..] = args else {
        return Err(format!("unknown openpipe command {:?}\n{USAGE}", args.join(" ")));
    };
    let mut body = Map::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let key = match *flag {
            "--chat" => "chat_id",
            "--message" => "message_id",
            "--dataset" => "dataset",
            "--split" => "split",
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        };
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let value = if key == "split" { value.to_ascii_uppercase() } else { value.to_string() };
        body.insert(key.into(), Value::String(value));
    }
    if !body.contains_key("chat_id") {
        return Err(format!("--chat is required\n{USAGE}"));
    }
    Ok(Value::Object(body))
}

/// The key the server made (`data/api_key`), read only as this user's own regular file: a
/// link planted there would choose which file's text is sent.
fn read_key_file(settings: &Settings) -> std::io::Result<String> {
    let path = settings.data_dir.join(crate::auth::KEY_FILE);
    if !crate::private::own_file(&path)? {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{}: no such file", path.display())));
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

pub async fn run(settings: &Settings, body: Value) -> ExitCode {
    let key = match &settings.api_key {
        Some(k) => k.expose().to_string(),
        None => match read_key_file(settings) {
            Ok(k) => k,
            Err(e) => {
                complain!("sluice: no API key configured and none in the data dir ({e})");
                return ExitCode::FAILURE;
            }
        },
    };
    // Found once: the address whose listener is checked is the one called.
    let Some(ip) = super::local_ip(settings) else {
        complain!("sluice: the host {:?} does not resolve to an address", settings.host);
        return ExitCode::FAILURE;
    };
    let url = super::url_at(Some(ip), settings, "/openpipe_reporting/actions/dataset_add");
    // Only to this machine: a wildcard listener of ours would pass the check below for any
    // address, and a `host` changed to another machine's would then be handed the key (found
    // by a reviewer).
    if !super::listener::is_local(ip) {
        complain!("sluice: {url}: {ip} is not an address of this machine: the API key is not sent there");
        return ExitCode::FAILURE;
    }
    let own_uid = rustix::process::geteuid().as_raw();
    if let Err(why) = super::listener::check(ip, settings.port, own_uid) {
        complain!("sluice: {url}: {why}");
        return ExitCode::FAILURE;
    }
    let client = match super::local_client(Duration::from_secs(30), "sluice") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let answer = match client.post(&url).bearer_auth(&key).json(&body).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => {
            complain!("sluice: no server answers at {url}: start it, or set SLUICE_PORT to its port");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            complain!("sluice: {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = answer.status();
    let reply: Value = answer.json().await.unwrap_or(json!({}));
    if status.is_success() {
        say!(
            "{} entr{} queued for dataset {}; {} already added",
            reply["queued"],
            if reply["queued"] == 1 { "y" } else { "ies" },
            reply["dataset"],
            reply["already_added"]
        );
        ExitCode::SUCCESS
    } else {
        complain!("sluice: {} {}", status.as_u16(), reply["detail"].as_str().unwrap_or("(no detail)"));
        ExitCode::FAILURE
    }
}
