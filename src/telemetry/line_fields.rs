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

/// Text-format fields: `DefaultFields`' layout, every value escaped.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineFields;

impl<'a> MakeVisitor<Writer<'a>> for LineFields {
    type Visitor = LineFieldsVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        LineFieldsVisitor { writer: target, first: true, result: Ok(()), left: FIELDS_BYTES }
    }
}

/// Writes one event's or span's fields, separated by spaces.
pub struct LineFieldsVisitor<'a> {
    writer: Writer<'a>,
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
            self.writer.write_char(' ')?;
        }
        if name != "message" {
            self.writer.write_str(name)?;
            self.writer.write_char('=')?;
        }
        write_value(&mut self.writer, value, &mut self.left)
    }
}

/// One value, escaped and cut ([`Escaped`]): at most what `left`, the line's remaining
/// budget, allows (never less than [`SMALL_VALUE_BYTES`]), which it then spends.
fn write_value(writer: &mut Writer<'_>, value: fmt::Arguments<'_>, left: &mut usize) -> fmt::Result {
    let mut out = Escaped::new(writer, (*left).clamp(SMALL_VALUE_BYTES, VALUE_BYTES));
    out.write_fmt(value)?;
    *left = left.saturating_sub(out.written);
    out.finish()
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
            self.result = write_sources(&mut self.writer, field.name(), source, &mut self.left);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, format_args!("{value:?}"))
    }
}

/// Causes listed after an error, at most: a chain that comes back to itself would not end.
const MAX_SOURCES: usize = 32;

/// ` name.sources=[first, second]`: an error's causes, as `DefaultFields` lists them.
fn write_sources(writer: &mut Writer<'_>, name: &str, first: &(dyn Error + 'static), left: &mut usize) -> fmt::Result {
    write!(writer, " {name}.sources=[")?;
    let causes = std::iter::successors(Some(first), |&error| error.source());
    for (n, error) in causes.take(MAX_SOURCES).enumerate() {
        if n > 0 {
            writer.write_str(", ")?;
        }
        write_value(writer, format_args!("{error}"), left)?;
    }
    writer.write_char(']')
}

impl VisitOutput<fmt::Result> for LineFieldsVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LineFieldsVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The most one value writes, in bytes of the line (escapes counted as written).
const VALUE_BYTES: usize = 4096;
/// The most the values of one event (or of one span) write together; once it is spent, each
/// value still shows its first [`SMALL_VALUE_BYTES`]. So a line stays well under the 16 KiB at
/// which Docker, or the 48 KiB at which journald, split it into records: a caller's
/// megabyte-long valve name made a line whose later records started where the caller padded
/// its way to (found by a reviewer).
const FIELDS_BYTES: usize = 8192;
const SMALL_VALUE_BYTES: usize = 64;

/// Writes one value through to the inner writer, each character a terminal or a log reader
/// would act on written as its Rust escape (`\n`, `\u{1b}`, `\u{2028}`): the C0 and C1
/// controls and DEL, the Unicode line and paragraph separators, and the marks that reorder
/// what a reader sees (bidirectional overrides, isolates, LRM, RLM, ALM). A backslash stays as
/// it is: text that spells `\n` cannot start a line. Past its limit the rest is counted, not
/// written, never half a character or half an escape; [`Escaped::finish`] says how much.
struct Escaped<'w, W: Write> {
    out: &'w mut W,
    left: usize,
    written: usize,
    cut: usize,
}

impl<'w, W: Write> Escaped<'w, W> {
    fn new(out: &'w mut W, limit: usize) -> Self {
        Escaped { out, left: limit, written: 0, cut: 0 }
    }

    /// `…(+N bytes)` after a value that was cut: N bytes of its text were left out.
    fn finish(self) -> fmt::Result {
        match self.cut {
            0 => Ok(()),
            cut => write!(self.out, "…(+{cut} bytes)"),
        }
    }

    fn spend(&mut self, bytes: usize) {
        self.left -= bytes;
        self.written += bytes;
    }
}

impl<W: Write> Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Nearly every value is plain: one pass over its bytes, then one write.
        if !text.bytes().any(may_start_hazard) {
            let mut keep = text.len().min(self.left);
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
            // Once one character did not fit, nothing after it is written either.
            if keep < text.len() {
                self.cut += text.len() - keep;
                self.left = keep;
            }
            self.spend(keep);
            return self.out.write_str(&text[..keep]);
        }
        let mut plain_from = 0;
        for (at, c) in text.char_indices() {
            let hazard = is_hazard(c);
            let needed = if hazard { c.escape_default().len() } else { c.len_utf8() };
            if needed > self.left {
                self.cut += text.len() - at;
                self.left = 0;
                return self.out.write_str(&text[plain_from..at]);
            }
            self.spend(needed);
            if hazard {
                self.out.write_str(&text[plain_from..at])?;
                write!(self.out, "{}", c.escape_default())?;
                plain_from = at + c.len_utf8();
            }
        }
        self.out.write_str(&text[plain_from..])
    }
}

/// Text shown on one line of a terminal as the log shows it: every character [`Escaped`]
/// escapes written as its escape, nothing cut. For text from outside printed by the command
/// line (an upstream's error kept in the outbox), where a raw ESC would drive the operator's
/// terminal.
pub struct OneLine<'a>(pub &'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Escaped::new(f, usize::MAX);
        out.write_str(self.0)?;
        out.finish()
    }
}

/// A byte that is, or starts the UTF-8 of, a character [`is_hazard`] may hold: C0 and DEL are
/// the byte itself, C1 starts with 0xC2, ALM (U+061C) with 0xD8, the separators and the other
/// marks with 0xE2.
fn may_start_hazard(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f || byte == 0xc2 || byte == 0xd8 || byte == 0xe2
}

fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::fmt::FormatFields;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` prints through a text subscriber that formats fields with `fields`.
    fn printed<N>(fields: N, log: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(fields)
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Failure {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
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
        let error = Failure("\u{1b}".repeat(10_000).leak(), Some(Box::new(Failure("\n".repeat(10_000).leak(), None))));
        let out = printed(LineFields, || {
            let long = "\u{2028}".repeat(10_000);
            tracing::info!(a = %long, b = %long, c = %long, d = %long, e = %long, f = %long, g = %long, h = %long,
                error = &error as &(dyn Error + 'static), "{long}");
        });
        assert_eq!(out.lines().count(), 1);
        assert!(out.len() < FIELDS_BYTES + 2048, "{} bytes", out.len());
    }

    #[test]
    fn a_cut_never_splits_a_character_or_an_escape() {
        let mut out = String::new();
        let mut escaped = Escaped::new(&mut out, 9);
        write!(escaped, "aaaa€€\r").unwrap();
        escaped.finish().unwrap();
        // One `€` (3 bytes) fits in 9 after four `a`, the second does not, nor anything after.
        assert_eq!(out, "aaaa€…(+4 bytes)");
        let mut out = String::new();
        let mut escaped = Escaped::new(&mut out, 10);
        write!(escaped, "ab\u{1b}\u{1b}c").unwrap();
        escaped.finish().unwrap();
        // `\u{1b}` is 6 bytes: the first fits after `ab`, the second would not.
        assert_eq!(out, r"ab\u{1b}…(+2 bytes)");
    }

    #[test]
    fn plain_text_and_harmless_non_ascii_pass_as_they_are() {
        for text in [
            "",
            "plain",
            "é ü ß",
            "€ – “quoted” …",
            "日本語",
            "\\n stays a backslash and an n",
            "\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}",
        ] {
            let mut out = String::new();
            write!(Escaped::new(&mut out, VALUE_BYTES), "{text}").unwrap();
            assert_eq!(out, text);
        }
        let mut out = String::new();
        write!(Escaped::new(&mut out, VALUE_BYTES), "a\u{0}b\u{1f}c\u{80}d\u{9f}").unwrap();
        assert_eq!(out, r"a\u{0}b\u{1f}c\u{80}d\u{9f}");
    }
}
