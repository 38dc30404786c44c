//! The command line. The command is read before the settings, so `sluice --help` works while
//! a setting is wrong; every mistake exits 2 with what to type instead.

/// A line of a command's output on stdout ([`output::line`]): unlike `println!`, a closed pipe
/// or a full disk does not panic.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}

/// `eprintln!` for the commands: what it quotes is escaped ([`output::complain`]).
macro_rules! complain {
    ($($arg:tt)*) => {
        $crate::cli::output::complain(format_args!($($arg)*))
    };
}

mod check;
mod healthcheck;
mod listener;
mod openpipe;
mod outbox;
mod output;
mod pipeline;
mod show_settings;

use std::process::ExitCode;

use crate::config::Settings;
use crate::registry;
use crate::startup::Application;
use crate::telemetry;
use crate::valves::ValvesEnv;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const HELP: &str = "\
Usage: sluice [COMMAND]

Commands:
  serve         run the server (the default)
  check         validate the settings, every valves file and the SLUICE_VALVES__* variables
  settings      print every setting in effect and where it came from (secrets hidden)
  outbox        show the durable delivery queues, their dead letters, and requeue them
  openpipe      `openpipe dataset-add --chat ID ...`: add a chat's reported turns to a dataset
  pipeline      `pipeline add FILE | list | remove ID`: the added WebAssembly pipelines
  healthcheck   exit 0 when the server on this machine answers GET / (container health checks)
  help          this text; `sluice help COMMAND` (or `sluice COMMAND --help`) for one command
  version       print the version

Settings come from built-in defaults, then sluice.toml (or the file SLUICE_CONFIG names), then
SLUICE_* environment variables; valves from valves/<pipeline>.toml and SLUICE_VALVES__<PIPELINE>__<VALVE>.
See README.md.";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Command {
    Serve,
    Check,
    Settings,
    Outbox(outbox::Action),
    Openpipe(serde_json::Value),
    Pipeline(pipeline::Action),
    Healthcheck,
    Help(Option<&'static str>),
    Version,
}

const COMMANDS: [&str; 9] =
    ["serve", "check", "settings", "outbox", "openpipe", "pipeline", "healthcheck", "help", "version"];

/// The usage of one command.
fn usage(command: &str) -> &'static str {
    match command {
        "serve" => "Usage: sluice [serve]\n\nRuns the server until SIGTERM or SIGINT.",
        "check" => {
            "Usage: sluice check\n\nValidates the settings, every valves file and the SLUICE_VALVES__* variables \
             as the server would at start-up, and prints each problem as `file:line: VALVE: reason` or \
             `VARIABLE: VALVE: reason`. Exit 0 when all is valid, 1 otherwise."
        }
        "settings" => {
            "Usage: sluice settings\n\nPrints every setting in effect, as `key = value  # source`, where the source \
             is the default, the file, or the environment variable. The API key and store URL are never shown."
        }
        "outbox" => outbox::USAGE,
        "openpipe" => openpipe::USAGE,
        "pipeline" => pipeline::USAGE,
        "healthcheck" => {
            "Usage: sluice healthcheck\n\nAsks GET / of the server at the configured host (127.0.0.1 when it listens on \
             every address) and port; exit 0 when it \
             answers 200, 1 (with the reason) otherwise."
        }
        "version" => "Usage: sluice version\n\nPrints the version.",
        _ => HELP,
    }
}

fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let wants_help = |rest: &[&str]| rest.iter().any(|a| matches!(*a, "-h" | "--help"));
    let name = match args.first() {
        None => return Ok(Command::Serve),
        Some(&("-h" | "--help")) => return Ok(Command::Help(None)),
        Some(&("-V" | "--version")) => return Ok(Command::Version),
        Some(name) => *name,
    };
    let Some(known) = COMMANDS.iter().copied().find(|c| *c == name) else {
        let hint = crate::suggest::hint(name, COMMANDS);
        return Err(format!("unknown command {name:?}{hint}; `sluice --help` lists the commands"));
    };
    let rest = &args[1..];
    if wants_help(rest) {
        return Ok(Command::Help(Some(known)));
    }
    let no_arguments = |command: Command| {
        if rest.is_empty() {
            Ok(command)
        } else {
            Err(format!("`sluice {known}` takes no arguments, got {:?}; see `sluice {known} --help`", rest.join(" ")))
        }
    };
    match known {
        "serve" => no_arguments(Command::Serve),
        "check" => no_arguments(Command::Check),
        "settings" => no_arguments(Command::Settings),
        "healthcheck" => no_arguments(Command::Healthcheck),
        "version" => no_arguments(Command::Version),
        "outbox" => outbox::parse(rest).map(Command::Outbox),
        "openpipe" => openpipe::parse(rest).map(Command::Openpipe),
        "pipeline" => pipeline::parse(rest).map(Command::Pipeline),
        _ => match rest {
            [] => Ok(Command::Help(None)),
            [command] => match COMMANDS.iter().copied().find(|c| c == command) {
                Some(c) => Ok(Command::Help(Some(c))),
                None => Err(format!("no command {command:?}{}", crate::suggest::hint(command, COMMANDS))),
            },
            _ => Err("usage: sluice help [COMMAND]".into()),
        },
    }
}

/// Runs the command line; the process exits with what this returns.
pub async fn run(args: Vec<String>) -> ExitCode {
    output::finish(run_command(args).await)
}

async fn run_command(args: Vec<String>) -> ExitCode {
    let command = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            complain!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help(command) => {
            say!("sluice {VERSION}: a server for Open WebUI's Pipelines protocol");
            say!("");
            output::lines(command.map(usage).unwrap_or(HELP));
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            say!("sluice {VERSION}");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let figment = Settings::figment();
    let settings = match Settings::from_figment(figment.clone()) {
        Ok(s) => s,
        // The valves are checked too (in the directory the settings name, if they name one
        // that can be read): every problem at once.
        Err(e) if command == Command::Check => {
            let valves_dir = figment.extract_inner("valves_dir").unwrap_or_else(|_| Settings::default().valves_dir);
            return check::run(None, &valves_dir, e.problems()).await;
        }
        Err(e) => {
            complain!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Serve => serve(settings).await,
        Command::Check => check::run(Some(&settings), &settings.valves_dir, &[]).await,
        Command::Settings => show_settings::run(&figment, &settings),
        Command::Outbox(action) => outbox::run(&settings, action).await,
        Command::Openpipe(body) => openpipe::run(&settings, body).await,
        Command::Pipeline(action) => pipeline::run(&settings, action).await,
        Command::Healthcheck => healthcheck::run(&settings).await,
        Command::Help(_) | Command::Version => unreachable!("answered above"),
    }
}

async fn serve(settings: Settings) -> ExitCode {
    let _log = telemetry::init(&settings.log_level, settings.log_format);
    telemetry::log_panics();
    crate::private::seal_process();
    if let Some(warning) = crate::config::settings_file_warning() {
        tracing::warn!("{warning}");
    }
    let app = match Application::build(settings, registry::builtin(), ValvesEnv::Process).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "sluice could not start");
            // A filter that hides errors (`off`) must not hide why the process ends.
            if !tracing::enabled!(tracing::Level::ERROR) {
                complain!("sluice could not start: {e}");
            }
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server error");
            ExitCode::FAILURE
        }
    }
}

/// The server on this machine at `path`: on the address it listens on, or on the loopback
/// when it listens on every address (`0.0.0.0`, `::`).
fn local_url(settings: &Settings, path: &str) -> String {
    url_at(local_ip(settings), settings, path)
}

/// [`local_url`] at an address already found ([`local_ip`]).
fn url_at(ip: Option<std::net::IpAddr>, settings: &Settings, path: &str) -> String {
    let host = match ip {
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(ip) => ip.to_string(),
        None => settings.host.trim().to_string(),
    };
    format!("http://{host}:{}{path}", settings.port)
}

/// The address a command reaches the server at: its listening address, loopback for a
/// wildcard or none, or of a host name's addresses the first where this user's (or root's)
/// server listens on the port, else the first something listens at, else the first; resolved
/// once, so the address checked is the one called. `None` for a name that does not resolve.
fn local_ip(settings: &Settings) -> Option<std::net::IpAddr> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
    let host = settings.host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Ok(IpAddr::V6(ip)) if ip.is_unspecified() => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        Ok(ip) => Some(ip),
        Err(_) if bare.is_empty() => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Err(_) => {
            let found: Vec<IpAddr> = (bare, settings.port).to_socket_addrs().ok()?.map(|a| a.ip()).collect();
            listener::pick(&found, settings.port, rustix::process::geteuid().as_raw())
        }
    }
}

/// Whether the embedded store is there for a command to read (the server creates it); said
/// when not, with the real cause when it cannot be looked at.
fn store_is_there(settings: &Settings) -> Result<(), String> {
    match store_exists(settings)? {
        true => Ok(()),
        false => Err(format!(
            "no store at {} yet: the server creates it on first start (start it once, then run this again)",
            settings.data_dir.join(crate::store::STORE_FILE).display()
        )),
    }
}

/// Whether there is a store to read: PostgreSQL is always there to ask; the embedded file only
/// once the server has made it. The real cause when it cannot be looked at.
fn store_exists(settings: &Settings) -> Result<bool, String> {
    if settings.store_url.is_some() {
        return Ok(true);
    }
    let path = settings.data_dir.join(crate::store::STORE_FILE);
    match std::fs::metadata(&path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The HTTP client a command talks to the server on this machine with, each request bounded by
/// `timeout`, never through a proxy (`http_proxy` would have been handed the key); a client
/// that cannot be built is said (after `who`, the command's name) and fails the command.
fn local_client(timeout: std::time::Duration, who: &str) -> Result<reqwest::Client, ExitCode> {
    reqwest::Client::builder().timeout(timeout).no_proxy().build().map_err(|e| {
        complain!("{who}: {e}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn every_way_of_asking_for_help_or_the_version_works() {
        assert_eq!(p(&[]), Ok(Command::Serve));
        for help in [&["-h"][..], &["--help"], &["help"]] {
            assert_eq!(p(help), Ok(Command::Help(None)));
        }
        assert_eq!(p(&["help", "outbox"]), Ok(Command::Help(Some("outbox"))));
        assert_eq!(p(&["outbox", "--help"]), Ok(Command::Help(Some("outbox"))));
        assert_eq!(p(&["check", "-h"]), Ok(Command::Help(Some("check"))));
        for version in [&["-V"][..], &["--version"], &["version"]] {
            assert_eq!(p(version), Ok(Command::Version));
        }
        assert!(p(&["chek"]).unwrap_err().contains("did you mean `check`"));
        assert!(p(&["check", "extra"]).unwrap_err().contains("takes no arguments"));
    }

    #[test]
    fn commands_reach_the_server_where_it_listens() {
        let at = |host: &str| local_url(&Settings { host: host.into(), port: 9, ..Settings::default() }, "/");
        assert_eq!(at("0.0.0.0"), "http://127.0.0.1:9/");
        assert_eq!(at("::"), "http://[::1]:9/");
        assert_eq!(at("::1"), "http://[::1]:9/");
        assert_eq!(at("127.0.0.2"), "http://127.0.0.2:9/");
        // A name is resolved once, and the address called is the one its listener is checked at.
        assert!(["http://127.0.0.1:9/", "http://[::1]:9/"].contains(&at("localhost").as_str()), "{}", at("localhost"));
    }
}
