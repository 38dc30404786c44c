//! The clock that stops runaway guest code: wasmtime interrupts a guest once the engine's epoch
//! passes its store's deadline, and this thread moves the epoch one step per [`TICK`]. It runs
//! only while some call holds a store ([`EpochClock::running`]); a server with no guest at work
//! is not woken a hundred times a second for nothing.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch moves; a deadline is a number of these.
pub(crate) const TICK: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    /// Calls holding a store.
    busy: usize,
    /// The runtime is gone: the thread ends once no call holds a store.
    stopped: bool,
    /// Steps taken since the start (read by the tests).
    ticks: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The counters stay meaningful whatever panicked while holding them.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The epoch's thread, stopped when this is dropped.
pub(crate) struct EpochClock(Arc<Shared>);

/// Keeps the clock moving for as long as it lives (one per call's store).
pub(crate) struct Running(Arc<Shared>);

impl EpochClock {
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let weak = engine.weak();
        let thread = Arc::clone(&shared);
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || loop {
            {
                let mut state = thread.lock();
                while state.busy == 0 && !state.stopped {
                    state = thread.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                // A call still running when the runtime goes keeps its deadline.
                if state.stopped && state.busy == 0 {
                    return;
                }
            }
            // A whole tick first: a deadline of n ticks set just now is not cut short by one.
            std::thread::sleep(TICK);
            let Some(engine) = weak.upgrade() else { return };
            engine.increment_epoch();
            thread.lock().ticks += 1;
        })?;
        Ok(EpochClock(shared))
    }

    pub fn running(&self) -> Running {
        let mut state = self.0.lock();
        state.busy += 1;
        if state.busy == 1 {
            self.0.wake.notify_one();
        }
        Running(Arc::clone(&self.0))
    }

    #[cfg(test)]
    fn ticks(&self) -> u64 {
        self.0.lock().ticks
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().busy -= 1;
    }
}

impl Drop for EpochClock {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.wake.notify_one();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wait() {
        std::thread::sleep(TICK * 15);
    }

    /// Whether the thread lets go of its state within a second.
    fn thread_ends(shared: &Arc<Shared>) -> bool {
        (0..100).any(|_| {
            std::thread::sleep(TICK);
            Arc::strong_count(shared) == 1
        })
    }

    #[test]
    fn the_clock_moves_only_while_a_call_runs() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        wait();
        assert_eq!(clock.ticks(), 0, "no call: no tick");

        let first = clock.running();
        let second = clock.running();
        wait();
        drop(first);
        wait();
        assert!(clock.ticks() >= 2, "a call still runs: ticks {}", clock.ticks());

        drop(second);
        // The step under way when the last call ended may still be taken.
        std::thread::sleep(TICK * 10);
        let after = clock.ticks();
        wait();
        assert_eq!(clock.ticks(), after, "no call left: the clock stopped");

        let again = clock.running();
        wait();
        assert!(clock.ticks() > after, "a new call starts it again");
        drop(again);
    }

    #[test]
    fn a_call_that_outlives_the_clock_keeps_its_deadline() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        let shared = Arc::clone(&clock.0);
        let call = clock.running();
        drop(clock);
        wait();
        let ticks = shared.lock().ticks;
        assert!(ticks >= 2, "the runtime is gone but a call runs: ticks {ticks}");
        drop(call);
        assert!(thread_ends(&shared), "the epoch thread still runs a second after the last call ended");
    }

    #[test]
    fn the_thread_ends_with_the_clock() {
        let engine = Engine::new(wasmtime::Config::new().epoch_interruption(true)).unwrap();
        let clock = EpochClock::start(&engine).unwrap();
        let shared = Arc::clone(&clock.0);
        drop(clock);
        assert!(thread_ends(&shared), "the epoch thread still holds its state a second after its clock was dropped");
    }
}
