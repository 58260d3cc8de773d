//! A per-thread xorshift generator for load-balancing choices and request ids: fast, lock-free
//! and good enough for spreading traffic and unique ids; never used for anything secret. Seeded
//! from std's random hasher keys.

use std::cell::Cell;
use std::hash::BuildHasher;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // `| 1` because xorshift's state must never be zero.
    std::collections::hash_map::RandomState::new().hash_one(0x6b69_6c6eu64) | 1
}

pub(crate) fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A number in `0..n` (0 when `n` is 0), by multiply-shift rather than modulo to avoid bias.
pub(crate) fn below(n: u64) -> u64 {
    ((u128::from(next_u64()) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::below;

    #[test]
    fn below_stays_in_range_and_spreads() {
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            let n = below(4) as usize;
            seen[n] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_eq!(below(0), 0);
    }
}
