//! `log_level` is a `tracing` filter, and in that syntax a plain word that is not a level is a
//! target name: `warning` would silence every line, errors included. Plain words must be levels.

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// The filter with Python's level names (`warning`, `critical`) turned into `tracing`'s, or why
/// it is not one.
pub fn normalize(filter: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = match directive.rsplit_once('=') {
            Some((target, level)) => (Some(target), level),
            None => (None, directive),
        };
        let level = match python_level(level) {
            Some(level) => level.to_string(),
            None if LEVELS.contains(&level.to_ascii_lowercase().as_str()) => level.to_ascii_lowercase(),
            None => {
                let hint = crate::suggest::hint(level, LEVELS);
                return Err(match target {
                    Some(_) => format!("{level:?} in {directive:?} is not a level{hint}; use {}", LEVELS.join(", ")),
                    None => format!(
                        "{level:?} is not a level{hint}: use one of {}, or target=level directives such as \"sluice=debug,info\"",
                        LEVELS.join(", ")
                    ),
                });
            }
        };
        out.push(match target {
            Some(target) => format!("{target}={level}"),
            None => level,
        });
    }
    if out.is_empty() {
        return Err(format!("is empty; use one of {}", LEVELS.join(", ")));
    }
    let normalized = out.join(",");
    tracing_subscriber::EnvFilter::try_new(&normalized).map_err(|e| format!("{filter:?} is not a filter: {e}"))?;
    Ok(normalized)
}

/// `tracing`'s name of one of Python's level names (`warning`, `critical`, `fatal`).
fn python_level(word: &str) -> Option<&'static str> {
    match word.trim().to_ascii_lowercase().as_str() {
        "warning" => Some("warn"),
        "critical" | "fatal" => Some("error"),
        _ => None,
    }
}

/// `RUST_LOG` directives with Python's level names turned into `tracing`'s, the rest as they
/// are: `RUST_LOG=warning` meant warnings, but as a target name it silenced every line.
pub fn with_tracing_names(directives: &str) -> String {
    directives
        .split(',')
        .map(|d| match d.rsplit_once('=') {
            Some((target, level)) => match python_level(level) {
                Some(level) => format!("{target}={level}"),
                None => d.to_string(),
            },
            None => python_level(d).map_or_else(|| d.to_string(), str::to_string),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether `filter` is usable.
pub fn check(filter: &str) -> Result<(), String> {
    normalize(filter).map(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_must_be_levels() {
        assert_eq!(normalize("info").unwrap(), "info");
        assert_eq!(normalize("WARNING").unwrap(), "warn");
        assert_eq!(normalize("sluice=debug, info").unwrap(), "sluice=debug,info");
        assert_eq!(normalize("sluice_openpipe_reporting=warning").unwrap(), "sluice_openpipe_reporting=warn");
        let e = normalize("inof").unwrap_err();
        assert!(e.contains("did you mean `info`"), "{e}");
        assert!(normalize("verbose").is_err());
        assert!(normalize("sluice=loud").is_err());
        assert!(normalize(" , ").is_err());
    }

    #[test]
    fn python_names_in_rust_log_are_levels() {
        assert_eq!(with_tracing_names("warning"), "warn");
        assert_eq!(with_tracing_names("sluice=Critical, hyper=debug,FATAL"), "sluice=error, hyper=debug,error");
        assert_eq!(with_tracing_names("sluice,info,x[span]=debug"), "sluice,info,x[span]=debug");
    }
}
