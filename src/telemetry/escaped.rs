//! One log value written escaped and cut, for the text lines ([`AsRust`]) and the JSON lines
//! ([`AsJson`]) alike: what a terminal or a log reader would act on never reaches the log raw,
//! and no value, nor all of a line's values together, can make a line long enough for Docker
//! (16 KiB) or journald (48 KiB) to split it into records that start where a caller padded its
//! text to.

use std::error::Error;
use std::fmt::{self, Write};

/// The most one value writes, in bytes of the line (escapes counted as written).
pub const VALUE_BYTES: usize = 4096;
/// The most the values of one event (or of one span) write together; once it is spent, each
/// value still shows its first [`SMALL_VALUE_BYTES`]. So a line stays well under the 16 KiB at
/// which Docker, or the 48 KiB at which journald, split it into records: a caller's
/// megabyte-long valve name made a line whose later records started where the caller padded
/// its way to (found by a reviewer).
pub const FIELDS_BYTES: usize = 8192;
pub const SMALL_VALUE_BYTES: usize = 64;

/// How the characters a value may not hold raw are written instead.
pub trait Escapes {
    /// Whether `byte` is, or may start the UTF-8 of, a character [`Escapes::escapes`]: the
    /// test of the fast path over a value's bytes.
    fn may_start(byte: u8) -> bool;
    fn escapes(c: char) -> bool;
    /// Bytes [`Escapes::write`] writes for `c`.
    fn len(c: char) -> usize;
    fn write(c: char, out: &mut impl Write) -> fmt::Result;
}

/// The text log: Rust's escapes (`\n`, `\u{1b}`) for each [`is_hazard`] character. A backslash
/// stays as it is: text that spells `\n` cannot start a line.
pub struct AsRust;

impl Escapes for AsRust {
    fn may_start(byte: u8) -> bool {
        may_start_hazard(byte)
    }
    fn escapes(c: char) -> bool {
        is_hazard(c)
    }
    fn len(c: char) -> usize {
        c.escape_default().len()
    }
    fn write(c: char, out: &mut impl Write) -> fmt::Result {
        write!(out, "{}", c.escape_default())
    }
}

/// Inside a JSON string: `"` and `\` as JSON needs, and each [`is_hazard`] character as a
/// JSON escape (`\n`, `\u001b`), so the value a reader decodes is the value logged while a
/// person reading the raw line, or `tail -f` on a terminal, sees no control character. serde's
/// JSON leaves C1 controls, line separators and bidirectional marks raw.
pub struct AsJson;

impl Escapes for AsJson {
    fn may_start(byte: u8) -> bool {
        byte == b'"' || byte == b'\\' || may_start_hazard(byte)
    }
    fn escapes(c: char) -> bool {
        c == '"' || c == '\\' || is_hazard(c)
    }
    fn len(c: char) -> usize {
        match c {
            '"' | '\\' | '\n' | '\r' | '\t' => 2,
            _ => 6,
        }
    }
    fn write(c: char, out: &mut impl Write) -> fmt::Result {
        match c {
            '"' => out.write_str("\\\""),
            '\\' => out.write_str("\\\\"),
            '\n' => out.write_str("\\n"),
            '\r' => out.write_str("\\r"),
            '\t' => out.write_str("\\t"),
            // Every hazard is in the Basic Multilingual Plane: four digits hold it.
            c => write!(out, "\\u{:04x}", u32::from(c)),
        }
    }
}

/// One value, escaped and cut: at most what `left`, the line's remaining budget, allows
/// (never less than [`SMALL_VALUE_BYTES`], never more than [`VALUE_BYTES`]), which it then
/// spends.
pub fn write_value<E: Escapes>(out: &mut impl Write, value: fmt::Arguments<'_>, left: &mut usize) -> fmt::Result {
    let mut escaped = Escaped::<_, E>::new(out, (*left).clamp(SMALL_VALUE_BYTES, VALUE_BYTES));
    escaped.write_fmt(value)?;
    *left = left.saturating_sub(escaped.written);
    escaped.finish()
}

/// Causes listed after an error, at most: a chain that comes back to itself would not end.
const MAX_SOURCES: usize = 32;

/// An error's causes as both formats list them: each written by `cause` within what is left of
/// the line's budget, `separator` between; once the budget is spent, how many more there are
/// (`…(+N more)`, also written by `cause`), so many long causes cannot make a line that is split.
pub fn write_causes<W: Write>(
    out: &mut W,
    first: &(dyn Error + 'static),
    separator: &str,
    left: &mut usize,
    mut cause: impl FnMut(&mut W, fmt::Arguments<'_>, &mut usize) -> fmt::Result,
) -> fmt::Result {
    let mut causes = std::iter::successors(Some(first), |&error| error.source()).take(MAX_SOURCES);
    let mut n = 0;
    while let Some(error) = causes.next() {
        if n > 0 {
            out.write_str(separator)?;
            if *left == 0 {
                return cause(out, format_args!("…(+{} more)", 1 + causes.count()), &mut { VALUE_BYTES });
            }
        }
        cause(out, format_args!("{error}"), left)?;
        n += 1;
    }
    Ok(())
}

/// Writes one value through to the inner writer, each character `E` escapes written as its
/// escape. Past its limit the rest is counted, not written, never half a character or half an
/// escape; [`Escaped::finish`] says how much.
pub struct Escaped<'w, W: Write, E: Escapes> {
    out: &'w mut W,
    left: usize,
    written: usize,
    cut: usize,
    escapes: std::marker::PhantomData<E>,
}

impl<'w, W: Write, E: Escapes> Escaped<'w, W, E> {
    pub fn new(out: &'w mut W, limit: usize) -> Self {
        Escaped { out, left: limit, written: 0, cut: 0, escapes: std::marker::PhantomData }
    }

    /// `…(+N bytes)` after a value that was cut: N bytes of its text were left out.
    pub fn finish(self) -> fmt::Result {
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

impl<W: Write, E: Escapes> Write for Escaped<'_, W, E> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        // Nearly every value is plain: one pass over its bytes, then one write.
        if !text.bytes().any(E::may_start) {
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
            let escape = E::escapes(c);
            let needed = if escape { E::len(c) } else { c.len_utf8() };
            if needed > self.left {
                self.cut += text.len() - at;
                self.left = 0;
                return self.out.write_str(&text[plain_from..at]);
            }
            self.spend(needed);
            if escape {
                self.out.write_str(&text[plain_from..at])?;
                E::write(c, self.out)?;
                plain_from = at + c.len_utf8();
            }
        }
        self.out.write_str(&text[plain_from..])
    }
}

/// Compact JSON as serde writes it, shown with the characters serde leaves raw that
/// [`is_hazard`] names (C1 controls, DEL, separators, direction marks) as `\uXXXX` escapes.
/// In compact JSON they can stand only inside strings, where the escape decodes to the same
/// text: for JSON lines printed to an operator's terminal.
pub struct ShownJson<'a>(pub &'a str);

impl fmt::Display for ShownJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain_from = 0;
        for (at, c) in self.0.char_indices().filter(|&(_, c)| is_hazard(c)) {
            f.write_str(&self.0[plain_from..at])?;
            AsJson::write(c, f)?;
            plain_from = at + c.len_utf8();
        }
        f.write_str(&self.0[plain_from..])
    }
}

/// A byte that is, or starts the UTF-8 of, a character [`is_hazard`] may hold: C0 and DEL are
/// the byte itself, C1 starts with 0xC2, ALM (U+061C) with 0xD8, the separators and the other
/// marks with 0xE2.
fn may_start_hazard(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f || byte == 0xc2 || byte == 0xd8 || byte == 0xe2
}

/// A character a terminal or a log reader would act on: the C0 and C1 controls and DEL, the
/// Unicode line and paragraph separators, and the marks that reorder what a reader sees
/// (bidirectional overrides, isolates, LRM, RLM, ALM).
pub fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn escaped<E: Escapes>(text: &str, limit: usize) -> String {
        let mut out = String::new();
        let mut escaped = Escaped::<_, E>::new(&mut out, limit);
        escaped.write_str(text).unwrap();
        escaped.finish().unwrap();
        out
    }

    #[test]
    fn a_cut_never_splits_a_character_or_an_escape() {
        // One `€` (3 bytes) fits in 9 after four `a`, the second does not, nor anything after.
        assert_eq!(escaped::<AsRust>("aaaa€€\r", 9), "aaaa€…(+4 bytes)");
        // `\u{1b}` is 6 bytes: the first fits after `ab`, the second would not.
        assert_eq!(escaped::<AsRust>("ab\u{1b}\u{1b}c", 10), r"ab\u{1b}…(+2 bytes)");
        assert_eq!(escaped::<AsJson>("ab\u{1b}\u{1b}c", 10), r"ab\u001b…(+2 bytes)");
        assert_eq!(escaped::<AsJson>("a\"\"\"", 5), r#"a\"\"…(+1 bytes)"#);
    }

    #[test]
    fn plain_text_and_harmless_non_ascii_pass_as_they_are() {
        for text in ["", "plain", "é ü ß", "€ – “quoted” …", "日本語", "\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}"]
        {
            assert_eq!(escaped::<AsRust>(text, VALUE_BYTES), text);
            assert_eq!(escaped::<AsJson>(text, VALUE_BYTES), text);
        }
        assert_eq!(escaped::<AsRust>("\\n stays a backslash and an n", VALUE_BYTES), "\\n stays a backslash and an n");
        assert_eq!(escaped::<AsRust>("a\u{0}b\u{1f}c\u{80}d\u{9f}", VALUE_BYTES), r"a\u{0}b\u{1f}c\u{80}d\u{9f}");
    }

    #[test]
    fn shown_json_is_the_same_json_without_a_raw_hazard() {
        let value =
            serde_json::json!({"last_error": "HTTP 500: \u{1b}]0;x\u{7}\n\u{9b}2J \u{202e}txt \u{2028} é \"q\" \\"});
        let json = value.to_string();
        assert!(json.contains('\u{9b}') && json.contains('\u{202e}'), "serde leaves them raw: {json}");
        let shown = ShownJson(&json).to_string();
        assert!(shown.chars().all(|c| !is_hazard(c)), "{shown:?}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap(), value);
        assert_eq!(ShownJson("{\"plain\":\"é\"}").to_string(), "{\"plain\":\"é\"}");
    }

    #[test]
    fn a_json_escape_decodes_to_the_value_logged() {
        let hostile = "\"x\"\\n\n2026 INFO forged\r\t\u{0}\u{1b}[31m\u{7f}\u{85}\u{9b}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{61c} é €";
        let out = escaped::<AsJson>(hostile, VALUE_BYTES);
        assert!(out.chars().all(|c| !is_hazard(c)), "{out:?}");
        let decoded: String = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        assert_eq!(decoded, hostile);
        assert_eq!(
            out.len(),
            hostile.chars().map(|c| if AsJson::escapes(c) { AsJson::len(c) } else { c.len_utf8() }).sum::<usize>()
        );
    }
}
