//! Logging: `tracing` to stderr, as text or JSON lines, filtered by `SLUICE_LOG_LEVEL`
//! (or `RUST_LOG` when set). One line per request with its id, route pattern and status.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;
use tracing_subscriber::filter::{filter_fn, FilterFn, Targets};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

mod escaped;
mod json_line;
mod line_fields;
mod line_time;
mod log_writer;
mod panics;
mod staged;
#[cfg(test)]
mod test_log;
mod text_line;
pub use escaped::ShownJson;
use json_line::{JsonFields, JsonLine};
use line_fields::LineFields;
pub use line_fields::OneLine;
use line_time::LineTime;
use log_writer::{Batching, LogSink, LogWriter, WriterGuard};
pub use panics::{catch_panics, log_panics};
use text_line::TextLine;

/// Keeps the log's writer thread; dropped at exit, it writes what is still waiting.
#[must_use = "the log is written while this lives"]
pub struct LogGuard(#[allow(dead_code)] Option<WriterGuard>);

/// Installs the global subscriber once; later calls (tests) are ignored. Lines reach stderr
/// through [`log_writer`], many per write.
pub fn init(level: &str, format: LogFormat) -> LogGuard {
    // Colour only for a person at a terminal: in a file, journald or `docker logs` the escape
    // codes are noise (and formatting them costs time on every line).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (sink, guard) = match LogWriter::start(Box::new(std::io::stderr()), Batching::default()) {
        Ok((writer, guard)) => (LogSink::Batched(writer), Some(guard)),
        // No thread for it: each line written by whoever logs it, as before.
        Err(_) => (LogSink::Stderr, None),
    };
    // An event that cannot be formatted is reported on stderr, not dropped without a word.
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(sink)
        .with_ansi(ansi)
        .with_timer(LineTime)
        .log_internal_errors(true);
    let (directives, set_aside) = chosen_directives(rust_log().as_deref(), level);
    let installed = match format {
        LogFormat::Json => tracing_subscriber::registry()
            .with(lines.fmt_fields(JsonFields).event_format(JsonLine))
            .with(operator_filter(&directives))
            .with(secret_cap())
            .try_init(),
        LogFormat::Text => tracing_subscriber::registry()
            .with(lines.fmt_fields(LineFields).event_format(TextLine::default()))
            .with(operator_filter(&directives))
            .with(secret_cap())
            .try_init(),
    };
    if let (Some(reason), true) = (set_aside, installed.is_ok()) {
        tracing::warn!(directives = %directives, "RUST_LOG set aside ({reason}): logging by the level setting");
    }
    // Another subscriber was there first: this writer is not used, its thread can go.
    LogGuard(guard.filter(|_| installed.is_ok()))
}

/// `RUST_LOG` from the environment (text that is not UTF-8 as `\u{fffd}`, which
/// [`chosen_directives`] sets aside like any text that is not ASCII).
pub fn rust_log() -> Option<String> {
    match std::env::var("RUST_LOG") {
        Ok(asked) => Some(asked),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => Some("\u{fffd}".into()),
    }
}

/// The directives the log is filtered by: `rust_log` when it is a valid filter, else the level
/// setting; and why `rust_log` was set aside, if it was.
pub fn chosen_directives(rust_log: Option<&str>, level: &str) -> (String, Option<&'static str>) {
    let setting = || crate::config::normalize_log_level(level).unwrap_or_else(|_| "info".into());
    match rust_log {
        None => (setting(), None),
        // Empty (`RUST_LOG=` from a template or an env file) asks for nothing; read as a filter
        // it would enable nothing, errors included.
        Some(asked) if asked.split(',').all(|d| d.trim().is_empty()) => (setting(), None),
        // tracing-subscriber's parser panics on some (`RUST_LOG=" é=debug"`, found by a
        // reviewer); targets are Rust module paths.
        Some(asked) if !asked.is_ascii() => (setting(), Some("it holds characters other than ASCII")),
        // A line break made a target name of the rest: `warn\ndebug` enabled nothing.
        Some(asked) if asked.chars().any(|c| c.is_ascii_control()) => (setting(), Some("it holds control characters")),
        Some(asked) => {
            let asked = crate::config::rust_log_with_tracing_names(asked);
            match EnvFilter::try_new(&asked) {
                Ok(_) => (asked, None),
                Err(_) => (setting(), Some("it is not a valid filter")),
            }
        }
    }
}

/// What the operator asked to see ([`chosen_directives`]). Directives of targets and levels
/// only (`info`, `sluice=debug,warn`), the usual case, are kept as [`Targets`]: the same choice,
/// made without EnvFilter's bookkeeping of every span entered and left (a read lock on each, 7 %
/// of a request's logging). Directives that name spans or fields need EnvFilter.
fn operator_filter<S>(directives: &str) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    match plain_targets(directives) {
        Some(targets) => Box::new(targets),
        None => Box::new(EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// `directives` as [`Targets`] when they name no span or field, with EnvFilter's reading of
/// them (empty directives are skipped); `None` for what only EnvFilter reads.
fn plain_targets(directives: &str) -> Option<Targets> {
    if directives.contains(['[', ']', '{', '}', '"']) {
        return None;
    }
    let kept: Vec<&str> = directives.split(',').filter(|d| !d.is_empty()).collect();
    // `target=` with no level: EnvFilter enables all of the target, Targets only its errors.
    if kept.is_empty() || kept.iter().any(|d| d.ends_with('=')) {
        return None;
    }
    kept.join(",").parse().ok()
}

/// Caps the dependencies that log data at debug level, whatever level was asked for:
/// tokio-postgres logs every statement's parameters, which hold valves (API keys), captured
/// conversations and reports. Found by the suite's secret scan. A layer of its own beside the
/// operator's filter: a directive added to that filter lost to a longer one the operator
/// wrote (`RUST_LOG=tokio_postgres::query=debug` logged the parameters; found by a reviewer).
/// It gives no level hint, so the operator's filter alone sets the most verbose level enabled
/// (and with it the `log` crate's, which skips its disabled records before formatting them).
pub fn secret_cap() -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    filter_fn(|meta| *meta.level() <= tracing::Level::INFO || !meta.target().starts_with("tokio_postgres"))
}

/// How a streamed answer ended, for its closing log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnswerEnd {
    Completed,
    /// The pipe ended it with an error line.
    Failed,
    /// The shutdown grace ran out.
    CutByShutdown,
    /// The client left before the end.
    ClientLeft,
}

/// The closing line of a streamed answer: the request line is logged when the response head
/// is ready, which for a stream says nothing of how long the answer took or how it ended.
/// Logged when dropped, in the request's span.
pub struct AnswerLog {
    span: tracing::Span,
    started: Instant,
    pub bytes: u64,
    pub end: Option<AnswerEnd>,
}

impl AnswerLog {
    /// For the request `req` (timed from its arrival, see [`RequestStart`]), in the current
    /// (request) span.
    pub fn of(req: &actix_web::HttpRequest) -> Self {
        let started = req.extensions().get::<RequestStart>().map(|s| s.0).unwrap_or_else(Instant::now);
        AnswerLog { span: tracing::Span::current(), started, bytes: 0, end: None }
    }
}

#[cfg(test)]
impl AnswerLog {
    /// Outside any request: for tests of the stream body alone.
    pub fn detached() -> Self {
        AnswerLog { span: tracing::Span::none(), started: Instant::now(), bytes: 0, end: None }
    }
}

/// When the request arrived, for timings that outlast the response head.
#[derive(Clone, Copy)]
pub struct RequestStart(pub Instant);

impl Drop for AnswerLog {
    fn drop(&mut self) {
        let end = self.end.unwrap_or(AnswerEnd::ClientLeft);
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let bytes = self.bytes;
        self.span.in_scope(|| match end {
            AnswerEnd::Completed => tracing::info!(duration_ms, bytes, outcome = "completed", "answer ended"),
            AnswerEnd::Failed => tracing::info!(duration_ms, bytes, outcome = "error", "answer ended"),
            AnswerEnd::CutByShutdown => tracing::warn!(duration_ms, bytes, outcome = "cut_by_shutdown", "answer ended"),
            AnswerEnd::ClientLeft => tracing::info!(duration_ms, bytes, outcome = "client_left", "answer ended"),
        });
    }
}

/// A fresh request id, 32 hex digits: a keyed hash (SipHash, keys drawn from the OS once per
/// process) of a counter. It tells log lines apart and reveals nothing of the count; it is not a
/// secret. A UUID v4 asked the OS for randomness on every request: a system call each.
fn request_id() -> HeaderValue {
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(Default::default);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let bits = (u128::from(keys.hash_one((n, 0u8))) << 64) | u128::from(keys.hash_one((n, 1u8)));
    // Into a stack buffer: `format!` with `{:x}` was a visible share of a small request.
    let mut text = [0u8; 32];
    match hex::encode_to_slice(bits.to_be_bytes(), &mut text) {
        Ok(()) => HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("-")),
        Err(_) => HeaderValue::from_static("-"),
    }
}

/// Root span per request and one log line when the response head is ready, or when the
/// client left before it.
pub async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = request_id();
    let started = Instant::now();
    let mut pending = Pending {
        span: tracing::info_span!("request", request_id = %id.to_str().unwrap_or("-"), method = %req.method()),
        metrics: req.app_data::<actix_web::web::Data<crate::metrics::Metrics>>().cloned(),
        path: PathStart::of(req.path()),
        started,
        answered: false,
    };
    req.extensions_mut().insert(RequestStart(started));
    // A panic is caught further in (`catch_panics`), still inside the span: its log line
    // carries the request id.
    let result = next.call(req).instrument(pending.span.clone()).await;
    pending.answered = true;
    let (span, metrics) = (&pending.span, pending.metrics.take());
    let elapsed = started.elapsed();
    let elapsed_ms = millis(elapsed);
    match result {
        Ok(mut res) => {
            // The routes under an id are named by their path (no pattern of actix-web's), also
            // when refused before they were reached (no key, a CORS preflight).
            let route: std::borrow::Cow<'static, str> =
                match crate::id_routes::name_of(res.request().match_info().as_str()) {
                    Some(name) => name.into(),
                    None => res.request().match_pattern().map_or("unmatched".into(), Into::into),
                };
            let status = res.status().as_u16();
            span.in_scope(
                || tracing::info!(route = %route, path = %res.request().path(), status, elapsed_ms, "handled"),
            );
            if let Some(m) = metrics {
                m.observe_request(&route, status, elapsed);
            }
            res.headers_mut().insert(HeaderName::from_static("x-request-id"), id);
            Ok(res)
        }
        Err(mut e) => {
            span.in_scope(|| tracing::warn!(error = %e, elapsed_ms, "failed"));
            // The answer is made from the error after this returns: the id goes with it.
            e.add_response_mapper(move |mut res| {
                res.headers_mut().insert(HeaderName::from_static("x-request-id"), id.clone());
                res
            });
            // An error instead of a response (a caught panic, see panics::catch_panics, or a
            // middleware's error): the request is gone, so there is no route to name.
            if let Some(m) = metrics {
                m.observe_request("failed", e.as_response_error().status_code().as_u16(), elapsed);
            }
            Err(e)
        }
    }
}

/// Milliseconds with three decimals, as the request line shows them.
fn millis(elapsed: std::time::Duration) -> f64 {
    (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A request on its way to its answer. Dropped unanswered, its client left (the connection
/// closed, so actix-web dropped the request's future): said in the log and counted with
/// status 499, as nginx counts it. Before, such a request left no line and no count, though
/// its upstream call was made (found by a red team).
struct Pending {
    span: tracing::Span,
    metrics: Option<actix_web::web::Data<crate::metrics::Metrics>>,
    path: PathStart,
    started: Instant,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let elapsed = self.started.elapsed();
        let path = self.path.text();
        let (route, cut) = match self.path.cut_route {
            None => (route_of(path), ""),
            Some(named) => (named, "…"),
        };
        let path = format_args!("{path}{cut}");
        let elapsed_ms = millis(elapsed);
        self.span.in_scope(|| {
            tracing::info!(route, %path, status = 499, elapsed_ms, outcome = "client_left", "left before the answer")
        });
        if let Some(m) = &self.metrics {
            m.observe_request(route, 499, elapsed);
        }
    }
}

/// The start of a request's path and its route's name, kept on the stack for the line of a
/// request left before its answer: the request goes to its route unshared, and a copy of its
/// URI allocated on every request.
struct PathStart {
    bytes: [u8; PathStart::KEPT],
    len: usize,
    /// For a path longer than what is kept, its route, named when the request came.
    cut_route: Option<&'static str>,
}

impl PathStart {
    const KEPT: usize = 96;

    fn of(path: &str) -> Self {
        let mut len = path.len().min(Self::KEPT);
        while !path.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0u8; Self::KEPT];
        bytes[..len].copy_from_slice(&path.as_bytes()[..len]);
        // Named now only when the path is longer than what is kept; else when it is needed.
        let cut_route = (len < path.len()).then(|| route_of(path));
        PathStart { bytes, len, cut_route }
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// The route a path names, as the request line names it, without actix-web's router.
fn route_of(path: &str) -> &'static str {
    crate::id_routes::name_of(path).or_else(|| crate::routes::fixed_route(path)).unwrap_or("unmatched")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_filter_lets_statement_parameters_through() {
        for asked in
            ["trace", "tokio_postgres=trace", "tokio_postgres::query=debug,info", "info,tokio_postgres::query[x]=trace"]
        {
            let subscriber =
                tracing_subscriber::fmt().with_env_filter(EnvFilter::new(asked)).finish().with(secret_cap());
            tracing::subscriber::with_default(subscriber, || {
                assert!(!tracing::enabled!(target: "tokio_postgres::query", tracing::Level::DEBUG), "{asked}");
                assert!(!tracing::enabled!(target: "tokio_postgres", tracing::Level::DEBUG), "{asked}");
                assert!(tracing::enabled!(target: "tokio_postgres::connection", tracing::Level::INFO), "{asked}");
            });
        }
        let subscriber = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("trace")).finish().with(secret_cap());
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(target: "sluice::store", tracing::Level::TRACE));
        });
        // The cap does not widen the level the operator asked for.
        let subscriber = tracing_subscriber::fmt().with_env_filter(EnvFilter::new("info")).finish().with(secret_cap());
        assert_eq!(tracing::Subscriber::max_level_hint(&subscriber), Some(tracing::level_filters::LevelFilter::INFO));
    }

    /// What a subscriber filtered by `filter` enables: for each target, levels trace to error.
    fn verdicts<L>(filter: L) -> (Vec<[bool; 5]>, Option<tracing::level_filters::LevelFilter>)
    where
        L: Layer<tracing_subscriber::Registry> + Send + Sync + 'static,
    {
        use tracing::Level;
        macro_rules! each_target {
            ($($target:literal),*) => {
                vec![$([
                    tracing::enabled!(target: $target, Level::TRACE),
                    tracing::enabled!(target: $target, Level::DEBUG),
                    tracing::enabled!(target: $target, Level::INFO),
                    tracing::enabled!(target: $target, Level::WARN),
                    tracing::enabled!(target: $target, Level::ERROR),
                ]),*]
            };
        }
        let subscriber = tracing_subscriber::registry().with(filter);
        let hint = tracing::Subscriber::max_level_hint(&subscriber);
        let seen = tracing::subscriber::with_default(subscriber, || {
            each_target!(
                "sluice",
                "sluice::store",
                "sluice::store::postgres",
                "sluicex",
                "actix_web",
                "actix_server::worker",
                "h2",
                "tokio_postgres::query"
            )
        });
        (seen, hint)
    }

    #[test]
    fn plain_directives_read_as_envfilter_reads_them() {
        for asked in [
            "info",
            "warn",
            "debug",
            "trace",
            "error",
            "off",
            "INFO",
            "Warn",
            "sluice",
            "sluice=debug",
            "sluice=debug,warn",
            "warn,sluice=debug",
            "sluice::store=trace,info",
            "actix_web=warn,sluice=info,error",
            "info,sluice=off",
            "info,,sluice=debug,",
            "sluice::store=debug",
            "sluice=trace,sluice::store=warn",
            "actix_web=4,2",
        ] {
            let targets = plain_targets(asked);
            assert!(targets.is_some(), "{asked} is plain");
            assert_eq!(verdicts(targets.unwrap()), verdicts(EnvFilter::try_new(asked).unwrap()), "{asked}");
        }
        // Odd spellings: read alike, or left to EnvFilter.
        for odd in [
            " info",
            "info ",
            "sluice =debug",
            "sluice= debug",
            " sluice=debug",
            "sluice::=debug",
            "=debug",
            "sluice=",
            "a,b",
            "sluice=DEBUG",
            "sluice=5",
            "sluice=6",
            "sluice=off,info",
            "::=info",
            "sluice=debug=info",
            "=",
            "sluice-bench=debug,warn",
            "sluice::store::=trace",
            "sluice,info",
            "info,sluice",
            "trace,sluice=warn",
        ] {
            let (Some(targets), Ok(env)) = (plain_targets(odd), EnvFilter::try_new(odd)) else { continue };
            assert_eq!(verdicts(targets), verdicts(env), "{odd:?}");
        }
        // The comparison sees a difference when there is one.
        assert_ne!(verdicts(plain_targets("info").unwrap()), verdicts(EnvFilter::new("sluice::store=debug,info")));
        for only_envfilter in ["", ",", "sluice[request]=debug", "[{request_id}]=trace", "info,sluice[{x=\"y\"}]=debug"]
        {
            assert!(plain_targets(only_envfilter).is_none(), "{only_envfilter}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(sluice_sdk::fuzz::cases()))]
        /// Directives spelt from the pieces operators (and typos) use: whenever they are kept
        /// as Targets, they enable what EnvFilter would.
        #[test]
        fn any_plain_directives_read_as_envfilter_reads_them(
            pieces in proptest::collection::vec(
                "(sluice|sluice::store|actix_web|h2|tokio_postgres::query|:|::| |)(=|)(info|debug|warn|trace|error|off|INFO|Debug|[0-6]| |)(,|)",
                0..5,
            )
        ) {
            let asked = pieces.concat();
            if let (Some(targets), Ok(env)) = (plain_targets(&asked), EnvFilter::try_new(&asked)) {
                proptest::prop_assert_eq!(verdicts(targets), verdicts(env), "{:?}", asked);
            }
        }
    }

    #[test]
    fn rust_log_wins_unless_it_is_empty_no_filter_or_not_ascii() {
        assert_eq!(chosen_directives(None, "WARNING"), ("warn".into(), None));
        for empty in ["", " ", ",", " , "] {
            assert_eq!(chosen_directives(Some(empty), "debug"), ("debug".into(), None), "{empty:?}");
        }
        assert_eq!(chosen_directives(Some("off"), "debug"), ("off".into(), None));
        // What an empty one would have done: no line at all, errors included.
        assert!(verdicts(EnvFilter::try_new("").unwrap()).0.iter().flatten().all(|on| !on));
        assert_eq!(chosen_directives(Some("sluice=debug,info"), "warn"), ("sluice=debug,info".into(), None));
        assert_eq!(
            chosen_directives(Some("sluice=verbose"), "warn"),
            ("warn".into(), Some("it is not a valid filter"))
        );
        // Python's names are levels, not targets that silence everything else.
        assert_eq!(chosen_directives(Some("warning"), "info"), ("warn".into(), None));
        assert_eq!(chosen_directives(Some("sluice=critical,info"), "warn"), ("sluice=error,info".into(), None));
        assert_eq!(
            chosen_directives(Some("warn\ndebug"), "info"),
            ("info".into(), Some("it holds control characters"))
        );
        // Each of these made tracing-subscriber's parser panic at start.
        for asked in [" é=debug", "\u{85}_=x", "\n\u{3000}-=\n", "\u{fffd}"] {
            assert_eq!(chosen_directives(Some(asked), "error").0, "error", "{asked:?}");
            assert!(chosen_directives(Some(asked), "error").1.is_some());
        }
    }

    #[test]
    fn request_ids_are_distinct_hex_and_do_not_count() {
        let ids: Vec<String> = (0..10_000).map(|_| request_id().to_str().unwrap().to_owned()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())), "{}", ids[0]);
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        // Consecutive ids share no visible counter: their leading halves differ.
        assert!(ids.windows(2).filter(|w| w[0][..16] == w[1][..16]).count() == 0);
    }
}
