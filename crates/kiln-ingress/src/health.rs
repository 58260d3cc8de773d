//! Per-endpoint runtime state: readiness (set by the control plane's active checks), requests in
//! flight (for least-requests balancing) and passive health (outlier detection).
//!
//! Everything here is atomics read on every request. An endpoint is *available* when it is
//! ready and not ejected. After `consecutive_failures` failures in a row it is ejected for
//! `base_ejection × 2^level` (capped), unless it is the last available endpoint of its set —
//! the panic threshold: a degraded endpoint beats none. An ejection ends by itself when its
//! time runs out; the level decays after as many consecutive successes as the threshold.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::OutlierPolicy;

/// Milliseconds on a monotonic clock private to one ingress; ejection deadlines use it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// Starts at 1 so that 0 can mean "not ejected".
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

/// An endpoint's health as seen by [`crate::IngressHandle::endpoint_health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Receives traffic.
    Available,
    /// Marked not ready by the control plane ([`crate::IngressHandle::set_endpoint_ready`]).
    NotReady,
    /// Ejected by outlier detection; back in rotation after `remaining`.
    Ejected { remaining: Duration },
}

/// One endpoint's health report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub id: String,
    pub state: EndpointState,
    pub in_flight: u64,
    /// How many times this endpoint has been ejected since the ingress started.
    pub ejections: u64,
}

/// The shared, lock-free state of one endpoint id.
#[derive(Debug)]
pub(crate) struct EndpointRuntime {
    ready: AtomicBool,
    in_flight: AtomicU64,
    consecutive_failures: AtomicU32,
    consecutive_successes: AtomicU32,
    ejected_until_ms: AtomicU64,
    level: AtomicU32,
    ejections: AtomicU64,
}

impl EndpointRuntime {
    pub(crate) fn new(ready: bool) -> Self {
        Self {
            ready: AtomicBool::new(ready),
            in_flight: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            level: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn is_available(&self, now_ms: u64) -> bool {
        self.ready.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub(crate) fn start(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn state(&self, now_ms: u64) -> EndpointState {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until > now_ms {
            EndpointState::Ejected {
                remaining: Duration::from_millis(until - now_ms),
            }
        } else if !self.ready.load(Ordering::Relaxed) {
            EndpointState::NotReady
        } else {
            EndpointState::Available
        }
    }

    pub(crate) fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub(crate) fn record_success(&self, policy: &OutlierPolicy) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if self.level.load(Ordering::Relaxed) == 0 {
            return;
        }
        let streak = self.consecutive_successes.fetch_add(1, Ordering::Relaxed) + 1;
        if streak >= policy.consecutive_failures.max(1) {
            self.consecutive_successes.store(0, Ordering::Relaxed);
            // Ignore the result: another success may have decayed it to 0 already.
            let _ = self
                .level
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1));
        }
    }

    /// Records a failure; returns true when this failure ejected the endpoint.
    /// `others_available` says whether the set keeps an available endpoint without this one;
    /// it is asked only when the threshold is crossed, under the set's ejection lock.
    pub(crate) fn record_failure(
        &self,
        policy: &OutlierPolicy,
        now_ms: u64,
        eject_lock: &Mutex<()>,
        others_available: impl FnOnce() -> bool,
    ) -> bool {
        self.consecutive_successes.store(0, Ordering::Relaxed);
        let threshold = policy.consecutive_failures.max(1);
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < threshold || self.ejected_until_ms.load(Ordering::Relaxed) > now_ms {
            return false;
        }
        let Ok(_guard) = eject_lock.lock() else {
            return false;
        };
        if !others_available() {
            return false;
        }
        // Claim the ejection so two failures crossing the threshold together eject once.
        if self
            .consecutive_failures
            .compare_exchange(failures, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let level = self.level.fetch_add(1, Ordering::Relaxed).min(16);
        let length = policy
            .base_ejection
            .saturating_mul(1u32 << level)
            .min(policy.max_ejection.max(policy.base_ejection));
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self.ejected_until_ms
            .store(now_ms.saturating_add(length_ms), Ordering::Relaxed);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub(crate) struct InFlight(std::sync::Arc<EndpointRuntime>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_millis(100),
            max_ejection: Duration::from_millis(250),
        }
    }

    #[test]
    fn ejects_after_threshold_and_grows_then_caps() {
        let ep = EndpointRuntime::new(true);
        let lock = Mutex::new(());
        let mut now = 1;
        for _ in 0..2 {
            assert!(!ep.record_failure(&policy(), now, &lock, || true));
        }
        assert!(ep.record_failure(&policy(), now, &lock, || true));
        assert_eq!(
            ep.state(now),
            EndpointState::Ejected {
                remaining: Duration::from_millis(100)
            }
        );
        assert!(!ep.is_available(now + 99));
        assert!(ep.is_available(now + 100));
        now += 100;
        for _ in 0..3 {
            ep.record_failure(&policy(), now, &lock, || true);
        }
        assert_eq!(
            ep.state(now),
            EndpointState::Ejected {
                remaining: Duration::from_millis(200)
            }
        );
        now += 200;
        for _ in 0..3 {
            ep.record_failure(&policy(), now, &lock, || true);
        }
        assert_eq!(
            ep.state(now),
            EndpointState::Ejected {
                remaining: Duration::from_millis(250)
            }
        );
        assert_eq!(ep.ejections(), 3);
    }

    #[test]
    fn never_ejects_the_last_available_endpoint() {
        let ep = EndpointRuntime::new(true);
        let lock = Mutex::new(());
        for _ in 0..10 {
            assert!(!ep.record_failure(&policy(), 1, &lock, || false));
        }
        assert_eq!(ep.state(1), EndpointState::Available);
    }

    #[test]
    fn success_resets_the_streak_and_decays_the_level() {
        let ep = EndpointRuntime::new(true);
        let lock = Mutex::new(());
        ep.record_failure(&policy(), 1, &lock, || true);
        ep.record_failure(&policy(), 1, &lock, || true);
        ep.record_success(&policy());
        assert!(!ep.record_failure(&policy(), 1, &lock, || true));
        ep.record_failure(&policy(), 1, &lock, || true);
        assert!(ep.record_failure(&policy(), 1, &lock, || true));
        for _ in 0..3 {
            ep.record_success(&policy());
        }
        assert_eq!(ep.level.load(Ordering::Relaxed), 0);
    }
}
