//! Downloads a pipeline named by URL (`POST /pipelines/add`): https only, redirects only to
//! https, the size capped while reading, one deadline for all of it.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the URL must be an https URL with a host and no credentials: {0}")]
    BadUrl(String),
    #[error("the URL answered HTTP {0}")]
    Status(u16),
    #[error("the file is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the download took longer than {} s", TIMEOUT.as_secs())]
    Timeout,
    #[error("the download failed: {0}")]
    Failed(String),
    #[error("the CA file {path} could not be used: {message}")]
    Ca { path: String, message: String },
}

/// A GitHub page (`github.com/<owner>/<repo>/blob/<ref>/<path>`) becomes its raw file, as the
/// Python reference does, so the links people paste work.
pub fn raw_github(url: &str) -> String {
    match url.strip_prefix("https://github.com/").and_then(|rest| rest.split_once("/blob/")) {
        Some((repo, path)) if repo.matches('/').count() == 1 => {
            format!("https://raw.githubusercontent.com/{repo}/{path}")
        }
        _ => url.to_string(),
    }
}

pub struct Fetcher {
    client: reqwest::Client,
}

impl Fetcher {
    pub fn new(extra_ca: Option<&Path>) -> Result<Self, FetchError> {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS || attempt.url().scheme() != "https" {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = extra_ca {
            let ca_error = |message: String| FetchError::Ca { path: path.display().to_string(), message };
            let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_error(e.to_string()))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Fetcher { client: builder.build().map_err(|e| FetchError::Failed(e.to_string()))? })
    }

    pub async fn get(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, FetchError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| FetchError::BadUrl("not a URL".into()))?;
        if parsed.scheme() != "https"
            || parsed.host().is_none()
            || !parsed.username().is_empty()
            || parsed.password().is_some()
        {
            return Err(FetchError::BadUrl(shown(&parsed)));
        }
        let work = async {
            let response = self.client.get(parsed).send().await.map_err(|e| FetchError::Failed(without_url(&e)))?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status().as_u16()));
            }
            if response.content_length().is_some_and(|n| n > max_bytes as u64) {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| FetchError::Failed(without_url(&e)))?;
                if body.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        tokio::time::timeout(TIMEOUT, work).await.map_err(|_| FetchError::Timeout)?
    }
}

/// A URL as it may be shown: scheme, host, port and path; no credentials, query or fragment.
fn shown(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}

/// What the caller is told: the kind of failure only. The cause (a refused port, a TLS peer's
/// names, a resolver's answer) would make the route a scanner of the server's network; it goes
/// to the operator's log instead, without the URL (which may carry a token).
fn without_url(e: &reqwest::Error) -> String {
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        cause.push_str(": ");
        cause.push_str(&s.to_string());
        source = s.source();
    }
    tracing::info!(cause = %cause, "a pipeline could not be downloaded");
    if e.is_connect() {
        "could not connect (refused, unreachable, unknown name, or a certificate not trusted)".into()
    } else if e.is_redirect() {
        "too many or non-https redirects".into()
    } else {
        "the server's answer broke off".into()
    }
}

#[cfg(test)]
mod tests {
    use super::raw_github;

    #[test]
    fn github_pages_become_raw_files() {
        assert_eq!(
            raw_github("https://github.com/o/r/blob/main/examples/f.py"),
            "https://raw.githubusercontent.com/o/r/main/examples/f.py"
        );
        assert_eq!(raw_github("https://example.com/f.wasm"), "https://example.com/f.wasm");
    }
}
