//! Keeping a report within `MAX_REPORT_BYTES` (docs/reporting.md §7.6): inline images go
//! first (`data:` URLs become `data:<mime>;omitted`), then long texts are cut. Used when a
//! capture is kept, when a report is built, and when OpenPipe answers 413.

use serde_json::Value;

/// Every image out and every long text cut, for a report OpenPipe refused as too large.
pub fn shrink_messages(messages: &mut [Value]) -> (usize, bool) {
    let omitted = omit_images(messages);
    let mut truncated = false;
    for m in messages.iter_mut() {
        truncated |= truncate_message(m);
    }
    (omitted, truncated)
}

/// Bytes of `v` as compact JSON, counted without building the text.
pub fn serialized_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Replaces `data:` image URLs with `data:<mime>;omitted`; returns how many.
pub fn omit_images(messages: &mut [Value]) -> usize {
    let mut count = 0;
    for m in messages {
        let Some(parts) = m.get_mut("content").and_then(Value::as_array_mut) else { continue };
        for p in parts {
            let Some(url) = p.get_mut("image_url").and_then(|i| i.get_mut("url")) else { continue };
            let Some(text) = url.as_str() else { continue };
            if let Some(rest) = text.strip_prefix("data:") {
                let mime = rest.split([';', ',']).next().unwrap_or_default();
                if rest != format!("{mime};omitted") {
                    *url = Value::String(format!("data:{mime};omitted"));
                    count += 1;
                }
            }
        }
    }
    count
}

const TRUNCATE_AT: usize = 20_000;

fn truncate_text(text: &mut String) -> bool {
    if text.chars().count() <= TRUNCATE_AT {
        return false;
    }
    let cut: String = text.chars().take(TRUNCATE_AT).collect();
    *text = format!("{cut}…[truncated]");
    true
}

/// Shortens a message's long texts; returns whether anything changed.
pub fn truncate_message(message: &mut Value) -> bool {
    let Some(content) = message.get_mut("content") else { return false };
    match content {
        Value::String(s) => truncate_text(s),
        Value::Array(parts) => {
            let mut changed = false;
            for p in parts {
                if let Some(Value::String(s)) = p.get_mut("text") {
                    changed |= truncate_text(s);
                }
            }
            changed
        }
        _ => false,
    }
}

/// Shrinks a queued report after a 413 (§7.6): images out, long texts cut. Returns whether
/// anything changed.
pub fn shrink_report(body: &mut Value) -> bool {
    let Some(messages) = body.pointer_mut("/reqPayload/messages").and_then(Value::as_array_mut) else { return false };
    let (omitted, truncated) = shrink_messages(messages);
    if omitted == 0 && !truncated {
        return false;
    }
    for path in ["/reqPayload/metadata", "/tags"] {
        if let Some(meta) = body.pointer_mut(path).and_then(Value::as_object_mut) {
            if omitted > 0 {
                meta.insert("images_omitted".into(), Value::String(omitted.to_string()));
            }
            if truncated {
                meta.insert("truncated".into(), Value::String("true".into()));
            }
        }
    }
    true
}
