//! One text log line: tracing-subscriber's `Full` layout (`time LEVEL span{fields}: target:
//! fields`), written straight into the line when it is not painted for a terminal. The `Full`
//! formatter paints every part through `nu_ansi_term` even when painting is off (an empty
//! style's prefix and suffix, a `write!` per part): a sixth of the request line's formatting.
//! At a terminal the lines are painted by tracing-subscriber's formatter as before.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use super::line_fields::LineFields;
use super::line_time::LineTime;

/// Writes one event as one text line ([`LineFields`] for the fields).
pub struct TextLine {
    painted: Format<Full, LineTime>,
}

impl Default for TextLine {
    fn default() -> Self {
        TextLine { painted: Format::default().with_timer(LineTime) }
    }
}

impl<S> FormatEvent<S, LineFields> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, LineFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() {
            return self.painted.format_event(ctx, writer, event);
        }
        // A `log` record's target and level, not tracing-log's stand-in for them.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if LineTime.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        // The level right-aligned in five columns, as `Full` pads it.
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<LineFields>>().filter(|f| !f.is_empty()) {
                    writer.write_char('{')?;
                    writer.write_str(fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_log::{logged, Failure};
    use super::*;

    /// What `log` prints through a text subscriber with `format`, painted or not.
    fn printed<E>(format: E, ansi: bool, log: impl FnOnce()) -> String
    where
        E: FormatEvent<tracing_subscriber::Registry, LineFields> + Send + Sync + 'static,
    {
        logged(
            |out| {
                tracing_subscriber::fmt()
                    .with_writer(move || out.clone())
                    .with_ansi(ansi)
                    .with_max_level(Level::TRACE)
                    .fmt_fields(LineFields)
                    .event_format(format)
                    .finish()
            },
            log,
        )
    }

    /// Lines with their time (the first 27 characters, `2026-12-04T22:09:54.123456Z`) cut off.
    fn untimed(text: &str) -> Vec<String> {
        text.lines().map(|l| l.get(27..).unwrap_or_default().to_owned()).collect()
    }

    fn every_kind_of_line() {
        tracing::trace!("no span");
        tracing::debug!(n = 1, "no span either");
        let outer = tracing::info_span!("request", request_id = "0a1b", method = "POST");
        let _in = outer.enter();
        tracing::info!(route = "/{id}/filter/inlet", status = 200u16, elapsed_ms = 0.25, "handled");
        let bare = tracing::info_span!("bare");
        bare.in_scope(|| tracing::warn!(text = "x\ny", "inside a span without fields"));
        let error = Failure("outer", Some(Box::new(Failure("inner", None))));
        tracing::error!(parent: &bare, error = &error as &(dyn std::error::Error + 'static), "explicit parent");
        tracing::info!(target: "sluice::elsewhere", "another target");
        let recorded = tracing::info_span!("recorded", user = tracing::field::Empty);
        recorded.record("user", "u");
        recorded.in_scope(|| tracing::info!(""));
    }

    #[test]
    fn plain_lines_are_the_full_formatters_own() {
        let ours = printed(TextLine::default(), false, every_kind_of_line);
        let theirs = printed(Format::default().with_timer(LineTime), false, every_kind_of_line);
        assert_eq!(untimed(&ours), untimed(&theirs));
        assert_eq!(ours.lines().count(), 7, "{ours}");
        assert!(ours.lines().all(|l| l.as_bytes()[4] == b'-' && l.as_bytes()[26] == b'Z'), "{ours}");
        assert!(ours.contains("  INFO request{request_id=\"0a1b\" method=\"POST\"}: sluice::telemetry::text_line::tests: handled route=\"/{id}/filter/inlet\" status=200 elapsed_ms=0.25\n"), "{ours}");
        assert!(ours.contains("  WARN request{request_id=\"0a1b\" method=\"POST\"}:bare: "), "{ours}");
        assert!(!ours.contains('\u{1b}'), "{ours}");
    }

    #[test]
    fn at_a_terminal_lines_are_painted_as_before() {
        let ours = printed(TextLine::default(), true, every_kind_of_line);
        let theirs = printed(Format::default().with_timer(LineTime), true, every_kind_of_line);
        // The painted time starts with its style's escape: the time follows it.
        let untimed_painted =
            |text: &str| -> Vec<String> { text.lines().map(|l| l.replacen(&l[4..31], "", 1)).collect() };
        assert_eq!(untimed_painted(&ours), untimed_painted(&theirs));
        assert!(ours.contains("\u{1b}["), "{ours}");
    }
}
