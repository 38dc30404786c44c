//! Where log lines go: every thread appends its line to one buffer, and a thread of its own
//! writes that buffer to stderr a moment later, as many lines as came meanwhile in one write.
//! Written by the request itself, each line was a system call and a wake-up of whoever reads
//! the pipe (`docker logs`, journald): a third of a small request's CPU at the default level.
//!
//! Nothing is dropped: past [`Batching::limit`] bytes waiting, a thread that logs waits for
//! the writer, as it waited on a slow stderr before. What is waiting when the process dies
//! outright (`kill -9`, an abort) is lost: the last [`Batching::gather`] of lines, or up to the
//! limit when stderr's reader is slow; an orderly exit writes it all ([`WriterGuard`]). Lines
//! logged while it ends go straight to stderr and may come out before older ones.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How lines are gathered.
#[derive(Clone, Copy)]
pub struct Batching {
    /// How long the writer waits after a first line for others to join it.
    pub gather: Duration,
    /// Bytes waiting at most before a thread that logs waits.
    pub limit: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching { gather: Duration::from_millis(2), limit: 2 << 20 }
    }
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// The writer sleeps until a line comes (and must be woken).
    idle: bool,
    /// Threads waiting for room (woken only if there are some: a wake-up is a system call).
    waiting_for_room: usize,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a first line.
    lines: Condvar,
    /// Threads that log wait here for room.
    room: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it left bytes, not broken invariants.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What `tracing_subscriber` writes each line to (clone per line: one `Arc`).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
    batching: Batching,
}

/// Writes what is waiting and ends the writer when dropped.
pub struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// A writer to `out` through a thread named `sluice-log`.
    pub fn start(out: Box<dyn Write + Send>, batching: Batching) -> std::io::Result<(LogWriter, WriterGuard)> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sluice-log".into())
            .spawn(move || write_batches(&theirs, out, batching.gather))?;
        Ok((LogWriter { shared: Arc::clone(&shared), batching }, WriterGuard { shared, thread: Some(thread) }))
    }
}

/// Capacity a buffer keeps between batches.
const KEPT_BYTES: usize = 64 << 10;

fn write_batches(shared: &Shared, mut out: Box<dyn Write + Send>, gather: Duration) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.pending.is_empty() && !state.closed {
            state.idle = true;
            state = shared.lines.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.pending.is_empty() {
            return;
        }
        if !state.closed {
            drop(state);
            std::thread::sleep(gather);
            state = shared.lock();
        }
        std::mem::swap(&mut state.pending, &mut batch);
        if state.waiting_for_room > 0 {
            shared.room.notify_all();
        }
        drop(state);
        // A log that cannot be written is not worth stopping for; the next batch tries again.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        // After a burst, the buffers go back to a size a quiet log needs.
        batch.shrink_to(KEPT_BYTES);
    }
}

impl LogWriter {
    /// Appends `line` to what the writer thread writes next.
    fn append(&self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while !state.closed && !state.pending.is_empty() && state.pending.len() + line.len() > self.batching.limit {
            state.waiting_for_room += 1;
            state = self.shared.room.wait(state).unwrap_or_else(PoisonError::into_inner);
            state.waiting_for_room -= 1;
        }
        if state.closed {
            drop(state);
            // Whole, under stderr's lock: not interleaved with another thread's line.
            return std::io::stderr().write_all(line).map(|()| line.len());
        }
        state.pending.extend_from_slice(line);
        let wake = std::mem::take(&mut state.idle);
        // Woken after the lock is let go, or the writer wakes only to wait for it.
        drop(state);
        if wake {
            self.shared.lines.notify_one();
        }
        Ok(line.len())
    }
}

/// For the tests, which write from threads of their own; the subscriber writes through
/// [`SinkLine`].
#[cfg(test)]
impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.append(line)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where the subscriber writes its lines: through the writer thread, or straight to stderr
/// when no thread could be started. Each line borrows it: no `Arc` count moved and no box
/// made per line, as a boxed writer did (2 % of a request's logging).
pub enum LogSink {
    Batched(LogWriter),
    Stderr,
}

/// One line's writer, from [`LogSink`].
pub enum SinkLine<'a> {
    Batched(&'a LogWriter),
    Stderr(std::io::Stderr),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = SinkLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            LogSink::Batched(writer) => SinkLine::Batched(writer),
            LogSink::Stderr => SinkLine::Stderr(std::io::stderr()),
        }
    }
}

impl Write for SinkLine<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        match self {
            SinkLine::Batched(writer) => writer.append(line),
            SinkLine::Stderr(stderr) => stderr.write(line),
        }
    }

    // A line goes out whole, under stderr's lock (`write_all`'s own loop would take the lock
    // again for what a short write left, and another thread's line could come between).
    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            SinkLine::Batched(writer) => writer.append(line).map(drop),
            SinkLine::Stderr(stderr) => stderr.write_all(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            SinkLine::Batched(_) => Ok(()),
            SinkLine::Stderr(stderr) => stderr.flush(),
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Keeps every write apart; `stuck` holds the writer until it is cleared.
    #[derive(Clone, Default)]
    struct Recorder {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        stuck: Arc<Mutex<()>>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _held = self.stuck.lock().unwrap();
            self.writes.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_in_few_writes() {
        let recorder = Recorder::default();
        let batching = Batching { gather: Duration::from_millis(20), limit: 1 << 20 };
        let (writer, guard) = LogWriter::start(Box::new(recorder.clone()), batching).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        writer.write_all(format!("thread {t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let writes = recorder.writes.lock().unwrap();
        let text = String::from_utf8(writes.concat()).unwrap();
        for t in 0..4 {
            let mine: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("thread {t} "))).collect();
            let want: Vec<String> = (0..500).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(mine, want, "every line of thread {t}, whole and in order");
        }
        assert!(writes.len() < 100, "2,000 lines in {} writes", writes.len());
    }

    #[test]
    fn a_stuck_output_holds_back_the_threads_that_log_not_their_memory() {
        let recorder = Recorder::default();
        let stuck = recorder.stuck.lock().unwrap();
        let batching = Batching { gather: Duration::from_millis(1), limit: 1000 };
        let (writer, guard) = LogWriter::start(Box::new(recorder.clone()), batching).unwrap();
        let logger = {
            let mut writer = writer.clone();
            std::thread::spawn(move || {
                for _ in 0..100 {
                    writer.write_all(&[b'x'; 99]).unwrap();
                    writer.write_all(b"\n").unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!logger.is_finished(), "10 KB cannot wait behind a 1 KB limit");
        assert!(writer.shared.lock().pending.len() <= 1000);
        drop(stuck);
        logger.join().unwrap();
        drop(guard);
        assert_eq!(recorder.writes.lock().unwrap().concat().len(), 10_000, "nothing was dropped");
    }

    #[test]
    fn a_line_after_the_end_still_goes_out() {
        let recorder = Recorder::default();
        let (mut writer, guard) = LogWriter::start(Box::new(recorder.clone()), Batching::default()).unwrap();
        writer.write_all(b"before\n").unwrap();
        drop(guard);
        assert_eq!(recorder.writes.lock().unwrap().concat(), b"before\n", "written at the end, not lost");
        // After the end, straight to stderr rather than into a buffer nobody writes.
        assert_eq!(writer.write(b"after\n").unwrap(), 6);
        assert!(writer.shared.lock().pending.is_empty(), "nothing left waiting for a writer that is gone");
    }
}
