//! Outbound HTTP for a guest: only to the hosts its `ALLOWED_HOSTS` valve lists, nothing when
//! it is empty. Matched on the request's host name (and port, when the entry has one), before
//! any connection or name lookup.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The allow-list of one call, from the pipeline's valves when the call began.
#[derive(Debug, Clone, Default)]
pub struct HttpGate {
    allowed: Arc<[String]>,
    pipeline: Arc<str>,
}

impl HttpGate {
    pub fn new(pipeline: Arc<str>, allowed: Vec<String>) -> Self {
        let allowed = allowed.into_iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
        HttpGate { allowed, pipeline }
    }

    /// Whether `host[:port]` is allowed: an entry `example.com` allows any port of that host,
    /// `example.com:8443` that port only.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.iter().any(|entry| {
            let (name, only_port) = match entry.rsplit_once(':') {
                Some((name, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
                    Ok(p) => (name, Some(p)),
                    Err(_) => return false,
                },
                _ => (entry.as_str(), None),
            };
            name == host && only_port.is_none_or(|p| Some(p) == port)
        })
    }
}

type Sent = Box<
    dyn std::future::Future<
            Output = Result<
                (http::Response<WasiBody>, Box<dyn std::future::Future<Output = Result<(), Error>> + Send>),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        let uri = request.uri();
        let allowed = uri.host().is_some_and(|host| {
            let port = uri.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            });
            self.allows(host, port)
        });
        if !allowed {
            tracing::warn!(
                pipeline = &*self.pipeline,
                host = uri.host().unwrap_or(""),
                "outbound HTTP refused: host not in ALLOWED_HOSTS"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        drop(fut);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::HttpGate;

    #[test]
    fn only_listed_hosts_pass() {
        let gate = HttpGate::new("p".into(), vec!["api.openai.com".into(), "127.0.0.1:8080".into(), " ".into()]);
        assert!(gate.allows("api.openai.com", Some(443)));
        assert!(gate.allows("API.OPENAI.COM", Some(443)));
        assert!(gate.allows("127.0.0.1", Some(8080)));
        assert!(!gate.allows("127.0.0.1", Some(8081)));
        assert!(!gate.allows("evil.openai.com", Some(443)));
        assert!(!gate.allows("api.openai.com.evil", Some(443)));
        assert!(!gate.allows("", Some(80)));
        assert!(!HttpGate::new("p".into(), vec!["127.0.0.1:99999".into()]).allows("127.0.0.1", Some(80)));
        assert!(!HttpGate::new("p".into(), vec![]).allows("localhost", Some(80)));
    }
}
