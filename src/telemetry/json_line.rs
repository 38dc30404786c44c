//! JSON log lines (`SLUICE_LOG_FORMAT=json`) in tracing-subscriber's layout (`timestamp`,
//! `level`, the event's fields, `target`, the current `span` and the `spans` from the root),
//! every string written through [`AsJson`] and cut as the text log's values are.
//!
//! tracing-subscriber's JSON writer cut nothing: a valves update naming a megabyte-long valve
//! made a megabyte-long line, which Docker splits every 16 KiB into records that are not JSON
//! (a collector drops or misreads them), and it left C1 controls, line separators and
//! bidirectional marks raw for whoever reads the file on a terminal. Its span fields were also
//! parsed back from their text into a map for every line.

use std::error::Error;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::escaped::{write_causes, write_value, AsJson, Escapes, FIELDS_BYTES, VALUE_BYTES};
use super::line_time::LineTime;
use super::staged::staged;

/// The most one span's fields write, `Span::record`s included.
const SPAN_FIELDS_BYTES: usize = 1536;
/// The most the spans' fields write in one line, where a span is written twice (as `span` and
/// in `spans`): a span whose fields do not fit any more is written without them. With the
/// event's [`FIELDS_BYTES`] a line stays under Docker's 16 KiB.
const SPANS_BYTES: usize = 4096;
/// Spans listed in `spans`, from the root; sluice opens one per request.
const MAX_SPANS: usize = 4;

/// Writes one event as one JSON object on one line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

/// A span's fields as `"name":value` entries, kept with the span and put into each line
/// written inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<S> FormatEvent<S, JsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // A `log` record's target and level, not tracing-log's stand-in for them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        LineTime.format_time(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "\",\"level\":\"TRACE\"",
            Level::DEBUG => "\",\"level\":\"DEBUG\"",
            Level::INFO => "\",\"level\":\"INFO\"",
            Level::WARN => "\",\"level\":\"WARN\"",
            Level::ERROR => "\",\"level\":\"ERROR\"",
        })?;
        let mut entries = Entries::new(&mut writer, FIELDS_BYTES, true);
        event.record(&mut entries);
        entries.result?;
        writer.write_str(",\"target\":")?;
        name(&mut writer, meta.target())?;
        let current = event.parent().and_then(|id| ctx.span(id)).or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            let mut left = SPANS_BYTES;
            writer.write_str(",\"span\":")?;
            write_span(&mut writer, &current, &mut left)?;
            writer.write_str(",\"spans\":[")?;
            for (n, span) in current.scope().from_root().take(MAX_SPANS).enumerate() {
                if n > 0 {
                    writer.write_char(',')?;
                }
                write_span(&mut writer, &span, &mut left)?;
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    }
}

/// `{"field":value,…,"name":"span name"}`, the fields if they fit in `left` (which they
/// spend), else `"fields":"…(+N bytes)"`.
fn write_span<S>(writer: &mut Writer<'_>, span: &SpanRef<'_, S>, left: &mut usize) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
{
    writer.write_char('{')?;
    let extensions = span.extensions();
    match extensions.get::<FormattedFields<JsonFields>>().map(|f| f.fields.as_str()).filter(|f| !f.is_empty()) {
        Some(fields) if fields.len() <= *left => {
            *left -= fields.len();
            writer.write_str(fields)?;
            writer.write_char(',')?;
        }
        Some(fields) => write!(writer, "\"fields\":\"…(+{} bytes)\",", fields.len())?,
        None => {}
    }
    writer.write_str("\"name\":")?;
    name(writer, span.name())?;
    writer.write_char('}')
}

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        // A new span's fields: its string allocated once ([`staged`]).
        staged(&mut writer, |text| {
            let mut text = Writer::new(text);
            let mut entries = Entries::new(&mut text, SPAN_FIELDS_BYTES, false);
            fields.record(&mut entries);
            entries.result
        })
    }

    fn add_fields(&self, current: &'w mut FormattedFields<Self>, fields: &tracing::span::Record<'_>) -> fmt::Result {
        let separate = !current.fields.is_empty();
        // What the span's fields wrote so far is spent: records cannot grow it without bound.
        let left = SPAN_FIELDS_BYTES.saturating_sub(current.fields.len());
        let mut writer = current.as_writer();
        let mut entries = Entries::new(&mut writer, left, separate);
        fields.record(&mut entries);
        entries.result
    }
}

/// `"name":value` entries, comma separated; strings escaped and cut within `left`.
struct Entries<'a, 'w> {
    writer: &'a mut Writer<'w>,
    /// A comma is due before the next entry.
    separate: bool,
    left: usize,
    result: fmt::Result,
}

impl<'a, 'w> Entries<'a, 'w> {
    fn new(writer: &'a mut Writer<'w>, budget: usize, separate: bool) -> Self {
        Entries { writer, separate, left: budget, result: Ok(()) }
    }

    /// Writes `"name":` then the value with `value`, unless an earlier entry failed or the
    /// field is not written.
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>, &mut usize) -> fmt::Result) {
        if self.result.is_err() || unwritten(field) {
            return;
        }
        self.result = self.key(field.name());
        if self.result.is_ok() {
            self.result = value(self.writer, &mut self.left);
        }
    }

    fn key(&mut self, key: &str) -> fmt::Result {
        if std::mem::replace(&mut self.separate, true) {
            self.writer.write_char(',')?;
        }
        name(self.writer, key)?;
        self.writer.write_char(':')
    }

    /// `"error.sources":["cause","its cause"]`, as the text log lists an error's causes; once
    /// the budget is spent, how many more there are.
    fn sources(&mut self, field: &Field, first: &(dyn Error + 'static)) -> fmt::Result {
        self.key(&format!("{}.sources", field.name()))?;
        self.writer.write_char('[')?;
        write_causes(self.writer, first, ",", &mut self.left, string)?;
        self.writer.write_char(']')
    }

    fn raw(&mut self, field: &Field, value: impl fmt::Display) {
        self.entry(field, |writer, _| write!(writer, "{value}"));
    }
}

/// tracing-log's copy of a `log` record's metadata: already in the line's target.
fn unwritten(field: &Field) -> bool {
    field.name().starts_with("log.")
}

/// A name from the code (a field, a target, a span), as a JSON string: escaped all the same, so
/// the line is JSON whatever it holds.
fn name(writer: &mut impl Write, name: &str) -> fmt::Result {
    // Nearly always plain and short: written as it is, without the formatting machinery.
    if name.len() <= VALUE_BYTES && !name.bytes().any(AsJson::may_start) {
        writer.write_char('"')?;
        writer.write_str(name)?;
        return writer.write_char('"');
    }
    string(writer, format_args!("{name}"), &mut { VALUE_BYTES })
}

/// `"text"`, escaped and cut ([`write_value`]) within `left`.
fn string(writer: &mut impl Write, value: fmt::Arguments<'_>, left: &mut usize) -> fmt::Result {
    writer.write_char('"')?;
    write_value::<AsJson>(writer, value, left)?;
    writer.write_char('"')
}

impl Visit for Entries<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |writer, left| string(writer, format_args!("{value}"), left));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |writer, left| string(writer, format_args!("{value:?}"), left));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.entry(field, |writer, left| string(writer, format_args!("{value}"), left));
        if let (Some(first), Ok(()), false) = (value.source(), self.result, unwritten(field)) {
            self.result = self.sources(field, first);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // Rust writes an f64 without an exponent: `f64::MAX` as 309 digits, which serde's JSON
        // refuses to read back. Very large and very small ones get an exponent; JSON has no NaN.
        if !value.is_finite() {
            self.raw(field, "null");
        } else if value == 0.0 || (1e-6..1e15).contains(&value.abs()) {
            self.raw(field, value);
        } else {
            self.raw(field, format_args!("{value:e}"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_json::Value;

    use super::super::escaped::is_hazard;
    use super::super::test_log::{logged, Failure};
    use super::*;

    /// What `log` prints as JSON lines: ours.
    fn ours(log: impl FnOnce()) -> String {
        logged(
            |out| {
                tracing_subscriber::fmt()
                    .with_writer(move || out.clone())
                    .with_max_level(tracing::Level::TRACE)
                    .fmt_fields(JsonFields)
                    .event_format(JsonLine)
                    .finish()
            },
            log,
        )
    }

    /// The same through tracing-subscriber's own JSON writer, as sluice used it.
    fn theirs(log: impl FnOnce()) -> String {
        logged(
            |out| {
                tracing_subscriber::fmt()
                    .with_writer(move || out.clone())
                    .with_max_level(tracing::Level::TRACE)
                    .json()
                    .flatten_event(true)
                    .finish()
            },
            log,
        )
    }

    fn parsed(lines: &str) -> Vec<Value> {
        lines.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    /// Without its time, which differs from one writer to the other.
    fn untimed(mut line: Value) -> Value {
        line.as_object_mut().unwrap().remove("timestamp");
        line
    }

    fn every_kind_of_field(text: &'static str) {
        let span = tracing::info_span!("request", request_id = %text, method = "POST", n = 3);
        let _in = span.enter();
        let inner = tracing::debug_span!("inner", step = 2u8);
        let _inner = inner.enter();
        tracing::info!(
            route = %text,
            quoted = text,
            debugged = ?text,
            status = 200u16,
            elapsed_ms = 0.25,
            negative = -4i64,
            big = u128::MAX,
            ok = true,
            r#type = "filter",
            "handled {text}"
        );
        tracing::warn!(text);
    }

    #[test]
    fn ordinary_lines_read_as_tracing_subscribers_own() {
        let ours = ours(|| every_kind_of_field("/{id}/filter/inlet é € \"q\" \\ \n"));
        let theirs = theirs(|| every_kind_of_field("/{id}/filter/inlet é € \"q\" \\ \n"));
        assert_eq!(ours.lines().count(), 2, "{ours}");
        let ours: Vec<Value> = parsed(&ours).into_iter().map(untimed).collect();
        let theirs: Vec<Value> = parsed(&theirs).into_iter().map(untimed).collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours[0]["span"]["name"], "inner");
        assert_eq!(ours[0]["spans"][0]["request_id"], "/{id}/filter/inlet é € \"q\" \\ \n");
    }

    #[test]
    fn the_time_is_the_text_logs() {
        let line = &parsed(&ours(|| tracing::info!("x")))[0];
        let time = line["timestamp"].as_str().unwrap();
        // 2026-12-04T19:05:20.062307Z
        assert_eq!((time.len(), &time[4..5], &time[10..11], &time[26..]), (27, "-", "T", "Z"), "{time}");
        assert!(line.get("span").is_none() && line.get("spans").is_none(), "{line}");
    }

    #[test]
    fn an_error_lists_its_causes_and_odd_numbers_stay_json() {
        let error = Failure("outer\n", Some(Box::new(Failure("middle\"", Some(Box::new(Failure("inner", None)))))));
        let out = ours(|| {
            tracing::error!(
                error = &error as &(dyn Error + 'static),
                nan = f64::NAN,
                inf = f64::INFINITY,
                tiny = 1e-300,
                max = f64::MAX,
                min = f64::MIN,
                least = 5e-324,
                big = 1e21,
                small = -0.25,
                "refused"
            )
        });
        let line = &parsed(&out)[0];
        assert_eq!(line["error"], "outer\n");
        assert_eq!(line["error.sources"], serde_json::json!(["middle\"", "inner"]));
        assert!(line["nan"].is_null() && line["inf"].is_null(), "{line}");
        let floats = [
            ("tiny", 1e-300),
            ("max", f64::MAX),
            ("min", f64::MIN),
            ("least", 5e-324),
            ("big", 1e21),
            ("small", -0.25),
        ];
        for (key, value) in floats {
            assert_eq!(line[key].as_f64(), Some(value), "{key}: {out}");
        }
        assert!(out.contains("\"small\":-0.25,"), "{out}");
    }

    #[test]
    fn a_value_keeps_its_text_and_shows_no_control_character() {
        let hostile = "x\"}\n{\"level\":\"ERROR\"}\r\u{1b}[31m\u{7}\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{61c}\t\\";
        let out = ours(|| {
            let span = tracing::info_span!("request", method = %hostile);
            let _in = span.enter();
            tracing::warn!(error = %hostile, debugged = ?hostile, "{hostile}");
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.trim_end().chars().all(|c| !is_hazard(c)), "{out:?}");
        let line = &parsed(&out)[0];
        for value in [&line["message"], &line["error"], &line["span"]["method"], &line["spans"][0]["method"]] {
            assert_eq!(value, hostile);
        }
        assert_eq!(line["debugged"], format!("{hostile:?}"));
    }

    #[test]
    fn the_most_a_line_of_hostile_values_can_be() {
        // Every value as long as a caller can make it, each character an escape, in a span
        // too: the line is still one JSON object, far below Docker's 16 KiB.
        let long: &'static str = "\u{2028}\"".repeat(100_000).leak();
        let error = Failure(long, Some(Box::new(Failure(long, None))));
        let out = ours(|| {
            let span = tracing::info_span!("request", request_id = %long, method = %long);
            let _in = span.enter();
            tracing::info!(a = %long, b = %long, c = %long, d = %long, e = %long, f = %long, g = %long, h = %long,
                error = &error as &(dyn Error + 'static), "{long}");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.len() < 14 * 1024, "{} bytes", out.len());
        let line = &parsed(&out)[0];
        let message = line["message"].as_str().unwrap();
        assert!(
            message.starts_with("\u{2028}\"\u{2028}") && message.ends_with(&format!("…(+{} bytes)", long.len() - 2048)),
            "{message:.80}"
        );
        assert!(line["span"]["method"].as_str().unwrap().ends_with("bytes)"), "{line}");
    }

    #[test]
    fn no_span_or_error_makes_a_line_docker_would_split() {
        // What sluice does not do today, found by a reviewer reading the code: nested spans
        // with long fields, a field recorded again and again, errors with many long causes,
        // a `log.` error field with causes in a span.
        let long: &'static str = "\u{1b}".repeat(10_000).leak();
        let chain = (0..40).fold(None, |cause, _| Some(Box::new(Failure(long, cause)))).unwrap();
        let chain = &*chain as &(dyn Error + 'static);
        let out = ours(|| {
            let outer = tracing::info_span!("outer", a = %long, b = %long, log.err = chain, n = 1);
            let _outer = outer.enter();
            let middle = tracing::info_span!("middle", a = %long, user = tracing::field::Empty);
            for _ in 0..20 {
                middle.record("user", long);
            }
            let _middle = middle.enter();
            let inner = tracing::info_span!("inner", a = %long);
            let _inner = inner.enter();
            let innermost = tracing::info_span!("innermost", a = %long);
            let _innermost = innermost.enter();
            tracing::info!(e1 = chain, e2 = chain, e3 = chain, a = %long, "{long}");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.len() < 16 * 1024, "{} bytes", out.len());
        let line = &parsed(&out)[0];
        assert_eq!(line["spans"][0]["n"], 1, "{line}");
        assert_eq!(line["spans"].as_array().unwrap().len(), MAX_SPANS);
        assert!(line["spans"][3]["fields"].as_str().unwrap().starts_with("…(+"), "{line}");
        let causes = line["e3.sources"].as_array().unwrap();
        assert!(causes.last().unwrap().as_str().unwrap().ends_with(" more)"), "{line}");
    }

    #[test]
    fn fields_recorded_later_join_the_span() {
        let out = ours(|| {
            let span = tracing::info_span!("request", request_id = "a", user = tracing::field::Empty);
            span.record("user", "u\n1");
            let _in = span.enter();
            tracing::info!("x");
        });
        let line = &parsed(&out)[0];
        assert_eq!(line["span"], serde_json::json!({"request_id": "a", "user": "u\n1", "name": "request"}));
    }
}
