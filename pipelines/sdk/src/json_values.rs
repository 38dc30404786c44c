//! How many values a JSON text holds, counted before it is parsed: a parse builds a tree
//! whose size is the number of values, not the number of bytes (`[0,0,0,…]` takes 16 times its
//! text as a `serde_json::Value`).

/// An upper bound of the values in a JSON text: one per container opened and one per
/// separator, outside strings. A pass over the bytes, far cheaper than the parse it guards.
pub fn count_values(bytes: &[u8]) -> usize {
    let mut count = 1;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Inside a string only a quote or a backslash matters: jump between them
                // (strings are most of a chat's bytes).
                i += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', bytes.get(i..).unwrap_or_default()) {
                        None => return count,
                        Some(at) if bytes[i + at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                    }
                }
            }
            b'{' | b'[' | b',' => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_counted_outside_strings() {
        assert_eq!(count_values(b"1"), 1);
        assert!(count_values(br#"{"a": 1, "b": [1, 2, 3]}"#) >= 6);
        assert_eq!(count_values(br#""a, [b], {c}""#), 1, "separators inside a string do not count");
        assert_eq!(count_values(br#"["a\"", 1]"#), 3, "an escaped quote does not end the string");
        assert_eq!(count_values(br#"["a\\", 1]"#), 3, "an escaped backslash does not escape the quote");
        for cut in [&br#"["a\"#[..], br#"["#, br#"[""#, br#""\"#] {
            assert!(count_values(cut) >= 1, "a body cut anywhere is counted without a panic");
        }
        let many = format!("[{}]", vec!["{}"; 1000].join(","));
        assert!(count_values(many.as_bytes()) >= 1000);
    }
}
