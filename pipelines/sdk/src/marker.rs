//! Invisible markers a pipe may leave in an answer: `[sluice:v1:<kind>:<id>]: #`, a Markdown
//! link-reference definition that renders as nothing. The pipe that wrote one finds it again
//! in later turns; whatever shows or reports the text strips it. One definition here, so a
//! filter recognises exactly what a pipe writes.

use std::ops::Range;

/// How every sluice marker starts.
pub const PREFIX: &str = "[sluice:v1:";
/// Markers of the Python Function manifold sluice replaces, recognised so they are stripped too.
const LEGACY_PREFIXES: &[&str] = &["[openai_responses:v2:"];
const END: &str = "]: #";
/// A marker is one short line.
const MAX_LEN: usize = 256;

/// The text a pipe sends: at the start of an answer the definition is invisible, and the blank
/// line keeps the answer's first paragraph apart.
pub fn format(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}{END}\n\n")
}

/// Byte ranges of every marker in `text` (sluice's and legacy ones), in order.
pub fn spans(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for prefix in std::iter::once(PREFIX).chain(LEGACY_PREFIXES.iter().copied()) {
        let mut from = 0;
        while let Some(pos) = text[from..].find(prefix) {
            let start = from + pos;
            let end = text[start..]
                .find(END)
                .map(|e| start + e + END.len())
                .filter(|e| !text[start..*e].contains('\n') && e - start < MAX_LEN);
            match end {
                Some(end) => {
                    out.push(start..end);
                    from = end;
                }
                None => from = start + prefix.len(),
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

/// The `<kind>:<id>` inside each sluice marker of `text`, in order.
/// Whether `text` may hold a marker, ours or the Function manifold's (a cheap test before
/// [`strip`]).
pub fn present(text: &str) -> bool {
    text.contains(PREFIX) || LEGACY_PREFIXES.iter().any(|p| text.contains(p))
}

pub fn contents(text: &str) -> Vec<&str> {
    spans(text).into_iter().filter_map(|r| text[r].strip_prefix(PREFIX)?.strip_suffix(END)).collect()
}

/// `text` without its markers; with `line_breaks`, the line breaks right after each marker go
/// too, so a marker line disappears entirely.
pub fn strip(text: &str, line_breaks: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans(text) {
        if span.start < at {
            continue;
        }
        out.push_str(&text[at..span.start]);
        at = span.end;
        if line_breaks {
            at += text[at..].len() - text[at..].trim_start_matches(['\r', '\n']).len();
        }
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_and_stripped() {
        let text = format!("{}Hello\n\n[openai_responses:v2:function_call:X]: #\n", format("turn", "ABC"));
        assert_eq!(contents(&text), ["turn:ABC"]);
        assert_eq!(spans(&text).len(), 2);
        assert_eq!(strip(&text, false), "\n\nHello\n\n\n");
        assert_eq!(strip(&text, true), "Hello\n\n");
        assert_eq!(strip("Hello [sluice:v1:x\ny]: #", true), "Hello [sluice:v1:x\ny]: #", "one line only");
        assert_eq!(strip("plain", true), "plain");
    }
}
