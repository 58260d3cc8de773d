//! Restart delays: exponential, jittered, capped, and reset by a stable run.
//!
//! Pure arithmetic over a [`RestartPolicy`]; the random source is a tiny seeded generator so
//! tests are deterministic and no dependency is needed for jitter quality we don't care about.

use std::time::Duration;

use crate::spec::RestartPolicy;

/// How many restarts without a stable run in between make a crash loop worth reporting.
pub(crate) const CRASH_LOOP_RESTARTS: u32 = 3;

/// Per-instance restart bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// Restarts since the last stable run (0 = next restart is the first).
    consecutive: u32,
    rng: SplitMix,
}

impl Backoff {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            consecutive: 0,
            rng: SplitMix(seed),
        }
    }

    /// Records an exit after `uptime` and returns the restart attempt number (1-based) and the
    /// delay before it.
    pub(crate) fn next(&mut self, policy: &RestartPolicy, uptime: Duration) -> (u32, Duration) {
        if uptime >= policy.reset_after {
            self.consecutive = 0;
        }
        let delay = delay_for(policy, self.consecutive, self.rng.unit());
        self.consecutive = self.consecutive.saturating_add(1);
        (self.consecutive, delay)
    }

    /// Restarts since the last stable run.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive
    }
}

/// The delay before restart number `n` (0-based), with `unit` in `[0, 1)` choosing the jitter.
/// The cap applies after jitter so a crash loop never waits longer than `backoff_max`.
pub(crate) fn delay_for(policy: &RestartPolicy, n: u32, unit: f64) -> Duration {
    let initial = policy.backoff_initial.as_secs_f64();
    let max = policy.backoff_max.as_secs_f64();
    // Clamp the exponent: beyond ~60 doublings everything is at the cap anyway.
    let exponent = i32::try_from(n.min(60)).unwrap_or(60);
    let base = (initial * policy.backoff_multiplier.powi(exponent)).min(max);
    let factor = 1.0 + policy.jitter * (2.0 * unit - 1.0);
    Duration::from_secs_f64((base * factor).clamp(0.0, max))
}

/// SplitMix64: a few lines, good enough for jitter.
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits → [0, 1).
        (z >> 11) as f64 / (1_u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            jitter: 0.0,
            reset_after: Duration::from_secs(10),
            ..RestartPolicy::default()
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let mut backoff = Backoff::new(1);
        let delays: Vec<u128> = (0..7)
            .map(|_| backoff.next(&policy(), Duration::ZERO).1.as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut backoff = Backoff::new(1);
        for _ in 0..4 {
            backoff.next(&policy(), Duration::ZERO);
        }
        let (attempt, delay) = backoff.next(&policy(), Duration::from_secs(11));
        assert_eq!((attempt, delay.as_millis()), (1, 100));
    }

    #[test]
    fn jitter_stays_in_bounds_and_under_the_cap() {
        let mut policy = policy();
        policy.jitter = 0.2;
        let mut backoff = Backoff::new(7);
        for n in 0..50 {
            let (_, delay) = backoff.next(&policy, Duration::ZERO);
            let base = (100.0 * 2f64.powi(n.min(20))).min(2000.0);
            let ms = delay.as_secs_f64() * 1000.0;
            assert!(
                ms >= base * 0.8 - 1e-6 && ms <= (base * 1.2).min(2000.0) + 1e-6,
                "{ms}"
            );
        }
    }
}
