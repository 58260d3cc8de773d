//! Fuzzes the chunk decoders of every encoding: they must return, never panic, and whatever
//! decodes must survive a re-encoding (the smallest one) bit for bit.
#![no_main]

use kiln_metrics::chunk::{Chunk, Encoding};
use libfuzzer_sys::fuzz_target;

fn bits(c: &Chunk) -> Vec<(i64, u64)> {
    c.iter().map(|s| (s.t, s.v.to_bits())).collect()
}

fuzz_target!(|data: &[u8]| {
    let [tag, lo, hi, bytes @ ..] = data else {
        return;
    };
    let Some(encoding) = Encoding::from_tag(*tag) else {
        return;
    };
    // Counts past a chunk's 120 samples only make the fuzzer slower.
    let count = u16::from_le_bytes([*lo, *hi]) % 256;
    let Ok(chunk) = Chunk::from_encoded(encoding, bytes, count) else {
        return;
    };
    let (encoding, bytes) = chunk.compact();
    let again = Chunk::from_encoded(encoding, &bytes, count).expect("a compacted chunk decodes");
    assert_eq!(bits(&again), bits(&chunk));
});
