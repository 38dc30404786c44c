//! A small SSE reader for the upstream stream: follows the framing rules the API promises
//! (`data:` lines, blank line between events, `:` comments, CRLF), reassembles events split
//! across reads, and refuses an event larger than a bound instead of growing without limit.

/// Largest accepted event (an image generation result can be several MB of base64).
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseReader {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl SseReader {
    /// Feeds bytes; returns the `data` of every event completed by them. `[DONE]` (added by
    /// some proxies) is dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, TooLarge> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                    return Err(TooLarge);
                }
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            if line.is_empty() {
                if self.has_data {
                    let data = String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned();
                    self.has_data = false;
                    if data.trim() != "[DONE]" {
                        events.push(data);
                    }
                }
            } else if let Some(rest) = line.strip_prefix(b"data:") {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(rest);
                self.has_data = true;
            }
            // `event:`, `id:`, `retry:` and `:` comments carry nothing we use: the JSON has `type`.
        }
        Ok(events)
    }

    /// The last event when the stream ended without a blank line after it.
    pub fn flush(&mut self) -> Vec<String> {
        self.push(b"\n\n").unwrap_or_default()
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

    #[test]
    fn oversized_events_are_refused() {
        let mut r = SseReader::default();
        let big = vec![b'x'; MAX_EVENT_BYTES + 1];
        assert_eq!(r.push(&big), Err(TooLarge));
    }
}
