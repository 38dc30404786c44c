//! Waits before a retry: exponential in the attempt, capped, with random jitter so that many
//! callers failing together do not retry together. One formula for every retry in sluice.

use std::time::Duration;

/// A uniform random number in `[0, 1)` from the OS (0.5 if it has none to give).
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `min(cap, base × 2^attempt)`, less a random share of up to `spread` of it: `spread = 1.0`
/// is "full jitter" (anywhere from zero to the bound), `0.25` keeps at least three quarters.
pub fn backoff(base: Duration, cap: Duration, attempt: u32, spread: f64) -> Duration {
    let bound = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
    bound.mul_f64(1.0 - spread.clamp(0.0, 1.0) * random_unit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_are_capped_and_jittered_within_the_spread() {
        let (base, cap) = (Duration::from_millis(500), Duration::from_secs(8));
        for attempt in 0..30 {
            let bound = base.saturating_mul(1u32 << attempt.min(20)).min(cap);
            let full = backoff(base, cap, attempt, 1.0);
            let light = backoff(base, cap, attempt, 0.25);
            assert!(full <= bound && light <= bound);
            assert!(light >= bound.mul_f64(0.75));
        }
    }
}
