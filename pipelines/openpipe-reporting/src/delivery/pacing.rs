//! How fast the worker may go, so that a recovering OpenPipe is not hit with everything the
//! queue holds, every second, by every replica (docs/reporting.md §13.2):
//! - each entry waits before its next attempt: full jitter on a base that doubles with its
//!   attempts, never less than the `Retry-After` OpenPipe asked for;
//! - after a refusal (429, 5xx, no connection) the whole worker pauses: the pause grows with
//!   consecutive refusals (with jitter, `Retry-After` as its floor), and after it one attempt
//!   at a time goes out until one succeeds;
//! - at most `MAX_ATTEMPTS_PER_SECOND` attempts start per second (a token bucket). With N
//!   replicas the total is at most N times that, and each replica pauses on its own refusals.

use std::time::{Duration, Instant};

use sluice_sdk::backoff::{backoff, random_unit};

use super::Tuning;

/// When one entry may be tried again: full jitter, uniform in `[0, min(cap, base × 2^attempts)]`,
/// and never before what OpenPipe asked for.
pub fn entry_backoff(t: &Tuning, attempts: u32, asked: Option<Duration>) -> Duration {
    backoff(t.backoff_base, t.backoff_cap, attempts, 1.0).max(asked.unwrap_or_default())
}

/// The worker's pace: pauses after refusals, and the attempt-rate cap.
pub struct Pacing {
    /// Refusals since the last success.
    refusals: u32,
    paused_until: Option<Instant>,
    /// Token bucket: tokens now, and when they were counted.
    tokens: f64,
    counted_at: Instant,
}

impl Pacing {
    pub fn new() -> Self {
        Pacing { refusals: 0, paused_until: None, tokens: 1.0, counted_at: Instant::now() }
    }

    /// Attempts that may be in flight at once: all of them, or one while OpenPipe refuses.
    pub fn concurrency(&self, max: usize) -> usize {
        if self.refusals > 0 {
            1
        } else {
            max
        }
    }

    /// Until when no attempt may start, if the worker is pausing.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|t| *t > now)
    }

    /// An attempt got through; whether the worker had been refused before it.
    pub fn succeeded(&mut self) -> bool {
        let was = self.refusals > 0;
        self.refusals = 0;
        self.paused_until = None;
        was
    }

    /// An attempt was refused (or could not connect): pause, and say for how long.
    pub fn refused(&mut self, t: &Tuning, asked: Option<Duration>, now: Instant) -> Duration {
        self.refusals = self.refusals.saturating_add(1);
        let grown = t.backoff_base.saturating_mul(1u32 << (self.refusals - 1).min(20)).min(t.pause_cap);
        let floor = grown.max(asked.unwrap_or_default()).min(t.retry_after_cap);
        let pause = floor.mul_f64(1.0 + 0.5 * random_unit());
        self.paused_until = Some(now + pause);
        pause
    }

    /// Takes up to `wanted` attempt tokens at `rate` per second (bursts of one second's worth);
    /// how many it got, and when to ask again if it got none.
    pub fn take(&mut self, wanted: usize, rate: u32, now: Instant) -> (usize, Option<Instant>) {
        let rate = f64::from(rate.max(1));
        let elapsed = now.saturating_duration_since(self.counted_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.counted_at = now;
        let got = (self.tokens.floor() as usize).min(wanted);
        self.tokens -= got as f64;
        if got == 0 && wanted > 0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
            return (0, Some(now + wait));
        }
        (got, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_backoff_is_jittered_capped_and_never_shorter_than_asked() {
        let t = Tuning::default();
        for attempts in 0..30 {
            let d = entry_backoff(&t, attempts, None);
            assert!(d <= t.backoff_cap);
            assert!(d <= Duration::from_secs(1 << attempts.min(20)));
            assert!(entry_backoff(&t, attempts, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
    }

    #[test]
    fn pauses_grow_with_refusals_from_the_asked_floor_and_end_with_a_success() {
        let t = Tuning::default();
        let mut p = Pacing::new();
        let now = Instant::now();
        assert_eq!(p.concurrency(4), 4);
        // Retry-After: 1 is a floor, not the pace: consecutive refusals wait longer and longer.
        let waits: Vec<Duration> = (0..8).map(|_| p.refused(&t, Some(Duration::from_secs(1)), now)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(1)));
        assert!(waits[7] >= Duration::from_secs(30), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= t.pause_cap.mul_f64(1.5)), "{waits:?}");
        assert_eq!(p.concurrency(4), 1, "one attempt at a time while refused");
        assert!(p.paused_until(now).is_some());
        assert!(p.succeeded());
        assert_eq!((p.concurrency(4), p.paused_until(now)), (4, None));
        // A longer Retry-After is honoured as asked.
        assert!(p.refused(&t, Some(Duration::from_secs(600)), now) >= Duration::from_secs(600));
    }

    #[test]
    fn the_attempt_rate_is_capped() {
        let mut p = Pacing::new();
        let start = Instant::now();
        let mut started = 0;
        let mut now = start;
        // Ten simulated seconds in 10 ms steps, always wanting four more.
        while now < start + Duration::from_secs(10) {
            started += p.take(4, 20, now).0;
            now += Duration::from_millis(10);
        }
        assert!((195..=205).contains(&started), "{started} attempts in 10 s at 20/s");
        let (got, again) = p.take(4, 20, now);
        assert!(got <= 1 && (got == 1 || again.is_some()));
    }
}
