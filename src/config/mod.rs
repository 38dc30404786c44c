//! Settings: built-in defaults < `sluice.toml` (or the file named by `SLUICE_CONFIG`) <
//! `SLUICE_*` environment variables. `PIPELINES_API_KEY` is read too, for drop-in use.
//! Every mistake is refused at start-up with the key, where it came from, and a hint.

mod explain;
mod key_variable;
mod log_level;
mod readable_file;
mod settings_file;

pub use explain::{effective, Effective};
pub use log_level::normalize as normalize_log_level;
pub use log_level::with_tracing_names as rust_log_with_tracing_names;

use std::path::PathBuf;

use figment::providers::{Env, Serialized};
use figment::Figment;
use key_variable::KeyVariable;
use serde::{Deserialize, Serialize};
use sluice_sdk::Secret;

/// The key the Python reference uses when none is set. Accepted only on explicit request.
pub const REFERENCE_DEFAULT_KEY: &str = "0p3n-w3bu!";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Where `<pipeline id>.toml` valves files live.
    pub valves_dir: PathBuf,
    /// Where sluice keeps its own state (the generated API key, pipeline data).
    pub data_dir: PathBuf,
    /// The bearer key. Unset: a random key is generated once and kept in the data dir.
    #[serde(skip_serializing)]
    pub api_key: Option<Secret>,
    /// Use the Python reference's well-known key when no key is set. Insecure; for trials only.
    pub allow_reference_key: bool,
    /// `tracing` filter, e.g. `info` or `sluice=debug,info`.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Most JSON values (objects, lists, strings, numbers...) in one request body.
    pub max_json_values: usize,
    /// Seconds a request body may take to arrive once its headers have.
    pub body_timeout_secs: u64,
    /// Browser origins allowed to call sluice directly (CORS), e.g.
    /// `["https://openwebui.example.com"]`. Empty: no CORS headers at all; Open WebUI's server
    /// calls sluice itself and needs none.
    pub cors_allowed_origins: Vec<String>,
    /// How long open streams may run on after SIGTERM/SIGINT before they are ended.
    pub shutdown_grace_secs: u64,
    /// Seconds of pipe silence after which a `: ping` comment keeps the stream alive; 0 = never.
    pub keepalive_secs: u64,
    /// Worker threads for HTTP; 0 = one per core.
    pub workers: usize,
    /// `postgres://user:password@host/db`: keep state in PostgreSQL, shared by several
    /// replicas. Unset: the embedded SQLite file in the data dir.
    #[serde(skip_serializing)]
    pub store_url: Option<Secret>,
    /// With PostgreSQL: how long a replica holds reports it took for delivery before another
    /// may take them (a replica that died releases them after this).
    pub store_lease_secs: u64,
    /// Run WebAssembly pipelines (docs/wasm-pipelines.md): those added before, and new ones
    /// from `/pipelines/add` and `/pipelines/upload`. Off: those routes answer 501.
    pub wasm_pipelines: bool,
    /// Memory one WebAssembly instance may use, in MiB.
    pub wasm_memory_mb: usize,
    /// Seconds one call into a WebAssembly pipeline may take (a hook, or one event of an answer).
    pub wasm_call_timeout_secs: u64,
    /// Largest text one call may return (a hook's body, an answer's events together), in MiB.
    pub wasm_output_mb: usize,
    /// Largest component accepted, in MiB.
    pub wasm_component_mb: usize,
    /// WebAssembly instances alive at once; a call waits for a free one.
    pub wasm_instances: u32,
    /// A PEM file of certificates trusted, besides the system's, when a pipeline is added
    /// from a URL (a private registry with its own CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_fetch_ca_file: Option<PathBuf>,
    /// The `componentize-py` program that turns an uploaded `.py` pipeline into a component.
    /// Empty: `.py` files are refused with how to build one elsewhere.
    pub componentize_py: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `text` or `json` in any case (`JSON` from an environment file is as clear as `json`).
impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        match raw.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(serde::de::Error::unknown_variant(&raw, &["text", "json"])),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 9099,
            valves_dir: PathBuf::from("valves"),
            data_dir: PathBuf::from("data"),
            api_key: None,
            store_url: None,
            store_lease_secs: 300,
            allow_reference_key: false,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            max_body_bytes: 32 * 1024 * 1024,
            max_json_values: 250_000,
            body_timeout_secs: 60,
            cors_allowed_origins: Vec::new(),
            shutdown_grace_secs: 30,
            keepalive_secs: 15,
            workers: 0,
            wasm_pipelines: true,
            wasm_memory_mb: 256,
            wasm_call_timeout_secs: 30,
            wasm_output_mb: 16,
            wasm_component_mb: 64,
            wasm_instances: 64,
            wasm_fetch_ca_file: None,
            componentize_py: "componentize-py".into(),
        }
    }
}

/// Every problem found, one per line: `key (where it came from): what is wrong`.
#[derive(Debug, thiserror::Error)]
#[error("invalid settings:\n  {}", .0.join("\n  "))]
pub struct SettingsError(Vec<String>);

impl SettingsError {
    /// Each problem, as printed one per line.
    pub fn problems(&self) -> &[String] {
        &self.0
    }
}

/// The variable `name` in any case (as figment's `Env` reads the others), when it is set and
/// not empty: an empty variable is an unset one.
fn variable(name: &str) -> Option<std::ffi::OsString> {
    std::env::vars_os().find(|(k, v)| !v.is_empty() && k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The settings file read: the one `SLUICE_CONFIG` names, or `sluice.toml` when there is one
/// (found, not named). (A link to nowhere is read too, and said missing, not skipped.)
fn settings_file() -> Option<settings_file::SettingsFile> {
    match variable("SLUICE_CONFIG") {
        Some(file) => Some(settings_file::SettingsFile { path: PathBuf::from(file), found: false }),
        None => std::fs::symlink_metadata("sluice.toml")
            .is_ok()
            .then(|| settings_file::SettingsFile { path: PathBuf::from("sluice.toml"), found: true }),
    }
}

/// A warning when the settings file holds a secret and others on this machine may read it, or
/// when anyone may change it.
pub fn settings_file_warning() -> Option<String> {
    let path = settings_file()?.path;
    let anyone_writes = std::fs::metadata(&path).ok().and_then(|m| crate::private::anyone_may_write_file(&m));
    let writable = anyone_writes.map(|mode| {
        format!(
            "{} may be changed by anyone on this machine (mode {mode:o}), and it chooses where sluice keeps its \
             key and where commands send it: make it writable by its owner only (chmod o-w)",
            path.display()
        )
    });
    let warnings: Vec<String> = writable.into_iter().chain(readable_file::warning(&path)).collect();
    (!warnings.is_empty()).then(|| warnings.join("; "))
}

impl Settings {
    /// Reads the layered settings from the process environment.
    pub fn load() -> Result<Settings, SettingsError> {
        Self::from_figment(Self::figment())
    }

    /// The layers, as `load` reads them (`sluice settings` shows where each value came from).
    pub fn figment() -> Figment {
        // A file named by SLUICE_CONFIG must exist; the default `sluice.toml` is optional.
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        // In any case, as the other variables; empty is unset; a name that is not UTF-8 is a
        // name all the same.
        if let Some(file) = settings_file() {
            figment = figment.merge(file);
        }
        // An empty variable is an unset one, as for valves (a compose file's `${X:-}`).
        let non_empty: std::collections::HashSet<String> = std::env::vars_os()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, _)| k.into_string().ok())
            .map(|k| k.to_ascii_uppercase())
            .collect();
        let set = move |name: &str| non_empty.contains(&name.to_ascii_uppercase());
        figment
            .merge(KeyVariable("PIPELINES_API_KEY"))
            .merge(Env::prefixed("SLUICE_").ignore(&["CONFIG", "API_KEY"]).filter(move |k| {
                !k.as_str().to_ascii_lowercase().starts_with("valves__")
                    && set(&format!("SLUICE_{}", k.as_str().to_ascii_uppercase()))
            }))
            .merge(KeyVariable("SLUICE_API_KEY"))
    }

    pub fn from_figment(figment: Figment) -> Result<Settings, SettingsError> {
        let settings: Settings = figment.extract().map_err(|e| SettingsError(explain::describe(e)))?;
        settings
            .validate()
            .map_err(|e| SettingsError(e.0.into_iter().map(|m| explain::place(&figment, &m)).collect()))?;
        Ok(settings)
    }

    /// Checks beyond types; every problem as `key: message`.
    fn validate(&self) -> Result<(), SettingsError> {
        let mut problems = Vec::new();
        if !valid_host(&self.host) {
            problems.push(format!(
                "host: {:?} is not an IP address or a host name (the port is a setting of its own: port)",
                self.host
            ));
        }
        if let Err(e) = log_level::check(&self.log_level) {
            problems.push(format!("log_level: {e}"));
        }
        if self.max_body_bytes < 1024 {
            problems.push("max_body_bytes: must be at least 1024".to_string());
        }
        if self.max_json_values < 1000 {
            problems.push("max_json_values: must be at least 1000".to_string());
        }
        if self.body_timeout_secs == 0 {
            problems.push("body_timeout_secs: must be at least 1".to_string());
        }
        for origin in &self.cors_allowed_origins {
            if !valid_origin(origin) {
                problems.push(format!(
                    "cors_allowed_origins: {origin:?} is not an origin such as https://openwebui.example.com"
                ));
            }
        }
        if !(16..=4096).contains(&self.wasm_memory_mb) {
            problems.push("wasm_memory_mb: must be between 16 and 4096".to_string());
        }
        if self.wasm_call_timeout_secs == 0 {
            problems.push("wasm_call_timeout_secs: must be at least 1".to_string());
        }
        // Leases are renewed every third of the lease: at 0 the delivery loop renewed without
        // sleeping while an attempt was in flight, and another replica took it at once.
        if self.store_lease_secs == 0 {
            problems.push("store_lease_secs: must be at least 1".to_string());
        }
        // A time past any use is a mistake, and one near u64::MAX seconds overflows the clock
        // it is added to (a panic on the first call that arms it).
        for (key, secs) in [
            ("body_timeout_secs", self.body_timeout_secs),
            ("shutdown_grace_secs", self.shutdown_grace_secs),
            ("keepalive_secs", self.keepalive_secs),
            ("store_lease_secs", self.store_lease_secs),
            ("wasm_call_timeout_secs", self.wasm_call_timeout_secs),
        ] {
            if secs > MAX_SECS {
                problems.push(format!("{key}: must be at most {MAX_SECS} (a day)"));
            }
        }
        if !(1..=1024).contains(&self.wasm_output_mb) {
            problems.push("wasm_output_mb: must be between 1 and 1024".to_string());
        }
        if !(1..=512).contains(&self.wasm_component_mb) {
            problems.push("wasm_component_mb: must be between 1 and 512".to_string());
        }
        if !(1..=10_000).contains(&self.wasm_instances) {
            problems.push("wasm_instances: must be between 1 and 10000".to_string());
        }
        // actix-server panics above it.
        if self.workers > 512 {
            problems.push("workers: must be at most 512 (0: one per core)".to_string());
        }
        if let Some(key) = self.api_key.as_ref().map(Secret::expose) {
            if key.trim().is_empty() {
                problems.push("api_key: is set but empty; unset it to have a key generated".to_string());
            } else if key.trim() != key || key.chars().any(char::is_control) {
                // An Authorization header carries neither: no client could send this key.
                problems.push(
                    "api_key: has spaces at an end or control characters, which no Authorization header can carry \
                     (the value is not shown)"
                        .to_string(),
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SettingsError(problems))
        }
    }
}

impl Settings {
    /// What one call of a WebAssembly pipeline may use.
    pub fn wasm_limits(&self) -> sluice_wasm::Limits {
        sluice_wasm::Limits {
            component_bytes: self.wasm_component_mb << 20,
            memory_bytes: self.wasm_memory_mb << 20,
            call_timeout: std::time::Duration::from_secs(self.wasm_call_timeout_secs),
            output_bytes: self.wasm_output_mb << 20,
            instances: self.wasm_instances,
            ..sluice_wasm::Limits::default()
        }
    }
}

/// The longest any setting in seconds may be: a day.
const MAX_SECS: u64 = 24 * 3600;

/// An IP address (IPv6 with or without brackets, with or without a zone: `fe80::1%eth0`), or
/// a host name of letters, digits, hyphens, underscores and dots. The address is also put in
/// the URL a command on this machine calls, where `127.0.0.1:9000#` would send the request
/// (and the key) to another port (found by a red team).
fn valid_host(host: &str) -> bool {
    // Brackets only around an IPv6 address without a zone: the server binds `[addr]:port`,
    // which takes nothing else in them.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    if let Some((address, zone)) = host.split_once('%') {
        let zone_ok = !zone.is_empty() && zone.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        return zone_ok && address.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let labels = || host.strip_suffix('.').unwrap_or(host).split('.');
    !host.is_empty()
        && host.len() <= 253
        && labels().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `scheme://host[:port]`, nothing after: what a browser sends as `Origin`.
fn valid_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")) else { return false };
    !rest.is_empty() && !rest.contains(['/', '*', '?', '#', '@', ' '])
}

#[cfg(test)]
#[allow(clippy::result_large_err, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_and_the_reference_key_variable_is_read() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("sluice.toml", "port = 9200\nlog_level = \"debug\"\n")?;
            jail.set_env("PIPELINES_API_KEY", "from-pipelines-var");
            jail.set_env("SLUICE_PORT", "9300");
            let s = Settings::load().map_err(|e| e.to_string())?;
            assert_eq!((s.port, s.log_level.as_str()), (9300, "debug"));
            assert_eq!(s.api_key.as_ref().map(Secret::expose), Some("from-pipelines-var"));
            jail.set_env("SLUICE_API_KEY", "from-sluice-var");
            let s = Settings::load().map_err(|e| e.to_string())?;
            assert_eq!(s.api_key.as_ref().map(Secret::expose), Some("from-sluice-var"));
            // Valve overrides share the prefix but are not settings.
            jail.set_env("SLUICE_VALVES__X__Y", "1");
            assert!(Settings::load().is_ok());
            jail.set_env("SLUICE_NO_SUCH_SETTING", "1");
            assert!(Settings::load().is_err());
            Ok(())
        });
    }

    /// sluice.example.toml names every setting with its default, and nothing else.
    #[test]
    fn the_example_file_lists_every_setting_with_its_default() {
        let example = include_str!("../../sluice.example.toml");
        let uncommented: String = example
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().unwrap();
        let defaults = serde_json::to_value(Settings::default()).unwrap();
        let mut listed: Vec<&str> = table.keys().map(String::as_str).collect();
        listed.sort();
        let mut known: Vec<&str> = defaults.as_object().unwrap().keys().map(String::as_str).collect();
        known.extend(["api_key", "store_url", "wasm_fetch_ca_file"]);
        known.sort();
        assert_eq!(listed, known);
        for (key, value) in defaults.as_object().unwrap() {
            if key == "cors_allowed_origins" {
                continue; // the example shows a value to copy; the default is empty
            }
            let shown = serde_json::to_value(&table[key]).unwrap();
            assert_eq!(&shown, value, "{key}");
        }
    }

    /// `${SLUICE_API_KEY:-}` in a compose file passes an empty string when nothing was set.
    #[test]
    fn an_empty_variable_is_an_unset_one() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_API_KEY", "");
            jail.set_env("PIPELINES_API_KEY", "");
            jail.set_env("SLUICE_PORT", "");
            let s = Settings::load().map_err(|e| e.to_string())?;
            assert!(s.api_key.is_none());
            assert_eq!(s.port, 9099);
            jail.set_env("sluice_port", "9300");
            assert_eq!(Settings::load().map_err(|e| e.to_string())?.port, 9300, "any case, as before");
            Ok(())
        });
    }

    #[test]
    fn the_host_is_an_address_or_a_name() {
        for good in [
            "0.0.0.0",
            "127.0.0.1",
            "::",
            "::1",
            "[::]",
            "[::1]",
            "fe80::1",
            "fe80::1%eth0",
            "localhost",
            "sluice.internal.",
            "my-host-1",
            "my_service",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "",
            "127.0.0.1:9000#",
            "127.0.0.1:9000",
            "[::1]:9000",
            "[::1",
            "[127.0.0.1]",
            "[fe80::1%eth0]",
            "fe80::1%eth0/x",
            "fe80::1%eth0#",
            "fe80::1%a:9000",
            "host/x",
            "host?x",
            "a b",
            "-x",
            "x..y",
            "user@host",
            "h\u{1b}",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_named_config_file_must_exist() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_CONFIG", "missing.toml");
            assert!(Settings::load().is_err());
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("other.toml", "port = 9300\n")?;
            jail.set_env("sluice_config", "other.toml");
            assert_eq!(Settings::load().unwrap().port, 9300, "named in lower case");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_CONFIG", "");
            assert_eq!(Settings::load().unwrap().port, Settings::default().port, "empty is unset");
            #[cfg(unix)]
            std::os::unix::fs::symlink("nowhere.toml", "sluice.toml").unwrap();
            #[cfg(unix)]
            assert!(Settings::load().is_err(), "a link to nowhere is not skipped");
            Ok(())
        });
    }
}
