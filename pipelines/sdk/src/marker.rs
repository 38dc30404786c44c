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
            // `]: #` looked for within MAX_LEN only: searching the whole rest for every
            // opening made a text of many unclosed openings cost seconds per 100 KB, growing
            // with its square (found by a red team).
            let window = &text.as_bytes()[start..text.len().min(start + MAX_LEN)];
            let end = window
                .windows(END.len())
                .position(|w| w == END.as_bytes())
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

    #[test]
    fn many_unclosed_openings_cost_a_bounded_look_each() {
        // A red team's chat: 40,000 openings with no end took minutes (each searched the
        // whole rest of the text); each now looks MAX_LEN bytes ahead at most.
        let hostile = "[sluice:v1:".repeat(40_000) + "[openai_responses:v2:".repeat(40_000).as_str();
        assert!(spans(&hostile).is_empty());
        // An end within reach still closes the nearest opening before it that reaches it.
        let text = format!("{}{}", "[sluice:v1:".repeat(1_000), format("turn", "ABC"));
        let found = spans(&text);
        assert_eq!(found.len(), 1);
        assert!(text[found[0].clone()].ends_with("turn:ABC]: #") && found[0].len() < MAX_LEN, "{found:?}");
        assert_eq!(
            strip(&format!("[sluice:v1:{}]: #", "x".repeat(MAX_LEN)), false).len(),
            MAX_LEN + 15,
            "too long to be ours"
        );
    }
}
