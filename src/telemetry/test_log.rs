//! What the log's tests share: a writer that keeps what is logged, and an error with causes.

use std::error::Error;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

/// Keeps every byte written, for [`logged`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What `log` writes through the subscriber `subscriber` makes to write into the writer it is
/// given.
pub fn logged<D: Into<tracing::Dispatch>>(subscriber: impl FnOnce(Captured) -> D, log: impl FnOnce()) -> String {
    let out = Captured::default();
    tracing::dispatcher::with_default(&subscriber(out.clone()).into(), log);
    let bytes = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An error with a text and maybe a cause.
#[derive(Debug)]
pub struct Failure(pub &'static str, pub Option<Box<Failure>>);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for Failure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.1.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
