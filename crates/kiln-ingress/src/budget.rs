//! The retry budget: a token bucket per route that successes fill (by `budget_ratio` of a
//! token each) and retries drain (one token each), capped at `budget_reserve` tokens and
//! starting full. When upstreams fail wholesale nothing refills it, so after the reserve is
//! spent every request is tried once: retries cannot multiply the load on a struggling service.

use std::sync::atomic::{AtomicI64, Ordering};

/// Tokens are counted in thousandths so fractional deposits stay integers.
const MILLI: i64 = 1000;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    milli_tokens: AtomicI64,
    deposit: i64,
    cap: i64,
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, reserve: u32) -> Self {
        let cap = i64::from(reserve) * MILLI;
        Self {
            milli_tokens: AtomicI64::new(cap),
            // Validated to 0..=1 by the table, so the cast cannot overflow.
            deposit: (ratio.clamp(0.0, 1.0) * MILLI as f64).round() as i64,
            cap,
        }
    }

    pub(crate) fn deposit(&self) {
        let (deposit, cap) = (self.deposit, self.cap);
        // Ignore the result: when already full there is nothing to add.
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t < cap).then(|| (t + deposit).min(cap))
            });
    }

    /// Takes one retry's worth of tokens, or returns false when the budget is spent.
    pub(crate) fn try_withdraw(&self) -> bool {
        self.milli_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= MILLI).then_some(t - MILLI)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::RetryBudget;

    #[test]
    fn reserve_then_one_retry_per_five_successes() {
        let budget = RetryBudget::new(0.2, 2);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        for _ in 0..4 {
            budget.deposit();
        }
        assert!(!budget.try_withdraw());
        budget.deposit();
        assert!(budget.try_withdraw());
        for _ in 0..100 {
            budget.deposit();
        }
        assert!(budget.try_withdraw() && budget.try_withdraw() && !budget.try_withdraw());
    }
}
