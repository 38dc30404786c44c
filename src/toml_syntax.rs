//! A TOML syntax error told by its place and reason only. The parsers' own messages quote the
//! offending line, and in a settings or valves file that line is often a key (an unterminated
//! `API_KEY = "sk-...`): the quote went to the terminal and the server's log.

use std::ops::Range;

/// `line L, column C: reason`, both counted from 1; the reason alone when there is no place.
pub fn described(text: &str, reason: &str, span: Option<Range<usize>>) -> String {
    let reason = reason.trim();
    match span {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
            format!("line {line}, column {column}: {reason}")
        }
        None => reason.to_string(),
    }
}

/// The syntax error of `text` as TOML, if it has one.
pub fn check(text: &str) -> Option<String> {
    toml::from_str::<toml::Table>(text).err().map(|e| described(text, e.message(), e.span()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_place_is_told_and_the_line_is_not_quoted() {
        let text = "port = 9100\napi_key = \"sk-secret-unterminated\n";
        let said = check(text).unwrap_or_default();
        assert!(said.starts_with("line 2, column "), "{said}");
        assert!(!said.contains("sk-secret"), "{said}");
        assert_eq!(check("port = 9100\n"), None);
        let dup = check("KEY = \"a\"\nKEY = \"sk-dup-secret\"\n").unwrap_or_default();
        assert!(dup.starts_with("line 2") && !dup.contains("sk-dup"), "{dup}");
    }
}
