//! JSON as the Python reference writes it inside streams: `json.dumps` defaults, i.e. `", "`
//! and `": "` separators and non-ASCII escaped as `\uXXXX` (docs/protocol.md §6.5).
//! Plain JSON responses stay compact, as FastAPI's are.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// `serde_json` formatter reproducing Python's `json.dumps(obj)` output.
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        if fragment.is_ascii() {
            return w.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch.is_ascii() {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                write!(w, "\\u{unit:04x}")?;
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Appends `value` in Python's `json.dumps` style.
pub fn write_python<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(out, PythonFormatter);
    value.serialize(&mut ser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_python_json_dumps() -> serde_json::Result<()> {
        let mut out = Vec::new();
        write_python(&mut out, &serde_json::json!({"a": [1, "h\u{e9}llo \u{2713}", null], "b": {"c": "\u{1F600}\n"}}))?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"a": [1, "h\u00e9llo \u2713", null], "b": {"c": "\ud83d\ude00\n"}}"#
        );
        Ok(())
    }
}
