//! What one call of a WebAssembly pipeline may use. Set by the operator (`[wasm]` settings);
//! the defaults let a Python component (about 20 MB of code, 30 MB of memory) work.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest component accepted, in bytes.
    pub component_bytes: usize,
    /// Linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one guest call may take (a hook, or one event of an answer), host
    /// calls such as HTTP included.
    pub call_timeout: Duration,
    /// Largest text a call may return: a hook's body, one event, all events of one answer.
    pub output_bytes: usize,
    /// Instances alive at once, all pipelines together; a call waits for a free slot.
    pub instances: u32,
    /// Wall-clock time one answer may stream for, all its events together.
    pub answer_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            component_bytes: 64 << 20,
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(30),
            output_bytes: 16 << 20,
            instances: 64,
            answer_timeout: Duration::from_secs(600),
        }
    }
}
