//! Where each setting came from: in error messages (a bad value is blamed on the variable or
//! file that set it, never on a profile name the operator did not write) and in
//! `sluice settings`.

use figment::error::{Actual, Kind};
use figment::{Figment, Metadata, Source};
use serde_json::Value;

use super::Settings;

/// One line per problem of a failed extraction: `key (source): what is wrong`.
pub fn describe(error: figment::Error) -> Vec<String> {
    error
        .into_iter()
        .map(|e| {
            let mut path = e.path.clone();
            // figment puts the profile first; operators never write one.
            if e.profile.as_ref().is_some_and(|p| path.first().is_some_and(|k| k.as_str() == p.as_str())) {
                path.remove(0);
            }
            // The secrets' values are never quoted, nor a file's line that may hold one.
            let secret = matches!(path.first().map(String::as_str), Some("api_key" | "store_url"));
            let what = match &e.kind {
                Kind::UnknownField(field, known) => {
                    if path.last() != Some(field) {
                        path.push(field.clone());
                    }
                    format!(
                        "unknown setting{} (known: {})",
                        crate::suggest::hint(field, known.iter().copied()),
                        known.join(", ")
                    )
                }
                Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) if secret => {
                    format!("expected {expected} (the value is not shown)")
                }
                // A key pasted into the wrong setting (`SLUICE_PORT=sk-...`) is not quoted back.
                Kind::InvalidType(Actual::Str(found), expected) | Kind::InvalidValue(Actual::Str(found), expected)
                    if crate::valves::looks_like_a_key(found) =>
                {
                    format!("expected {expected}, found a text that looks like a key (not shown)")
                }
                Kind::InvalidType(found, expected) => format!("expected {expected}, found {found}"),
                Kind::InvalidValue(found, expected) => format!("expected {expected}, found {found}"),
                Kind::UnknownVariant(found, known) if crate::valves::looks_like_a_key(found) => {
                    format!("a text that looks like a key (not shown) is not one of {}", known.join(", "))
                }
                Kind::UnknownVariant(found, known) => {
                    format!(
                        "{found:?} is not one of {}{}",
                        known.join(", "),
                        crate::suggest::hint(found, known.iter().copied())
                    )
                }
                Kind::Message(message) => match file_of(&e) {
                    Some(path) => {
                        let text = crate::small_file::read(&path, "a settings file").ok().flatten().unwrap_or_default();
                        // Else the first line: the parser's excerpt of the file follows it.
                        crate::toml_syntax::check(&text)
                            .unwrap_or_else(|| message.lines().next().unwrap_or_default().to_string())
                    }
                    None => e.kind.to_string(),
                },
                other => other.to_string(),
            };
            // A name from the file or the environment may hold a line break or an escape
            // sequence: shown escaped, on its line.
            let key = crate::telemetry::OneLine(&path.join(".")).to_string();
            match e.metadata.as_ref() {
                // The file as a whole (it cannot be read): named alone.
                Some(meta) if key.is_empty() => format!("{}: {what}", origin(meta, &key)),
                Some(meta) => format!("{key} ({}): {what}", origin(meta, &key)),
                None => format!("{key}: {what}"),
            }
        })
        .collect()
}

/// The file an error's value came from, if a file.
fn file_of(e: &figment::Error) -> Option<std::path::PathBuf> {
    match e.metadata.as_ref()?.source.as_ref()? {
        Source::File(path) => Some(path.clone()),
        _ => None,
    }
}

/// `key: message` with the key's source added: `key (source): message`.
pub fn place(figment: &Figment, problem: &str) -> String {
    match problem.split_once(": ") {
        Some((key, message)) => match figment.find_metadata(key) {
            Some(meta) => format!("{key} ({}): {message}", origin(meta, key)),
            None => problem.to_string(),
        },
        None => problem.to_string(),
    }
}

/// Where a value with this metadata was set: the variable, the file, or the default.
fn origin(meta: &Metadata, key: &str) -> String {
    if meta.name.contains("environment") {
        let top = key.split('.').next().unwrap_or(key).to_ascii_uppercase();
        return if meta.name.contains("SLUICE_") {
            format!("environment variable SLUICE_{top}")
        } else {
            "environment variable PIPELINES_API_KEY".to_string()
        };
    }
    match &meta.source {
        Some(Source::File(path)) => path.display().to_string(),
        _ => "default".to_string(),
    }
}

/// One setting as it is in effect.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub key: String,
    /// The value as TOML would write it; secrets are never shown.
    pub value: String,
    pub source: String,
}

/// Every setting with its value in effect and where that value came from.
pub fn effective(figment: &Figment, settings: &Settings) -> Vec<Effective> {
    let mut out = Vec::new();
    if let Ok(Value::Object(map)) = serde_json::to_value(settings) {
        for (key, value) in map {
            let source = figment.find_metadata(&key).map(|m| origin(m, &key)).unwrap_or_else(|| "default".into());
            out.push(Effective { key, value: value.to_string(), source });
        }
    }
    // The two secrets are not serialised at all: say whether they are set, and from where.
    for (key, value) in [("api_key", settings.api_key.is_some()), ("store_url", settings.store_url.is_some())] {
        let (value, source) = match figment.find_metadata(key) {
            Some(meta) if value => ("(set, not shown)".to_string(), origin(meta, key)),
            _ if key == "api_key" && settings.allow_reference_key => {
                ("(not shown)".to_string(), "unset: the reference's well-known key (allow_reference_key)".to_string())
            }
            _ if key == "api_key" => {
                let file = settings.data_dir.join(crate::auth::KEY_FILE);
                let source = match std::fs::metadata(&file) {
                    Ok(_) => format!("generated, kept in {}", file.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        format!("unset: generated into {} on first start", file.display())
                    }
                    Err(e) => format!("unset: {} cannot be looked at ({e})", file.display()),
                };
                ("(not shown)".to_string(), source)
            }
            _ => ("(unset)".to_string(), "default: the embedded SQLite store".to_string()),
        };
        out.push(Effective { key: key.into(), value, source });
    }
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err, clippy::unwrap_used)]
mod tests {
    use super::*;

    fn problems(jail_env: &[(&str, &str)], toml: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        figment::Jail::expect_with(|jail| {
            if let Some(text) = toml {
                jail.create_file("sluice.toml", text)?;
            }
            for (k, v) in jail_env {
                jail.set_env(k, v);
            }
            out = match Settings::load() {
                Ok(_) => Vec::new(),
                Err(e) => e.0,
            };
            Ok(())
        });
        out
    }

    #[test]
    fn each_problem_names_its_key_and_where_it_was_set() {
        let p = problems(&[("SLUICE_PORT", "abc")], None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("port (environment variable SLUICE_PORT): expected"), "{p:?}");

        let p = problems(&[], Some("prot = 9100\n"));
        assert!(p[0].starts_with("prot (sluice.toml): unknown setting (did you mean `port`?)"), "{p:?}");
        assert!(!p[0].contains("default."), "{p:?}");

        let p = problems(&[("SLUICE_LOG_FORMAT", "xml")], None);
        assert!(p[0].contains("SLUICE_LOG_FORMAT") && p[0].contains("\"xml\" is not one of text, json"), "{p:?}");

        let p = problems(&[("SLUICE_LOG_LEVEL", "warnig"), ("SLUICE_MAX_BODY_BYTES", "10")], None);
        assert_eq!(p.len(), 2, "every problem at once: {p:?}");
        assert!(
            p[0].starts_with("log_level (environment variable SLUICE_LOG_LEVEL): \"warnig\" is not a level"),
            "{p:?}"
        );
        assert!(p[1].starts_with("max_body_bytes (environment variable SLUICE_MAX_BODY_BYTES):"), "{p:?}");

        assert!(problems(&[("SLUICE_LOG_FORMAT", "JSON"), ("SLUICE_LOG_LEVEL", "warning")], None).is_empty());
    }

    /// A key is the text given, whatever it looks like, and no error quotes it.
    #[test]
    fn keys_are_taken_as_given_and_never_quoted() {
        for key in ["123456789", "00123", "\"quoted key\"", "true", "1.5", "[a]"] {
            for variable in ["SLUICE_API_KEY", "PIPELINES_API_KEY", "sluice_api_key"] {
                figment::Jail::expect_with(|jail| {
                    jail.set_env(variable, key);
                    let settings = Settings::load().unwrap();
                    assert_eq!(
                        settings.api_key.as_ref().map(sluice_sdk::Secret::expose),
                        Some(key),
                        "{variable}={key}"
                    );
                    Ok(())
                });
            }
        }
        for (env, toml) in [
            (&[("SLUICE_API_KEY", "  padded-key ")][..], None),
            (&[("SLUICE_API_KEY", "sk-line\nbreak")], None),
            (&[], Some("api_key = 27182818284\n")),
            (&[], Some("api_key = \"sk-secret-unterminated\n")),
            (&[], Some("store_url = \"postgres://u:pa\\qss@h/db\"\n")),
            (&[], Some("store_url = 31415926535\n")),
        ] {
            let p = problems(env, toml);
            assert_eq!(p.len(), 1, "{p:?}");
            for secret in ["padded-key", "sk-line", "27182818284", "sk-secret", "pa\\qss", "31415926535"] {
                assert!(!p[0].contains(secret), "{p:?}");
            }
        }
        let p = problems(&[], Some("port = 9100\napi_key = \"sk-secret-unterminated\n"));
        assert!(p[0].contains("line 2, column"), "{p:?}");
    }

    #[test]
    fn times_past_a_day_are_refused_before_they_overflow_a_clock() {
        let max = u64::MAX.to_string();
        let keys = ["BODY_TIMEOUT", "SHUTDOWN_GRACE", "KEEPALIVE", "STORE_LEASE", "WASM_CALL_TIMEOUT"];
        let vars: Vec<(String, &str)> = keys.iter().map(|k| (format!("SLUICE_{k}_SECS"), max.as_str())).collect();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let p = problems(&vars, None);
        assert_eq!(p.len(), keys.len(), "{p:?}");
        for (problem, key) in p.iter().zip(keys) {
            let setting = format!("{}_secs", key.to_ascii_lowercase());
            assert!(
                problem
                    .starts_with(&format!("{setting} (environment variable SLUICE_{key}_SECS): must be at most 86400")),
                "{p:?}"
            );
        }
        let day = [("SLUICE_WASM_CALL_TIMEOUT_SECS", "86400"), ("SLUICE_KEEPALIVE_SECS", "86400")];
        assert!(problems(&day, None).is_empty());
        let p = problems(&[("SLUICE_STORE_LEASE_SECS", "0")], None);
        assert_eq!(p, ["store_lease_secs (environment variable SLUICE_STORE_LEASE_SECS): must be at least 1"]);
    }

    #[test]
    fn effective_settings_name_their_source_and_hide_secrets() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("sluice.toml", "port = 9200\n")?;
            jail.set_env("SLUICE_LOG_LEVEL", "debug");
            jail.set_env("SLUICE_API_KEY", "sk-top-secret");
            let figment = Settings::figment();
            let settings = Settings::from_figment(figment.clone()).map_err(|e| e.to_string())?;
            let lines = effective(&figment, &settings);
            let find = |k: &str| lines.iter().find(|l| l.key == k).cloned().unwrap();
            assert_eq!((find("port").value.as_str(), find("port").source.as_str()), ("9200", "sluice.toml"));
            assert_eq!(find("log_level").source, "environment variable SLUICE_LOG_LEVEL");
            assert_eq!(find("host").source, "default");
            assert_eq!(find("api_key").source, "environment variable SLUICE_API_KEY");
            assert!(lines.iter().all(|l| !l.value.contains("sk-top-secret")));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("SLUICE_ALLOW_REFERENCE_KEY", "true");
            let figment = Settings::figment();
            let settings = Settings::from_figment(figment.clone()).map_err(|e| e.to_string())?;
            let lines = effective(&figment, &settings);
            let key = lines.iter().find(|l| l.key == "api_key").unwrap();
            assert!(key.source.contains("the reference's well-known key"), "{key:?}");
            Ok(())
        });
    }
}
