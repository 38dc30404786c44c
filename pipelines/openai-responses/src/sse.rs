//! A small SSE reader for the upstream stream: follows the framing rules of the SSE standard
//! (`data:` lines, blank line between events, `:` comments, lines ended by LF, CRLF or CR),
//! reassembles events split across reads, and refuses an event larger than a bound instead of
//! growing without limit.

/// Largest accepted event (an image generation result can be several MB of base64).
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The last line ended with a CR at the end of a read: an LF starting the next read is
    /// the rest of that line's end, not an empty line.
    after_cr: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl SseReader {
    /// Reads lines from the front of `bytes` until an event is complete and returns its `data`,
    /// leaving `bytes` just after it; `None` once `bytes` is used up (a partial line is kept for
    /// the next read). One event at a time, so the first event of a large read is handed on
    /// before the rest of the read is split. `[DONE]` (added by some proxies) is dropped. Lines
    /// are found with a slice search and handled in place; only a line split across reads is
    /// copied.
    pub fn next_event(&mut self, bytes: &mut &[u8]) -> Result<Option<String>, TooLarge> {
        loop {
            if std::mem::take(&mut self.after_cr) {
                match bytes.first() {
                    Some(b'\n') => *bytes = &bytes[1..],
                    Some(_) => {}
                    None => {
                        self.after_cr = true;
                        return Ok(None);
                    }
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else { break };
            let line = &bytes[..end];
            // A CR ends the line, with the LF after it if there is one (maybe in the next read).
            *bytes = match (bytes[end], bytes.get(end + 1)) {
                (b'\r', Some(b'\n')) => &bytes[end + 2..],
                (b'\r', None) => {
                    self.after_cr = true;
                    &bytes[end + 1..]
                }
                _ => &bytes[end + 1..],
            };
            let event = if self.line.is_empty() {
                self.on_line(line)?
            } else {
                let mut joined = std::mem::take(&mut self.line);
                joined.extend_from_slice(line);
                let event = self.on_line(&joined);
                joined.clear();
                self.line = joined;
                event?
            };
            if event.is_some() {
                return Ok(event);
            }
        }
        self.line.extend_from_slice(bytes);
        *bytes = &[];
        if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(TooLarge);
        }
        Ok(None)
    }

    /// Feeds bytes; returns the `data` of every event completed by them (the tests' reader of
    /// whole transcripts).
    #[cfg(test)]
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<String>, TooLarge> {
        let mut events = Vec::new();
        while let Some(event) = self.next_event(&mut bytes)? {
            events.push(event);
        }
        Ok(events)
    }

    /// The event a line completes, if it does.
    fn on_line(&mut self, line: &[u8]) -> Result<Option<String>, TooLarge> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let data = match String::from_utf8(std::mem::take(&mut self.data)) {
                    Ok(text) => text,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                };
                if data.trim() != "[DONE]" {
                    return Ok(Some(data));
                }
            }
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
            if self.data.len() > MAX_EVENT_BYTES {
                return Err(TooLarge);
            }
        }
        // `event:`, `id:`, `retry:` and `:` comments carry nothing we use: the JSON has `type`.
        Ok(None)
    }

    /// The last event when the stream ended without a blank line after it (only one can be
    /// open).
    pub fn flush(&mut self) -> Option<String> {
        self.next_event(&mut &b"\n\n"[..]).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_reads_and_crlf_are_reassembled() {
        let mut r = SseReader::default();
        let mut out = r.push(b"event: a\r\ndata: {\"x\"").unwrap_or_default();
        out.extend(r.push(b":1}\r\n\r\n: keepalive\n\ndata: [DONE]\n\ndata: 1\ndata: 2\n").unwrap_or_default());
        out.extend(r.flush());
        assert_eq!(out, vec!["{\"x\":1}".to_string(), "1\n2".to_string()]);
    }

    /// The SSE standard ends lines with LF, CRLF or CR; a stream of CR alone read as one line
    /// that never ended ("the stream ended unexpectedly"; red team).
    #[test]
    fn lines_ended_by_cr_alone_are_lines() {
        let mut r = SseReader::default();
        let mut out = r.push(b"data: 1\r\rdata: 2\r").unwrap_or_default();
        // A CR at the end of a read, its LF at the start of the next: one line end.
        out.extend(r.push(b"\ndata: 3\r").unwrap_or_default());
        out.extend(r.push(b"\n\r\n").unwrap_or_default());
        assert_eq!(out, vec!["1".to_string(), "2\n3".to_string()]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut r = SseReader::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(r.push(&big), Err(TooLarge));
    }
}

/// Fuzzing the reader: any byte stream, cut anywhere, never panics, and cutting a stream into
/// reads never changes what comes out of it.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn read_all(chunks: &[&[u8]]) -> Result<Vec<String>, TooLarge> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(r.push(c)?);
        }
        out.extend(r.flush());
        Ok(out)
    }

    /// SSE-ish bytes: fragments of real framing mixed with arbitrary bytes.
    fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n\n".to_vec()),
            Just(b"event: response.output_text.delta\n".to_vec()),
            Just(b": ping\n".to_vec()),
            Just(b"[DONE]".to_vec()),
            Just(b"{\"type\":\"response.created\"}".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..24),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(sluice_sdk::fuzz::cases()))]
        #[test]
        fn any_split_gives_the_same_events(bytes in sse_bytes(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
            let whole = read_all(&[&bytes]);
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            let mut chunks = Vec::new();
            let mut from = 0;
            for cut in at {
                chunks.push(&bytes[from..cut]);
                from = cut;
            }
            chunks.push(&bytes[from..]);
            prop_assert_eq!(read_all(&chunks), whole);
        }
    }
}
