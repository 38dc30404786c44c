//! A span's fields written in one piece. tracing-subscriber keeps them in a `String` made empty
//! for each span; written value by value, it grew three or four times per request span (a
//! `realloc` each, which contended for glibc's arena lock when workers logged together: a
//! tenth of a request's logging). Written first into a scratch `String` the thread keeps, the
//! span's own string is allocated once, at its size.

use std::cell::Cell;
use std::fmt::{self, Write};

/// Scratch capacity a thread keeps between uses (a line's fields are at most 8 KiB).
const KEPT_BYTES: usize = 16 << 10;

thread_local! {
    static SPARE: Cell<String> = const { Cell::new(String::new()) };
}

/// The thread's scratch text, empty (a new one if it is in use or the thread is ending).
pub fn take() -> String {
    SPARE.try_with(Cell::take).unwrap_or_default()
}

/// Writes `text` to `out` in one call, also when `result` says writing it failed part way (as
/// writing directly would have left it), gives it back for the thread's next use, and returns
/// the first failure.
pub fn hand_over(out: &mut impl Write, mut text: String, result: fmt::Result) -> fmt::Result {
    let written = out.write_str(&text).and(result);
    text.clear();
    if text.capacity() <= KEPT_BYTES {
        let _ = SPARE.try_with(|spare| spare.set(text));
    }
    written
}

/// Runs `write` on scratch text, then [`hand_over`]s what it wrote to `out`.
pub fn staged(out: &mut impl Write, write: impl FnOnce(&mut String) -> fmt::Result) -> fmt::Result {
    let mut text = take();
    let result = write(&mut text);
    hand_over(out, text, result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_arrives_once_even_before_a_failure() {
        struct Counted(String, usize);
        impl Write for Counted {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.1 += 1;
                self.0.write_str(s)
            }
        }
        let mut out = Counted(String::new(), 0);
        staged(&mut out, |t| (0..10).try_for_each(|i| write!(t, "field{i}=value "))).unwrap();
        assert_eq!((out.0.len(), out.1), (130, 1));
        assert!(staged(&mut out, |t| t.write_str("partial").and(Err(fmt::Error))).is_err());
        assert_eq!((out.0.len(), out.1), (137, 2), "what came before the failure, as written directly");
        // Nested use (a field's Display that logs) gets scratch text of its own.
        staged(&mut out, |t| {
            t.write_str("outer ")?;
            staged(t, |inner| inner.write_str("inner"))
        })
        .unwrap();
        assert!(out.0.ends_with("outer inner"));
    }
}
