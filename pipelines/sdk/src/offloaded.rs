//! Whether this thread is one the server lent to a heavy request (the blocking pool, see the
//! server's `offload.rs`) rather than one of its HTTP workers. Such threads come and go (an
//! idle one ends after seconds), so a pipeline keeps nothing per thread on them: the manifold
//! hands them its shared HTTP client instead of making a client, and a cold pool, per thread.

use std::cell::Cell;

thread_local! {
    static OFFLOADED: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as lent to a heavy request until the guard is dropped.
pub fn enter() -> Guard {
    Guard { was: OFFLOADED.replace(true) }
}

/// Whether this thread is running a heavy request's work.
pub fn is_offloaded() -> bool {
    OFFLOADED.get()
}

pub struct Guard {
    was: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        OFFLOADED.set(self.was);
    }
}
