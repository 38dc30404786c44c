//! The fields of a text log line, every value written with its control characters escaped.
//!
//! tracing-subscriber's own text fields escape terminal sequences in the message only, and
//! leave newlines alone: a caller's text inside another field (a valves update naming an
//! unknown valve `"x\n2026-… INFO …"`, logged as the refusal's `error`) printed a second,
//! forged line. Here every value, message included, goes through [`Escaped`], so one event is
//! one line. The layout is the default's (`message name=value name="text"`), so lines read as
//! before; field names come from the code and are written as they are.
//!
//! Not painting field names also saves the empty-style formatting tracing-subscriber does for
//! each of them even without a terminal (2.4 % of a small request's CPU at `info`).

use std::error::Error;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

use super::escaped::{write_causes, write_value, AsRust, Escaped, FIELDS_BYTES};
use super::staged;

/// Text-format fields: `DefaultFields`' layout, every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineFields;

impl<'a> MakeVisitor<Writer<'a>> for LineFields {
    type Visitor = LineFieldsVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        LineFieldsVisitor { target, text: staged::take(), first: true, result: Ok(()), left: FIELDS_BYTES }
    }
}

/// Writes one event's or span's fields, separated by spaces: into `text`, then to `target` in
/// one piece when done (a span's string is then allocated once, see [`staged`]).
pub struct LineFieldsVisitor<'a> {
    target: Writer<'a>,
    text: String,
    first: bool,
    result: fmt::Result,
    /// What is left of [`FIELDS_BYTES`] for the values still to come.
    left: usize,
}

impl LineFieldsVisitor<'_> {
    fn record(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.write(field, value);
        }
    }

    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) -> fmt::Result {
        let name = field.name();
        // tracing-log's copy of a `log` record's metadata: already in the line's target.
        if name.starts_with("log.") {
            return Ok(());
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !std::mem::take(&mut self.first) {
            self.text.write_char(' ')?;
        }
        if name != "message" {
            self.text.write_str(name)?;
            self.text.write_char('=')?;
        }
        write_value::<AsRust>(&mut self.text, value, &mut self.left)
    }
}

impl Visit for LineFieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // The message bare, other text quoted: as `DefaultFields` writes them.
        if field.name() == "message" {
            self.record(field, format_args!("{value}"))
        } else {
            self.record(field, format_args!("{value:?}"))
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn Error + 'static)) {
        self.record(field, format_args!("{value}"));
        if let (Some(source), Ok(())) = (value.source(), self.result) {
            self.result = write_sources(&mut self.text, field.name(), source, &mut self.left);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format_args!("{value:?}"))
    }
}

/// ` name.sources=[first, second]`: an error's causes, as `DefaultFields` lists them
/// ([`write_causes`]).
fn write_sources(writer: &mut String, name: &str, first: &(dyn Error + 'static), left: &mut usize) -> fmt::Result {
    write!(writer, " {name}.sources=[")?;
    write_causes(writer, first, ", ", left, write_value::<AsRust>)?;
    writer.write_char(']')
}

impl VisitOutput<fmt::Result> for LineFieldsVisitor<'_> {
    fn finish(mut self) -> fmt::Result {
        // What was written before a failure goes out too, as it did when written directly: a
        // `Span::record` that fails keeps its partial value (the line of an event that fails
        // is dropped either way).
        staged::hand_over(&mut self.target, self.text, self.result)
    }
}

impl VisitFmt for LineFieldsVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.text
    }
}

/// Text shown on one line of a terminal as the log shows it: every character [`Escaped`]
/// escapes written as its escape, nothing cut. For text from outside printed by the command
/// line (an upstream's error kept in the outbox), where a raw ESC would drive the operator's
/// terminal.
pub struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Escaped::<_, AsRust>::new(f, usize::MAX);
        out.write_str(self.0)?;
        out.finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::FormatFields;

    use super::super::escaped::{is_hazard, VALUE_BYTES};
    use super::super::test_log::{logged, Failure};
    use super::*;

    /// What `log` prints through a text subscriber that formats fields with `fields`.
    fn printed<N>(fields: N, log: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        logged(
            |out| {
                tracing_subscriber::fmt()
                    .with_writer(move || out.clone())
                    .with_ansi(false)
                    .without_time()
                    .with_max_level(tracing::Level::TRACE)
                    .fmt_fields(fields)
                    .finish()
            },
            log,
        )
    }

    fn every_kind_of_field(text: &'static str) {
        let error = Failure("outer", Some(Box::new(Failure("middle", Some(Box::new(Failure("inner", None)))))));
        let lone = Failure("alone", None);
        let span = tracing::info_span!("request", request_id = %text, method = "POST", n = 3);
        let _in = span.enter();
        tracing::info!(
            route = %text,
            quoted = text,
            debugged = ?text,
            status = 200u16,
            elapsed_ms = 0.25,
            negative = -4i64,
            ok = true,
            r#type = "filter",
            error = &error as &(dyn Error + 'static),
            lone = &lone as &(dyn Error + 'static),
            "handled {text}"
        );
        tracing::warn!(text);
    }

    #[test]
    fn one_line_escapes_what_would_drive_a_terminal_and_cuts_nothing() {
        let long = "x".repeat(10_000);
        let text = format!("HTTP 500: \u{1b}]0;owned\u{7}\n\u{9b}2J \u{202e}txt {long}");
        let shown = OneLine(&text).to_string();
        assert_eq!(shown, format!("HTTP 500: \\u{{1b}}]0;owned\\u{{7}}\\n\\u{{9b}}2J \\u{{202e}}txt {long}"));
        assert_eq!(OneLine("plain - text").to_string(), "plain - text");
    }

    #[test]
    fn ordinary_lines_read_as_tracing_subscribers_own() {
        let ours = printed(LineFields, || every_kind_of_field("/{id}/filter/inlet é €"));
        let theirs = printed(DefaultFields::new(), || every_kind_of_field("/{id}/filter/inlet é €"));
        assert_eq!(ours, theirs);
        assert_eq!(ours.lines().count(), 2, "{ours}");
        assert!(ours.contains("error=outer error.sources=[middle, inner] lone=alone"), "{ours}");
        assert!(!ours.contains("r#type") && ours.contains("type=\"filter\""), "{ours}");
    }

    #[test]
    fn a_record_that_fails_part_way_keeps_what_it_wrote_as_before() {
        struct FailsAfterPart;
        impl fmt::Display for FailsAfterPart {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("part")?;
                Err(fmt::Error)
            }
        }
        let log = || {
            let span = tracing::info_span!("req", a = 1, b = tracing::field::Empty, c = tracing::field::Empty);
            span.record("b", tracing::field::display(FailsAfterPart));
            span.record("c", 3);
            span.in_scope(|| tracing::info!("line"));
        };
        let ours = printed(LineFields, log);
        assert_eq!(ours, printed(DefaultFields::new(), log));
        assert!(ours.contains("req{a=1 b=part c=3}"), "{ours}");
    }

    #[test]
    fn a_value_cannot_start_a_line_or_steer_a_terminal() {
        let hostile = "x\n2026-01-01T00:00:00.000000Z  INFO forged\r\u{1b}[31m\u{7}\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{61c}\t";
        let out = printed(LineFields, || {
            every_kind_of_field(hostile);
            let error = Failure("bad\nline", Some(Box::new(Failure("cause\u{1b}[2J", None))));
            tracing::error!(error = &error as &(dyn Error + 'static), "refused");
        });
        assert_eq!(out.lines().count(), 3, "{out}");
        assert!(out.chars().filter(|&c| c != '\n').all(|c| !is_hazard(c)), "{out:?}");
        let escaped = r"x\n2026-01-01T00:00:00.000000Z  INFO forged\r\u{1b}[31m\u{7}\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{61c}\t";
        // Bare in the message, the span and `%` fields; `?` and text fields were already
        // escaped by `Debug`, which writes the same escapes.
        assert!(out.contains(&format!("request{{request_id={escaped} method=\"POST\" n=3}}")), "{out}");
        assert!(out.contains(&format!("handled {escaped} route={escaped} quoted=\"{escaped}\"")), "{out}");
        assert!(out.contains(r"error=bad\nline error.sources=[cause\u{1b}[2J]"), "{out}");
    }

    #[test]
    fn tracing_subscribers_own_fields_let_a_line_be_forged() {
        // Why this module exists: if this starts failing, the default has learned to escape.
        let out = printed(DefaultFields::new(), || tracing::info!(error = %"x\nforged", "refused"));
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    #[test]
    fn long_values_are_cut_and_say_by_how_much() {
        let out = printed(LineFields, || {
            tracing::info!(name = %"é".repeat(1 << 20), control = %"\u{7f}".repeat(5000), short = 1, "{}", "x".repeat(5000));
        });
        assert_eq!(out.lines().count(), 1);
        // The message and the name take their 4 KiB each, which spends the line's 8 KiB: the
        // rest show 64 bytes, escapes counted as written (`\u{7f}` is 6).
        assert!(out.contains(&format!("{}…(+904 bytes) name=", "x".repeat(VALUE_BYTES))), "{out}");
        assert!(
            out.contains(&format!("name={}…(+{} bytes) control=", "é".repeat(2048), (2 << 20) - VALUE_BYTES)),
            "{out}"
        );
        assert!(out.contains(&format!("control={}…(+{} bytes) short=1", r"\u{7f}".repeat(10), 5000 - 10)), "{out}");
        assert!(out.len() < FIELDS_BYTES + 1024, "{} bytes", out.len());
    }

    #[test]
    fn the_most_a_line_of_hostile_values_can_be() {
        // Every value as long as a caller can make it, each character an escape: the line
        // stays far below the 16 KiB at which Docker splits it.
        let error =
            (0..40).fold(None, |cause, _| Some(Box::new(Failure("\u{1b}".repeat(10_000).leak(), cause)))).unwrap();
        let error = &*error;
        let out = printed(LineFields, || {
            let long = "\u{2028}".repeat(10_000);
            tracing::info!(a = %long, b = %long, c = %long, d = %long, e = %long, f = %long, g = %long, h = %long,
                error = error as &(dyn Error + 'static), "{long}");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.len() < FIELDS_BYTES + 2048, "{} bytes", out.len());
        assert!(out.trim_end().ends_with(", …(+31 more)]"), "{out}");
    }
}
