//! A fast hasher for the evaluator's maps keyed by label-set identities (addresses) and AST
//! nodes: these maps are looked up for every series at every step, their keys are a few
//! machine words chosen by the process, not by a user, so SipHash's protection against
//! chosen keys buys nothing there and costs most of each lookup.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of whole words (the scheme of rustc's FxHasher).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdentityHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdentityHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdentityHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map keyed by identities.
pub type IdentityMap<K, V> = HashMap<K, V, BuildHasherDefault<IdentityHasher>>;

/// A set of identities.
pub type IdentitySet<K> = HashSet<K, BuildHasherDefault<IdentityHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_words_and_orders_hash_apart() {
        let hash = |words: &[usize]| {
            let mut h = IdentityHasher::default();
            for w in words {
                h.write_usize(*w);
            }
            h.finish()
        };
        assert_ne!(hash(&[1, 2]), hash(&[2, 1]));
        assert_ne!(hash(&[0x1000]), hash(&[0x1010]));
        let mut set: IdentitySet<usize> = IdentitySet::default();
        set.extend((0..1000).map(|i| i * 16));
        assert_eq!(set.len(), 1000);
        assert!(set.contains(&(999 * 16)));
    }
}
