//! The bearer key: where it comes from, and the middleware that checks it on every route but
//! the health check. Status codes and bodies are the reference's (docs/protocol.md §3).

use std::io::Write;
use std::path::Path;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use sluice_sdk::Secret;
use subtle::ConstantTimeEq;

use crate::config::{Settings, REFERENCE_DEFAULT_KEY};
use crate::error::ApiError;

/// File in the data dir holding the generated key.
pub const KEY_FILE: &str = "api_key";

/// The one key every request must present, and where it came from (for the refusal log).
#[derive(Clone)]
pub struct ApiKey {
    key: Secret,
    origin: String,
}

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey {
            key: Secret::new(key),
            origin: "the configured key (SLUICE_API_KEY, PIPELINES_API_KEY or api_key)".into(),
        }
    }

    fn from(key: impl Into<String>, origin: impl Into<String>) -> Self {
        ApiKey { key: Secret::new(key), origin: origin.into() }
    }

    pub fn expose(&self) -> &str {
        self.key.expose()
    }

    /// Constant-time in the key's content; only its length can be told apart.
    fn matches(&self, candidate: &[u8]) -> bool {
        self.key.expose().as_bytes().ct_eq(candidate).into()
    }

    /// The configured key; else the reference key when asked for explicitly; else the key kept
    /// in the data dir, generated (and printed once to stderr) on first start.
    pub fn resolve(settings: &Settings) -> std::io::Result<ApiKey> {
        if let Some(key) = &settings.api_key {
            if key.expose() == REFERENCE_DEFAULT_KEY {
                warn_reference_key("SLUICE_API_KEY/PIPELINES_API_KEY is set to");
            }
            return Ok(ApiKey::new(key.expose()));
        }
        if settings.allow_reference_key {
            warn_reference_key("SLUICE_ALLOW_REFERENCE_KEY=true: using");
            return Ok(ApiKey::from(REFERENCE_DEFAULT_KEY, "the reference's default key (allow_reference_key)"));
        }
        // The key itself goes only to a person at a terminal: a log file, journald or a
        // container's log collector would keep it. They are told where to read it instead.
        let show = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && settings.log_format == crate::config::LogFormat::Text;
        load_or_generate(&settings.data_dir.join(KEY_FILE), show)
    }
}

fn warn_reference_key(why: &str) {
    tracing::warn!(
        "{why} the Python reference's well-known default key. Anyone who knows it can use this \
         server and read its valves. Set SLUICE_API_KEY to a secret value before exposing it."
    );
}

/// The kept key, or a new one when there is none (no file, or an empty one). A file that
/// cannot be read as a key is an error, never replaced: Open WebUI's connection holds that key.
fn load_or_generate(path: &Path, show: bool) -> std::io::Result<ApiKey> {
    // A link planted there would choose the key (see `private`).
    crate::private::own_file(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("the kept API key cannot be read: {e}")))?;
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{}: the kept API key is not text; remove the file to have a new key generated, or set \
                         SLUICE_API_KEY",
                        path.display()
                    ),
                )
            })?;
            let key = text.trim();
            if !key.is_empty() {
                // Kept by an older version or copied in with a wider mode.
                crate::private::tighten(path, 0o600)?;
                tracing::info!(path = %path.display(), "using the API key kept in the data dir");
                return Ok(ApiKey::from(key, format!("the key generated into {}", path.display())));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: the kept API key cannot be read: {e}", path.display()),
            ))
        }
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let key = format!("sk-sluice-{}", hex::encode(bytes));
    if let Some(dir) = path.parent() {
        crate::private::dir(dir)?;
    }
    // 0600 before the key goes in, also for an empty file left with a wider mode.
    crate::private::file(path)?;
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    if show {
        eprintln!(
            "\nsluice: no API key was configured, so one was generated and saved to {}:\n\n    {key}\n\n\
             Use it as the key of the Open WebUI connection, or set SLUICE_API_KEY.\n",
            path.display()
        );
    } else {
        tracing::warn!(
            path = %path.display(),
            "no API key was configured, so one was generated and saved to this file (mode 0600); \
             read it there for the Open WebUI connection, or set SLUICE_API_KEY"
        );
    }
    Ok(ApiKey::from(key, format!("the key generated into {}", path.display())))
}

/// Routes that answer without a key: the health check only (GET, and HEAD for probes).
fn is_open(req: &ServiceRequest) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD) && matches!(req.path(), "/" | "/v1" | "/v1/")
}

/// Checks `Authorization: Bearer <key>` before any handler runs.
pub async fn require_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if !is_open(&req) {
        let key = req.app_data::<web::Data<ApiKey>>();
        let mut headers = req.headers().get_all(header::AUTHORIZATION);
        let header = headers.next().map(|h| h.as_bytes());
        // Two keys: which one a proxy or a client meant is not for sluice to guess.
        let checked = if headers.next().is_some() {
            Err(ApiError::DuplicateAuthorization)
        } else {
            check(key.map(|k| k.get_ref()), header)
        };
        if let Err(refused) = checked {
            log_refusal(&req, &refused, key.map(|k| k.origin.as_str()).unwrap_or("no key"));
            // Answered here, as a response, so the request log shows the status like any other.
            return Ok(req.error_response(refused).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Says why a request was refused (never what key it carried), so an operator whose Open WebUI
/// shows no pipelines finds the cause. At most one warning per cause per 10 s (a client
/// retrying in a loop must not flood the log), the rest at debug level.
fn log_refusal(req: &ServiceRequest, refused: &ApiError, origin: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_WARN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
    let (slot, why) = match refused {
        ApiError::NotAuthenticated => {
            (0, "no `Authorization: Bearer <key>` header (an Open WebUI connection needs the key set)".to_string())
        }
        ApiError::InvalidCredentials => (1, "the Authorization header is not `Bearer <key>`".to_string()),
        ApiError::DuplicateAuthorization => (2, "two Authorization headers".to_string()),
        _ => (3, format!("the key does not match {origin} (check the key of the Open WebUI connection)")),
    };
    let now = sluice_sdk::clock::unix_secs();
    let peer = req.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let last = LAST_WARN[slot].load(Ordering::Relaxed);
    if now >= last + 10 && LAST_WARN[slot].compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(path = %req.path(), peer = %peer, "request refused: {why}");
    } else {
        tracing::debug!(path = %req.path(), peer = %peer, "request refused: {why}");
    }
}

fn check(key: Option<&ApiKey>, header: Option<&[u8]>) -> Result<(), ApiError> {
    let header = header.ok_or(ApiError::NotAuthenticated)?;
    let (scheme, credentials) = match header.iter().position(|b| *b == b' ') {
        Some(i) => (&header[..i], &header[i + 1..]),
        None => (header, &[][..]),
    };
    if credentials.is_empty() {
        return Err(ApiError::NotAuthenticated);
    }
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(ApiError::InvalidCredentials);
    }
    match key {
        Some(key) if key.matches(credentials) => Ok(()),
        _ => Err(ApiError::InvalidKey),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_kept_key_is_never_replaced_and_always_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api_key");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // Not text: an error naming the file, and the file as it was.
        std::fs::write(&path, b"\xff\xfeold-key\n").unwrap();
        let e = load_or_generate(&path, false).err().unwrap();
        assert!(e.to_string().contains("is not text"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"\xff\xfeold-key\n");
        // Kept with a wide mode: used, and made 0600.
        std::fs::write(&path, "sk-kept\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_generate(&path, false).unwrap().matches(b"sk-kept"));
        assert_eq!(mode(&path), 0o600);
        // Empty with a wide mode: a new key, in a 0600 file.
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let key = load_or_generate(&path, false).unwrap();
        assert!(key.matches(std::fs::read(&path).unwrap().as_slice()));
        assert_eq!(mode(&path), 0o600);
        // A directory where the file should be: named.
        let e = load_or_generate(dir.path(), false).err().unwrap();
        assert!(e.to_string().contains("the kept API key cannot be read"), "{e}");
    }

    #[test]
    fn bearer_checks_follow_the_reference() {
        let key = ApiKey::new("k1");
        let cases: &[(Option<&[u8]>, &str)] = &[
            (None, "Not authenticated"),
            (Some(b"Bearer"), "Not authenticated"),
            (Some(b"Bearer "), "Not authenticated"),
            (Some(b"Basic abc"), "Invalid authentication credentials"),
            (Some(b"Bearer k2"), "Invalid API key"),
            (Some(b"Bearer k1 "), "Invalid API key"),
        ];
        for (header, expected) in cases {
            let err = check(Some(&key), *header).err().map(|e| e.to_string());
            assert_eq!(err.as_deref(), Some(*expected), "{header:?}");
        }
        assert!(check(Some(&key), Some(b"bearer k1")).is_ok());
        assert!(check(Some(&key), Some(b"Bearer k1")).is_ok());
    }

    fn settings(dir: &Path) -> Settings {
        Settings { data_dir: dir.to_path_buf(), ..Settings::default() }
    }

    #[test]
    fn without_a_key_one_is_generated_once_and_kept() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = ApiKey::resolve(&settings(dir.path()))?;
        assert!(first.expose().starts_with("sk-sluice-") && first.expose().len() > 40);
        assert_ne!(first.expose(), REFERENCE_DEFAULT_KEY);
        let second = ApiKey::resolve(&settings(dir.path()))?;
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        Ok(())
    }

    #[test]
    fn the_reference_key_is_used_only_when_asked_for() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let asked = Settings { allow_reference_key: true, ..settings(dir.path()) };
        assert_eq!(ApiKey::resolve(&asked)?.expose(), REFERENCE_DEFAULT_KEY);
        let configured =
            Settings { api_key: Some(Secret::new("mine")), allow_reference_key: true, ..settings(dir.path()) };
        assert_eq!(ApiKey::resolve(&configured)?.expose(), "mine");
        assert!(!dir.path().join(KEY_FILE).exists());
        Ok(())
    }
}
